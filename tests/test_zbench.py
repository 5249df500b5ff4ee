import csv
import shutil

import pytest

from llm4academic import zbench
from llm4academic.config import KitError


@pytest.fixture(scope="module")
def df():
    return zbench.load_zbench()


def test_counts_ids_and_columns(df):
    assert len(df) == 311
    assert df.groupby("split", sort=False).size().to_dict() == {"basic": 63, "advanced": 209, "domain": 39}
    assert list(df.columns) == list(zbench.COLUMNS)
    assert df["item_id"].is_unique and df["item_id"].iloc[0] == "basic-000"
    assert df.query("split == 'domain'")["item_id"].iloc[-1] == "domain-038"
    assert df.attrs["zbench"]["rows"] == {"basic": 63, "advanced": 209, "domain": 39}
    assert df.attrs["zbench"]["license"] == "CC BY 4.0"
    assert (df["reference"] == "").sum() == 69  # SOURCE.md: empty on 69 rows, as "" not NaN
    assert len(zbench.load_zbench("domain")) == 39
    assert zbench.load_zbench(["domain", "basic"])["split"].unique().tolist() == ["domain", "basic"]


def test_tags_on_real_rows(df):
    by_id = df.set_index("item_id")["tags"]
    assert by_id["basic-000"] == ["事实问答"]
    assert all(isinstance(t, list) and t and all(isinstance(x, str) and x.strip() == x for x in t) for t in by_id)
    pairs = df[df["tags"].map(lambda t: t == ["逻辑推理", "数学"])]
    assert len(pairs) == 22 and set(pairs["split"]) == {"advanced"}
    assert any("API 调用" in t for t in by_id)  # a label with a space inside stays whole
    assert zbench.parse_tags("`逻辑推理` `数学`") == ["逻辑推理", "数学"]
    assert zbench.parse_tags("分类") == ["分类"] and zbench.parse_tags(" ") == []


def test_model_names_normalised_across_files(df):
    assert len(zbench.REFERENCE_MODELS) == 14
    header = (zbench.ZBENCH_DIR / "specialized.samples.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "sensechat" in header.split(",") and "SenseChat" not in header
    domain = df[df["split"] == "domain"]
    assert (domain["SenseChat"] != "").all() and (domain["SenseChat"] != domain["商量"]).any()
    assert zbench.model_name("sensechat") == "SenseChat" and zbench.model_name("gpt4") == "GPT4"
    assert zbench.model_name("商量") == "商量"
    # specialized.samples.csv orders the columns differently: each answer must land under its own model
    with open(zbench.ZBENCH_DIR / "specialized.samples.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert domain["SenseChat"].tolist() == [r["sensechat"] for r in rows]
    assert domain["minimax"].tolist() == [r["minimax"] for r in rows]


def test_reference_and_selection(df):
    first = df[df["split"] == "domain"].iloc[0]
    assert first["reference"] == "d" and first["prompt"].startswith("以下有关镧系元素的哪个陈述是不正确的？\n(A)")
    two = zbench.load_zbench("basic", models=["GPT4", "sensechat"])
    assert list(two.columns) == ["item_id", "split", "prompt", "tags", "reference", "GPT4", "SenseChat"]


def test_answers_long(df):
    long = zbench.answers_long(df)
    assert list(long.columns) == ["item_id", "split", "model", "answer"]
    assert len(long) == 311 * 14
    assert long["model"].iloc[:14].tolist() == list(zbench.REFERENCE_MODELS)
    assert long["item_id"].iloc[14] == "basic-001"
    row = long[(long.item_id == "domain-000") & (long.model == "SenseChat")]["answer"].item()
    assert row == df.set_index("item_id").loc["domain-000", "SenseChat"]
    assert len(zbench.answers_long(df, ["Gpt3.5"])) == 311


def test_unknown_split_and_model(df):
    with pytest.raises(zbench.ZBenchError, match=r"'hard'.*basic \(common.samples.csv\)") as e:
        zbench.load_zbench("hard")
    assert isinstance(e.value, KitError)
    with pytest.raises(zbench.ZBenchError, match=r"'GPT5'.*GPT3.5, GPT4, SenseChat"):
        zbench.load_zbench(models=["GPT5"])
    with pytest.raises(zbench.ZBenchError, match=r"'claude'.*面壁"):
        zbench.answers_long(df, ["claude"])
    with pytest.raises(zbench.ZBenchError, match="moss not in this table; it holds: GPT4"):
        zbench.answers_long(df[["item_id", "split", "GPT4"]], ["moss"])


def test_cells_kept_verbatim(df):
    """Every cell equals what the stdlib csv reader sees: newlines, HTML and <script> text untouched."""
    for split, name in zbench.SPLITS.items():
        with open(zbench.ZBENCH_DIR / name, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        part = df[df["split"] == split]
        assert part["prompt"].tolist() == [r[0] for r in rows]
        assert part["reference"].tolist() == [r[2] for r in rows]
    assert df["prompt"].str.contains("\n").sum() == 48
    script = df["GPT3.5"][df["GPT3.5"].str.contains("<script", regex=False)]
    assert len(script) == 1 and "\n" in script.item()
    assert "    print(i)\\n" in df.set_index("item_id").loc["advanced-039", "prompt"]


def test_shipped_files_and_validation(tmp_path):
    for name in ("LICENSE", "SOURCE.md", *zbench.SPLITS.values()):
        assert (zbench.ZBENCH_DIR / name).is_file()
    assert "Attribution 4.0 International" in (zbench.ZBENCH_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "ZhenFund" in (zbench.ZBENCH_DIR / "SOURCE.md").read_text(encoding="utf-8")
    for name in zbench.SPLITS.values():
        shutil.copy(zbench.ZBENCH_DIR / name, tmp_path / name)
    assert len(zbench.load_zbench(directory=tmp_path)) == 311
    bad = tmp_path / "common.samples.csv"
    text = bad.read_bytes().decode("utf-8")  # rows end in CRLF; cells hold bare LF
    bad.write_bytes(text.replace(",GPT4,", ",GPT-4,", 1).encode())
    with pytest.raises(
        zbench.ZBenchError,
        match=r"common.samples.csv: not a Z-Bench file \(missing: GPT4; "
        r"unexpected: GPT-4\)",
    ):
        zbench.load_zbench("basic", directory=tmp_path)
    bad.write_bytes(text.replace(",moss,", ",MOSS,", 1).replace(",GPT4,", ",moss,", 1).encode())
    with pytest.raises(zbench.ZBenchError, match=r"missing: GPT4; repeated: moss"):
        zbench.load_zbench("basic", directory=tmp_path)
    bad.write_bytes((text.rsplit("\r\n", 2)[0] + "\r\n").encode())  # drop the last row
    with pytest.raises(zbench.ZBenchError, match=r"common.samples.csv: 62 rows, but .* basic split has 63"):
        zbench.load_zbench("basic", directory=tmp_path)
    bad.unlink()
    with pytest.raises(zbench.ZBenchError, match="common.samples.csv: Z-Bench file not found"):
        zbench.load_zbench(directory=tmp_path)
