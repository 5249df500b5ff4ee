import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SMOKE, write

from llm4academic.config import ConfigError, StudyParams, apply_override, format_key_path, load_params, parse_key_path

ALPACA = "pkg:instruct/alpaca/alpaca_data.first1825.json"


def study_yaml(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "study.yaml", body)


BASE = f"""\
name: t
seed: 3
data:
  sources:
    - name: a
      path: {ALPACA}
    - name: b
      path: {ALPACA}
      max_records: 10
models:
  - name: m
    path: tiny:llama
"""


def test_smoke_params_load_and_resolve():
    p = load_params(SMOKE)
    assert isinstance(p, StudyParams)
    assert p.name == "smoke" and p.steps == ["explore", "train", "align", "evaluate", "compare"]
    assert p.trained_models[0].name == "tiny-llama" and p.evaluate.judge.model == "tiny-llama"
    assert [s.name for s in p.data.sources] == ["alpaca", "chinese_alpaca", "belle"]
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in p.data.sources)
    assert all(not m.trust_remote_code for m in p.models)


STUDY_PARAMS = sorted(p for p in (ROOT / "params").glob("**/*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", STUDY_PARAMS, ids=lambda p: p.name)
def test_every_params_file_validates(path):
    load_params(path)


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_describe_fsdp_hardware(path):
    """params/accelerate/ holds `accelerate launch` configs (the hardware axis), not study params."""
    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2
    assert cfg["num_processes"] % cfg["num_machines"] == 0 and cfg["mixed_precision"] == "bf16"


def test_unknown_key_names_file_line_and_key_path(tmp_path):
    f = study_yaml(tmp_path, BASE.replace("      max_records: 10", "      max_records: 10\n      wieght: 2"))
    with pytest.raises(ConfigError) as e:
        load_params(f)
    msg = str(e.value)
    assert f"{f}:10: data.sources[1].wieght: unknown key" in msg
    assert "allowed here: count, format, language, max_records, name, path, replace, weight" in msg


def test_misspelt_top_level_key(tmp_path):
    f = study_yaml(tmp_path, BASE + "sed: 4\n")
    with pytest.raises(ConfigError, match=r"study.yaml:13: sed: unknown key"):
        load_params(f)


def test_wrong_type_names_key_and_line(tmp_path):
    f = study_yaml(tmp_path, BASE.replace("max_records: 10", "max_records: many"))
    with pytest.raises(ConfigError) as e:
        load_params(f)
    assert f"{f}:9: data.sources[1].max_records: Input should be a valid integer" in str(e.value)


def test_missing_data_file_names_key(tmp_path):
    f = study_yaml(tmp_path, BASE.replace(ALPACA, "data/nope.json", 1))
    with pytest.raises(ConfigError) as e:
        load_params(f)
    assert "data.sources[0].path: data file not found" in str(e.value)
    assert str(tmp_path / "data" / "nope.json") in str(e.value)


def test_relative_data_path_resolves_against_params_file(tmp_path):
    data = write(tmp_path / "d" / "x.jsonl", '{"instruction": "i", "input": "", "output": "o"}\n')
    f = study_yaml(tmp_path, BASE.replace(ALPACA, "d/x.jsonl", 1))
    assert load_params(f).data.sources[0].path == str(data)


def test_missing_section_and_bad_yaml(tmp_path):
    f = study_yaml(tmp_path, "name: t\nmodels: []\n")
    msg = str(pytest.raises(ConfigError, load_params, f).value)
    assert "data: Field required" in msg and "models: List should have at least 1 item" in msg
    g = write(tmp_path / "bad.yaml", "name: t\ndata: [unclosed\n")
    assert f"{g}:3: not valid YAML" in str(pytest.raises(ConfigError, load_params, g).value)
    assert "params file not found" in str(pytest.raises(ConfigError, load_params, tmp_path / "none.yaml").value)


def test_model_paths(tmp_path):
    ok = load_params(study_yaml(tmp_path, BASE.replace("tiny:llama", "huggyllama/llama-7b")))
    assert ok.models[0].path == "huggyllama/llama-7b"
    (tmp_path / "ckpt").mkdir()
    local = load_params(study_yaml(tmp_path, BASE.replace("tiny:llama", "ckpt")))
    assert local.models[0].path == str(tmp_path / "ckpt")
    for bad, msg in [("tiny:gpt9", "unknown tiny architecture 'gpt9'"), ("./nope", "model directory not found")]:
        with pytest.raises(ConfigError, match=msg):
            load_params(study_yaml(tmp_path, BASE.replace("tiny:llama", bad)))


def test_duplicate_names_rejected(tmp_path):
    f = study_yaml(tmp_path, BASE.replace("name: b", "name: a"))
    with pytest.raises(ConfigError, match=r"data.sources: duplicate source name 'a'"):
        load_params(f)


def test_duplicate_yaml_key_names_both_lines(tmp_path):
    # PyYAML keeps the last of two equal keys silently: `seed: 3` then `seed: 4` ran with seed 4.
    f = study_yaml(tmp_path, BASE + "seed: 4\n")
    with pytest.raises(ConfigError, match=r"study.yaml:13: 'seed' appears twice \(first on line 2\)"):
        load_params(f)
    nested = study_yaml(tmp_path, BASE.replace("      max_records: 10", "      max_records: 10\n      max_records: 20"))
    with pytest.raises(ConfigError, match=r"study.yaml:10: 'max_records' appears twice \(first on line 9\)"):
        load_params(nested)
    merged = study_yaml(tmp_path, BASE + "report: {<<: {show_inputs: false}, show_inputs: true}\n")
    assert load_params(merged).report.show_inputs  # a merge key is not a repeated key


def test_overrides_apply_and_are_validated(tmp_path):
    f = study_yaml(tmp_path, BASE)
    p = load_params(f, ["data.sources[1].max_records=3", "seed=7", "data.on_invalid=skip", "models[0].name=x"])
    assert (p.data.sources[1].max_records, p.seed, p.data.on_invalid, p.models[0].name) == (3, 7, "skip", "x")
    with pytest.raises(ConfigError) as e:
        load_params(f, ["data.no_such_key=1"])
    assert "data.no_such_key: unknown key" in str(e.value) and "--set data.no_such_key=1" in str(e.value)
    with pytest.raises(ConfigError, match=r"data.sources\[5\] does not exist \(the list has 2 items\)"):
        load_params(f, ["data.sources[5].name=z"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_params(f, ["seed"])
    with pytest.raises(ConfigError, match="Input should be a valid integer"):
        load_params(f, ["seed=abc"])


def test_key_path_round_trip():
    assert parse_key_path("data.sources[1].weight") == ["data", "sources", 1, "weight"]
    assert format_key_path(["data", "sources", 1, "weight"]) == "data.sources[1].weight"
    tree = {"a": [{"b": 1}]}
    apply_override(tree, "a[0].c.d=[1, 2]")
    assert tree == {"a": [{"b": 1, "c": {"d": [1, 2]}}]}
    with pytest.raises(ConfigError):
        parse_key_path("a..b[x]")


def test_config_module_imports_no_torch():
    code = "import sys, llm4academic.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_config_prints_resolved_params():
    out = subprocess.run(
        [sys.executable, "-m", "llm4academic", "config", str(SMOKE), "--json", "--set", "seed=5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    resolved = json.loads(out)
    assert resolved["seed"] == 5 and resolved["data"]["sources"][0]["path"].endswith(".json")
    as_yaml = subprocess.run(
        [sys.executable, "-m", "llm4academic", "config", str(SMOKE)], capture_output=True, text=True, check=True
    ).stdout
    assert yaml.safe_load(as_yaml)["name"] == "smoke"


def test_data_layer_params(tmp_path):
    f = study_yaml(tmp_path, BASE)
    p = load_params(
        f,
        [
            "data.sources[0].weight=0.7",
            "data.sources[1].count=5",
            "data.clean.languages=[en]",
            "data.decontaminate=true",
            "data.mix.total=100",
        ],
    )
    assert (p.data.sources[0].weight, p.data.sources[1].count, p.data.mix.total) == (0.7, 5, 100)
    assert p.data.clean.near_dedup.enabled and p.data.contamination.n_en == 13 and p.length_tokenizer.name == "m"
    with pytest.raises(ConfigError, match=r"data.sources\[0\]: give weight .* or count .*, not both"):
        load_params(f, ["data.sources[0].weight=1", "data.sources[0].count=3"])
    with pytest.raises(ConfigError, match="data.clean.tokenizer: 'gpt' is not one of the study's models"):
        load_params(f, ["data.clean.tokenizer=gpt"])
    with pytest.raises(ConfigError, match=r"data.clean.near_dedup.threshold: Input should be less than or equal"):
        load_params(f, ["data.clean.near_dedup.threshold=1.5"])
    with pytest.raises(ConfigError, match=r"data.sources\[0\].format: Input should be 'auto', 'alpaca'"):
        load_params(f, ["data.sources[0].format=csv"])


def test_evaluate_items_and_compare_params():
    from llm4academic.evaluate import zbench_items

    p = load_params(
        SMOKE,
        [
            "evaluate.limit=null",
            "evaluate.items=[domain-000, advanced-193]",
            "compare.examples=[advanced-193]",
            "compare.n_boot=200",
        ],
    )
    assert list(zbench_items(p)["item_id"]) == ["domain-000", "advanced-193"]  # in the order given
    assert p.compare.n_boot == 200 and p.compare.examples == ["advanced-193"]
    with pytest.raises(ConfigError, match="evaluate.items and evaluate.limit both choose the items"):
        load_params(SMOKE, ["evaluate.items=[basic-000]"])  # smoke.yaml sets limit: 8
    with pytest.raises(ConfigError, match=r"evaluate.items: advanced-001 not in evaluate.splits \(basic\)"):
        load_params(SMOKE, ["evaluate.limit=null", "evaluate.splits=[basic]", "evaluate.items=[advanced-001]"])
    with pytest.raises(ConfigError, match="duplicate Z-Bench item"):
        load_params(SMOKE, ["evaluate.limit=null", "evaluate.items=[basic-000, basic-000]"])
    unknown = load_params(SMOKE, ["evaluate.limit=null", "evaluate.items=[basic-999]"])
    with pytest.raises(ConfigError, match=r"unknown Z-Bench item\(s\) basic-999"):
        zbench_items(unknown)
    with pytest.raises(ConfigError, match="compare.n_boot"):
        load_params(SMOKE, ["compare.n_boot=5"])
