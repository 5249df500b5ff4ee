"""The data step at scale (#15): rensa near dedup against the datasketch reference on planted near duplicates, exact
dedup against the string-keyed original, the Arrow cache of loaded sources and step results, forked workers."""

import json
import random

import datasets
import numpy as np
import pytest
from conftest import SAMPLES, SHIPPED, SMOKE

from benchmarks.p7_scale import reference_near_dedup
from llm4academic import data
from llm4academic.config import load_params
from llm4academic.data import clean, contamination, formats, minhash, parallel
from llm4academic.data.cache import DataCache
from llm4academic.data.clean import column, exact_dedup, near_dedup, normalise, record_texts
from llm4academic.rundir import RunDir
from llm4academic.zbench import load_zbench


@pytest.fixture(scope="module")
def shipped():
    parts = [formats.load_file(SAMPLES / p, source=n, on_invalid="skip")[0] for n, p in SHIPPED.items()]
    ds, _ = exact_dedup(datasets.concatenate_datasets(parts))
    return ds


def shingles(text, k=5):
    norm = normalise(text)
    return {norm} if len(norm) <= k else {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a, b):
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def planted_corpus(shipped, n_near=400, seed=3):
    """The shipped records, then edited copies of some of them (one to three output characters replaced):
    ``(records, {copy row: (original row, true Jaccard)})``."""
    rng = random.Random(seed)
    rows = shipped.to_list()
    long = [i for i, r in enumerate(rows) if len(normalise(r["output"])) >= 120]
    planted = {}
    for n, i in enumerate(rng.sample(long, n_near)):
        rec = dict(rows[i])
        out = list(rec["output"])
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(out))
            out[j] = "斑" if out[j] != "斑" else "马"
        rec["output"], rec["id"] = "".join(out), f"copy-{n}"
        planted[len(rows)] = (i, jaccard(record_texts_one(rows[i]), record_texts_one(rec)))
        rows.append(rec)
    return datasets.Dataset.from_list(rows, features=formats.RECORD_FEATURES), planted


def record_texts_one(rec):
    return "\n".join([rec["instruction"], rec["input"], rec["output"], *(t["content"] for t in rec["conversation"])])


def test_rensa_near_dedup_has_the_recall_of_the_datasketch_reference(shipped):
    ds, planted = planted_corpus(shipped)
    above = {r for r, (_, j) in planted.items() if j >= 0.85}
    kept, rep = near_dedup(ds, threshold=0.85, seed=42)
    kit_removed = {len(shipped) + int(e.split("-")[1]) for e in set(column(ds, "id")) - set(column(kept, "id"))}
    assert kit_removed <= set(planted), "only planted copies are removed (the shipped records are distinct)"
    ref = reference_near_dedup(record_texts(ds), threshold=0.85, seed=42)
    ref_removed = set(ref)
    assert ref_removed <= set(planted)
    recall_kit = len(kit_removed & above) / len(above)
    recall_ref = len(ref_removed & above) / len(above)
    # the same estimator (MinHash, 128 permutations) with other permutations: equal within its error
    assert abs(recall_kit - recall_ref) <= 2 * np.sqrt(2 * recall_ref * (1 - recall_ref) / len(above)) + 1e-9
    assert recall_kit >= 0.85 and len(above) >= 100
    sure = {r for r, (_, j) in planted.items() if j >= 0.95}
    assert sure <= kit_removed and sure <= ref_removed  # far above the threshold: both always find them
    low = {r for r, (_, j) in planted.items() if j < 0.75}
    assert not (low & kit_removed) and not (low & ref_removed)
    for e in rep.examples:  # the earliest kept record is the one named
        assert e["similar_to"] == shipped[planted[len(shipped) + int(e["removed"].split("-")[1])][0]]["id"]


def test_lsh_bands_are_datasketch_s():
    from datasketch.lsh import _optimal_param

    for t, n in ((0.7, 128), (0.1, 64), (0.5, 256), (0.85, 128)):
        assert minhash.optimal_bands(t, n) == _optimal_param(t, n, 0.5, 0.5)


def test_normalised_codes_equal_normalise():
    texts = [
        "Ｈｅｌｌｏ，  World!",
        "你好，世界！",
        "snake_case__x",
        "",
        "a",
        "ﬁ ligature Ⅻ",
        "e\u0301 café 😀 ٣٤",
        "\n\t",
    ]
    codes, lens = minhash.normalised_codes(texts)
    assert lens.tolist() == [len(normalise(t)) for t in texts]
    assert codes.tobytes() == "".join(map(normalise, texts)).encode("utf-32-le")


def test_short_texts_are_one_shingle_and_differ_from_windows():
    codes, lens = minhash.normalised_codes(["abc", "abcde", "abcdef", "", "abc"])
    h, off = minhash.shingle_hashes(codes, lens, 5)
    rows = [h[off[i] : off[i + 1]].tolist() for i in range(5)]
    assert [len(r) for r in rows] == [1, 1, 2, 1, 1] and rows[0] == rows[4] and rows[0] != rows[1]
    assert rows[1][0] == rows[2][0] and rows[3] != rows[0]


def test_exact_dedup_is_the_string_keyed_original(shipped):
    rows = shipped.select(range(600)).to_list()
    rng = random.Random(1)
    for n in range(150):  # copies with case, width, spacing and punctuation changed
        rec = dict(rng.choice(rows[:600]))
        rec["instruction"], rec["output"] = " " + rec["instruction"].upper(), rec["output"] + "！!"
        rec["id"] = f"dup-{n}"
        rows.append(rec)
    ds = datasets.Dataset.from_list(rows, features=formats.RECORD_FEATURES)
    first, expected = {}, []
    for i, key in enumerate(map(normalise, record_texts(ds))):
        if first.setdefault(key, i) != i:
            expected.append(i)
    kept, rep = exact_dedup(ds)
    assert rep.removed == len(expected) >= 150
    assert column(kept, "id") == [r["id"] for i, r in enumerate(rows) if i not in set(expected)]


def test_fingerprints_and_contamination_in_two_processes_equal_one(shipped, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 10)
    near = {"shingle": 5, "num_perm": 64, "seed": 7}
    one = clean.fingerprints(shipped, True, near, num_proc=1)
    two = clean.fingerprints(shipped, True, near, num_proc=2)
    monkeypatch.setattr(parallel, "SHARD", 700)
    three = clean.fingerprints(shipped, True, near, num_proc=2)
    for a, b in ((one, two), (one, three)):
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    zb = load_zbench()
    rows = shipped.select(range(300)).to_list()
    rows[7]["input"] = zb["prompt"].iloc[100]
    ds = datasets.Dataset.from_list(rows, features=formats.RECORD_FEATURES)
    by_df = contamination.find_contamination(ds.to_pandas(), zb, progress=False)
    by_ds = contamination.find_contamination(ds, zb, num_proc=2)
    for r in (by_df, by_ds):
        r.seconds = 0
    assert by_ds.to_dict() == by_df.to_dict() and rows[7]["id"] in by_ds.contaminated_ids()


SMALL = ["data.sources[0].max_records=300", "data.sources[1].max_records=300", "data.sources[2].max_records=200"]


def test_second_run_reads_the_cache_and_gives_the_same_artifacts(tmp_path, monkeypatch):
    params = load_params(SMOKE, [*SMALL, "data.clean.max_total_tokens=null"])
    zb = load_zbench()
    first = data.prepare(params, zbench=zb, cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*.arrow")) and list((tmp_path / "cache").rglob("*.step.json"))

    def no_parsing(*a, **k):
        raise AssertionError("a cached source was parsed again")

    monkeypatch.setattr(formats, "load_file", no_parsing)
    monkeypatch.setattr(clean, "fingerprints", no_parsing)
    monkeypatch.setattr(contamination, "_scan_shard", no_parsing)
    second = data.prepare(params, zbench=zb, cache_root=tmp_path / "cache")
    a, b = data.save(first, tmp_path / "a", params.seed), data.save(second, tmp_path / "b", params.seed)
    assert a == b
    for name in ("mix", "load_report", "clean_report", "data_summary"):
        assert getattr(RunDir(tmp_path / "a"), name).read_bytes() == getattr(RunDir(tmp_path / "b"), name).read_bytes()
    ca, cb = (json.loads(RunDir(tmp_path / x).contamination.read_text()) for x in "ab")
    ca.pop("seconds"), cb.pop("seconds")
    assert ca == cb
    assert first.load_reports[0].skipped == second.load_reports[0].skipped  # skipped records stay counted


def test_cache_key_follows_file_and_params(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"instruction": "a b c", "output": "d e f"}) + "\n", encoding="utf-8")
    params = load_params(SMOKE, ["data.sources[0].path=" + str(f)])
    src, store = params.data.sources[0], DataCache(tmp_path / "c")
    k1 = formats.source_key(src, "skip", store)
    assert k1 == formats.source_key(src, "skip", DataCache(tmp_path / "other"))
    assert k1 != formats.source_key(src, "error", store)
    assert k1 != formats.source_key(src.model_copy(update={"max_records": 5}), "skip", store)
    ds, _ = formats.load_source(src, "skip", store)
    f.write_text(json.dumps({"instruction": "x y z", "output": "d e f"}) + "\n", encoding="utf-8")
    k2 = formats.source_key(src, "skip", DataCache(tmp_path / "c"))
    assert k2 != k1 and formats.load_source(src, "skip", DataCache(tmp_path / "c"))[0]["instruction"] == ["x y z"]
    assert ds["instruction"] == ["a b c"]
    off = DataCache(tmp_path / "off", enabled=False)
    formats.load_source(src, "skip", off)
    assert not (tmp_path / "off").exists()
