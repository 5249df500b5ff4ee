import hashlib

import pytest
from conftest import SMOKE

from llm4academic.config import KitError, load_params
from llm4academic.data import formats
from llm4academic.data.clean import column
from llm4academic.data.mix import mix, plan, save_mix, unique_ids
from llm4academic.rundir import RunDir


@pytest.fixture(scope="module")
def pool():
    params = load_params(
        SMOKE, ["data.sources[0].max_records=120", "data.sources[1].max_records=80", "data.sources[2].max_records=40"]
    )
    return formats.load_sources(params)[0]


def ids(ds):
    return column(ds, "id")


NO_WEIGHTS = [f"data.sources[{i}].weight=null" for i in range(3)]


def sources(*overrides):
    """The smoke study's sources without its weights, plus ``overrides``."""
    return load_params(SMOKE, [*NO_WEIGHTS, *overrides]).data.sources


def test_plan_weights_counts_and_all():
    avail = {"alpaca": 120, "chinese_alpaca": 80, "belle": 40}
    assert plan(avail, sources(), None) == avail  # neither weight nor count: everything
    got = plan(avail, sources("data.sources[0].weight=3", "data.sources[1].weight=1", "data.sources[2].count=10"), None)
    assert got == {"alpaca": 120, "chinese_alpaca": 40, "belle": 10}  # alpaca limits: 120 / 0.75 = 160 < 80 / 0.25
    got = plan(avail, sources("data.sources[0].weight=1", "data.sources[1].weight=1", "data.sources[2].weight=1"), 100)
    assert got == {"alpaca": 34, "chinese_alpaca": 33, "belle": 33} and sum(got.values()) == 100


def test_plan_errors_name_the_key():
    avail = {"alpaca": 120, "chinese_alpaca": 80, "belle": 40}
    with pytest.raises(KitError, match=r"data.sources\[2\].count: source 'belle' holds 40 records .* 50 are asked"):
        plan(avail, sources("data.sources[2].count=50"), None)
    with pytest.raises(KitError, match="data.mix.total: source 'belle' holds 40"):
        plan(avail, sources("data.sources[2].weight=1"), 41)
    assert plan(avail, sources("data.sources[2].count=50", "data.sources[2].replace=true"), None)["belle"] == 50


def test_same_params_and_seed_same_mix_byte_for_byte(pool, tmp_path):
    srcs = sources(
        "data.sources[0].weight=2",
        "data.sources[1].weight=1",
        "data.sources[2].count=30",
        "data.sources[2].replace=true",
    )
    a, draws = mix(pool, srcs, None, seed=7)
    b, _ = mix(pool, srcs, None, seed=7)
    sa, sb = save_mix(a, tmp_path / "a", draws, 7), save_mix(b, tmp_path / "b", draws, 7)
    assert RunDir(tmp_path / "a").mix.read_bytes() == RunDir(tmp_path / "b").mix.read_bytes()
    assert sa["sha256"] == sb["sha256"] == hashlib.sha256(RunDir(tmp_path / "a").mix.read_bytes()).hexdigest()
    c, _ = mix(pool, srcs, None, seed=8)
    assert ids(c) != ids(a)
    counts = {d.source: d.taken for d in draws}
    assert counts == {"alpaca": 120, "chinese_alpaca": 60, "belle": 30}
    assert len(a) == 210 and len(set(ids(a))) == 210  # unique ids even with replacement


def test_without_replacement_no_repeats_and_sources_are_independent(pool):
    a, draws = mix(pool, sources("data.sources[1].count=20"), None, seed=1, shuffle=False)
    assert all(d.repeated_draws == 0 for d in draws) and len(set(ids(a))) == len(a)
    zh_a = [i for i in ids(a) if i.startswith("chinese_alpaca")]
    b, _ = mix(pool, sources("data.sources[1].count=20", "data.sources[0].count=5"), None, seed=1, shuffle=False)
    assert [i for i in ids(b) if i.startswith("chinese_alpaca")] == zh_a  # other sources' draws don't move it


def test_unique_ids():
    assert unique_ids(["a", "b", "a", "a"]) == ["a", "b", "a~2", "a~3"]
