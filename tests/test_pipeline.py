"""The study runner end to end: papermill, nbconvert HTML, manifest.json, index.html — and its failure paths."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, SMOKE

from llm4academic.base import KitError
from llm4academic.config import ConfigError
from llm4academic.pipeline import StudyFailed, run_study, sha256_file


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    manifest = run_study(SMOKE, reports_dir=reports, quiet=True)
    return manifest, reports / "smoke"


@pytest.mark.slow
def test_smoke_study_writes_the_report(smoke_run):
    manifest, run_dir = smoke_run
    assert manifest["status"] == "ok"
    for name in (
        "01_explore_data.ipynb",
        "01_explore_data.html",
        "02_train_fsdp.html",
        "manifest.json",
        "index.html",
        "artifacts/explore/summary.json",
        "artifacts/explore/token_lengths.csv",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.partial*"))  # everything renamed into place


@pytest.mark.slow
def test_manifest_has_provenance(smoke_run):
    _, run_dir = smoke_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["study"] == "smoke" and m["seed"] == 42 and m["params"]["name"] == "smoke"
    assert len(m["git"]["sha"] or "") == 40 and isinstance(m["git"]["dirty"], bool)
    for pkg in ("python", "torch", "transformers", "accelerate", "datasets"):
        assert m["versions"][pkg]
    assert m["platform"]["cpus"] >= 1 and m["started"] <= m["ended"]
    files = {f["source"]: f for f in m["data_files"]}
    assert set(files) == {"alpaca", "chinese_alpaca", "belle", "align:hh_rlhf"}
    assert m["versions"]["trl"]
    assert all(f["sha256"] == sha256_file(f["path"]) for f in files.values())
    assert [(nb["notebook"], nb["status"]) for nb in m["notebooks"]] == [
        ("01_explore_data.ipynb", "ok"),
        ("02_train_fsdp.ipynb", "ok"),
        ("03_align_dpo.ipynb", "ok"),
        ("04_evaluate_zbench.ipynb", "ok"),
        ("05_compare_models.ipynb", "ok"),
    ]
    assert all(nb["duration_s"] > 0 for nb in m["notebooks"])


@pytest.mark.slow
def test_html_and_index_say_what_they_should(smoke_run):
    _, run_dir = smoke_run
    page = (run_dir / "01_explore_data.html").read_text()
    assert page.count("data:image/png;base64") >= 3  # the seaborn figures are embedded
    for heading in (
        "The catalogue",
        "Overlap with Z-Bench",
        "The training mix",
        "Records per source",
        "Lengths in tokens of each studied model",
        "Leading verbs of English instructions",
    ):
        assert heading in page, heading
    assert "load_sources(params)" not in page  # inputs hidden by default (report.show_inputs)
    index = (run_dir / "index.html").read_text()
    for text in (
        "01_explore_data.ipynb",
        'href="01_explore_data.html"',
        'class="status ok"',
        "tiny:llama",
        "chinese_alpaca",
        "manifest.json",
    ):
        assert text in index, text
    summary = json.loads((run_dir / "artifacts/explore/summary.json").read_text())
    alpaca = next(r for r in summary["load"] if r["source"] == "alpaca")
    assert alpaca["kept"] == 600 and alpaca["read"] == 600 + alpaca["skipped_total"]
    m = json.loads((run_dir / "manifest.json").read_text())
    data = m["data"]  # folded in from artifacts/data/data_summary.json
    assert data["records_loaded"] == 1600 and summary["records"] == data["records_in_mix"] > 1000
    assert data["skipped"]["alpaca"] == {"empty:output": alpaca["skipped_total"]}
    assert set(data["removed"]) == {"exact_dedup", "near_dedup", "length_filter", "decontaminate"}
    assert data["contamination"]["items"] == 311 and (run_dir / "artifacts/data/mix.jsonl").is_file()
    assert 'id="data-flow"' in index and 'id="contamination"' in index
    (trained,) = m["train"]  # the default study tunes the tiny LLaMA under FSDP on 2 CPU processes
    assert trained["model"] == "tiny-llama" and trained["steps"] == 30 and trained["last_loss"] < trained["first_loss"]
    assert trained["fsdp"]["distributed_type"] == "FSDP" and trained["fsdp"]["sharded"]
    assert trained["packing_efficiency"] > 0.9 > trained["padded_efficiency"]
    assert (Path(trained["final"]) / "model.safetensors").is_file() and 'id="training"' in index
    assert "FSDP engaged" in (run_dir / "02_train_fsdp.html").read_text()
    (aligned,) = m["align"]  # then DPO from the SFT checkpoint on hh-rlhf pairs, DDP on 2 CPU processes
    assert (aligned["model"], aligned["start"], aligned["steps"]) == ("tiny-llama-tuned-dpo", "tiny-llama-tuned", 20)
    assert aligned["distributed"]["distributed_type"] == "MULTI_CPU" and aligned["distributed"]["num_processes"] == 2
    assert (
        aligned["held_out_pairs"] > 20
        and 0 <= aligned["dpo_accuracy"] <= 1
        and aligned["gain_ci"][0] <= aligned["gain"]
    )
    assert (Path(aligned["final"]) / "model.safetensors").is_file() and 'id="align"' in index
    page = (run_dir / "03_align_dpo.html").read_text()
    for heading in ("DPO runs", "Preference pairs", "Curves", "Held-out pairs: start model vs DPO model"):
        assert f">{heading}<" in page, heading
    evaluated = json.loads((run_dir / "artifacts/evaluate/evaluate.json").read_text())
    assert evaluated["models"] == ["tiny-llama", "tiny-bloom", "tiny-llama-tuned", "tiny-llama-tuned-dpo"]
    assert all((run_dir / f"artifacts/evaluate/zbench_{s}.csv").is_file() for s in ("basic", "advanced", "domain"))
    executed = nbformat.read(run_dir / "01_explore_data.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]


@pytest.mark.slow
def test_comparison_notebook_and_headline(smoke_run):
    _, run_dir = smoke_run
    page = (run_dir / "05_compare_models.html").read_text()
    for heading in (
        "Leaderboard",
        "Per split",
        "Findings",
        "Per task tag",
        "Base → SFT → DPO per foundation model",
        "What each tuning step changed",
        "DPO against the model it started from",
        "Held-out preference pairs",
        "Length bias",
        "Judge agreement",
        "Training curves",
        "The data mix",
        "Answers side by side",
        "Provenance",
    ):
        assert f">{heading}<" in page, heading
    assert page.count("data:image/png;base64") >= 7  # leaderboard, splits, tags, deltas, length, judge, curves
    assert "bootstrap seed <strong>42</strong>" in page and "No judge ran" not in page
    assert "cdnjs" not in page and "unpkg" not in page  # readable offline
    headline = json.loads((run_dir / "artifacts/compare/headline.json").read_text())
    models = [r["model"] for r in headline["rows"]]
    assert len(models) == 18 and {"tiny-llama", "tiny-bloom", "tiny-llama-tuned", "tiny-llama-tuned-dpo"} <= set(models)
    assert headline["seed"] == 42 and headline["n_items"] > 20 and headline["findings"][0].startswith("overall: ")
    index = (run_dir / "index.html").read_text()
    assert 'id="leaderboard"' in index and 'src="artifacts/compare/leaderboard.png"' in index
    assert 'id="findings"' in index and 'id="recipe"' in index and "seed <code>42</code>" in index
    assert (run_dir / "artifacts/compare/leaderboard.png").stat().st_size > 10_000
    for nb in ("01_explore_data", "02_train_fsdp", "03_align_dpo", "04_evaluate_zbench", "05_compare_models"):
        html = (run_dir / f"{nb}.html").read_text()
        assert "cdnjs.cloudflare.com" not in html and "application/vnd.jupyter.widget" not in html, nb


@pytest.mark.slow
@pytest.mark.browser
def test_report_in_headless_chromium(smoke_run, tmp_path):
    """The index page and the comparison notebook in a real browser, offline: the leaderboard table and the
    figures have a size, nothing went to the console."""
    from browser import Browser, chromium_available

    assert chromium_available() is None, chromium_available()
    _, run_dir = smoke_run
    with Browser() as b:
        index = b.check(
            run_dir / "index.html",
            tmp_path / "index.png",
            {"leaderboard": "table#leaderboard", "figures": "img#leaderboard-figure", "notebooks": "table#notebooks"},
        )
        nb = b.check(
            run_dir / "05_compare_models.html",
            tmp_path / "compare.png",
            {"tables": "table.dataframe", "figures": "img"},
        )
    assert index.problems() == [] and nb.problems() == [], (index.problems(), nb.problems())
    assert index.elements["leaderboard"].sizes[0][1] > 200 and index.elements["figures"].sizes[0][0] > 300
    assert nb.elements["figures"].count >= 7 and nb.elements["tables"].count >= 5
    assert "tiny-llama-tuned" in index.inner_text and "GPT4" in index.inner_text
    assert index.screenshot_size[0] == 1280 and (tmp_path / "compare.png").stat().st_size > 50_000


def _failing_notebooks(tmp_path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "llm4academic", "display_name": "Python (llm4academic)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# a notebook that fails"),
        nbformat.v4.new_code_cell('params_path = ""\nrun_dir = ""\noverrides = []', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('print("before the failure")'),
        nbformat.v4.new_code_cell(body),
        nbformat.v4.new_code_cell('print("never reached")'),
    ]
    d = tmp_path / "notebooks"
    d.mkdir()
    nbformat.write(nb, d / "01_explore_data.ipynb")
    return d


@pytest.mark.slow
def test_failing_notebook(tmp_path):
    nbs = _failing_notebooks(tmp_path, "ratio = 1 / 0")
    with pytest.raises(StudyFailed) as e:
        run_study(
            SMOKE, ["description=<script>alert(1)</script>"], reports_dir=tmp_path / "r", notebooks=nbs, quiet=True
        )
    msg = str(e.value)
    assert "notebook 01_explore_data.ipynb failed at cell" in msg and "ratio = 1 / 0" in msg
    assert "ZeroDivisionError: division by zero" in msg
    run_dir = tmp_path / "r" / "smoke"
    executed = nbformat.read(run_dir / "01_explore_data.ipynb", as_version=4)
    printed = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert "before the failure\n" in printed and "never reached\n" not in printed  # earlier outputs kept
    page = (run_dir / "01_explore_data.html").read_text()
    assert "ZeroDivisionError" in page
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["notebooks"][0]["error"]["ename"] == "ZeroDivisionError"
    index = (run_dir / "index.html").read_text()
    assert 'class="status failed"' in index and "ZeroDivisionError" in index
    assert "<script>alert(1)</script>" not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index


@pytest.mark.slow
def test_notebook_timeout(tmp_path):
    nbs = _failing_notebooks(tmp_path, "import time\ntime.sleep(600)")
    with pytest.raises(StudyFailed) as e:
        run_study(SMOKE, ["report.notebook_timeout_s=12"], reports_dir=tmp_path / "r", notebooks=nbs, quiet=True)
    assert "timeout" in str(e.value) and "stopped after 12 s" in str(e.value)
    m = json.loads((tmp_path / "r" / "smoke" / "manifest.json").read_text())
    assert m["notebooks"][0]["status"] == "timeout"


def test_invalid_params_stop_before_running(tmp_path):
    with pytest.raises(ConfigError, match="data.no_such_key"):
        run_study(SMOKE, ["data.no_such_key=1"], reports_dir=tmp_path, quiet=True)
    assert not (tmp_path / "smoke").exists()


def test_cli_run_rejects_unknown_key_and_step(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4academic",
            "run",
            str(SMOKE),
            "--set",
            "data.no_such_key=1",
            "--reports-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "data.no_such_key: unknown key" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "llm4academic", "run", str(SMOKE), "--only", "trian", "--reports-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "unknown step(s) trian" in r.stderr


@pytest.mark.slow
def test_cli_run_failure_exit_code(tmp_path):
    # The real Alpaca sample holds records with an empty output: with on_invalid: error the study stops there.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4academic",
            "run",
            str(SMOKE),
            "--set",
            "data.on_invalid=error",
            "--set",
            "name=strict",
            "--reports-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 1, r.stderr
    assert "error: notebook 01_explore_data.ipynb failed at cell" in r.stderr
    assert "DataError: " in r.stderr and "alpaca_data.first1825.json:1422: field 'output' is empty" in r.stderr
    assert (tmp_path / "strict" / "index.html").is_file()


def _trivial_notebooks(tmp_path: Path) -> Path:
    return _failing_notebooks(tmp_path, 'print("fine")')


def test_unresolvable_model_paths_stop_before_anything_runs(tmp_path):
    # Before: a folder without config.json (or a hub id not in the cache, offline) was found 30 s into notebook 01.
    (tmp_path / "typo").mkdir()
    nbs = _trivial_notebooks(tmp_path)
    sets = [f"models[1].path={tmp_path / 'typo'}", "evaluate.judge.model=nobody-xyz/no-such-judge"]
    with pytest.raises(ConfigError) as e:
        run_study(SMOKE, sets, reports_dir=tmp_path / "r", notebooks=nbs, quiet=True)
    msg = str(e.value)
    assert f"models[1].path: model 'tiny-bloom' ({tmp_path / 'typo'}): no config.json" in msg
    assert "evaluate.judge.model: model 'judge' (nobody-xyz/no-such-judge): cannot read its config.json" in msg
    assert "models[0]" not in msg and not (tmp_path / "r").exists()  # nothing ran, no run directory


def test_a_second_concurrent_run_is_refused(tmp_path):
    import fcntl

    from llm4academic.rundir import RunDir

    rd = RunDir(tmp_path / "r" / "smoke")
    rd.root.mkdir(parents=True)
    with open(rd.lock, "w") as held:  # another run holds the run directory's lock
        held.write("pid 4242 on node, started then\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KitError, match=r"is in use: another run of this study is in progress \(pid 4242"):
            run_study(SMOKE, reports_dir=tmp_path / "r", notebooks=_trivial_notebooks(tmp_path), quiet=True)
        assert not rd.manifest.exists()
    manifest = run_study(
        SMOKE, ["steps=[explore]"], reports_dir=tmp_path / "r", notebooks=tmp_path / "notebooks", quiet=True
    )
    assert manifest["status"] == "ok"
    with open(rd.lock) as fh:  # released at exit
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _tree(pid: int) -> set[int]:
    """pid and every live (non-zombie) process under it."""
    parents = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            parents[int(name)] = int(fields[1])
    found = {pid} & set(parents)
    while True:
        more = {p for p, pp in parents.items() if pp in found} - found
        if not more:
            return found
        found |= more


def _assert_gone(tree: set[int], wait_s: float = 10) -> None:
    """Every process of ``tree`` ends within ``wait_s`` seconds."""
    t0 = time.monotonic()
    while _alive(tree) and time.monotonic() - t0 < wait_s:
        time.sleep(0.2)
    assert not _alive(tree), f"still running: {_alive(tree)}"


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


def _cli_run(tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llm4academic", "run", str(SMOKE), "--reports-dir", str(tmp_path), *args]
    # SIGINT ignored at start, as a shell starts a background job: the runner must still stop on it
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def _stop_during_training(proc: subprocess.Popen, ckpt_dir: Path, sig: int, after: set[str]) -> tuple[set[int], str]:
    """Wait until training has written a checkpoint beyond ``after`` with its workers up, send ``sig``; return the
    processes that were running then and the runner's stderr."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        ckpts = {p.name for p in ckpt_dir.glob("checkpoint-*")} - after
        tree = _tree(proc.pid)
        if ckpts and len(tree) >= 5:  # runner, papermill, kernel, two workers
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read()
    tree = _tree(proc.pid)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return tree, err


@pytest.mark.slow
def test_signals_stop_the_study_and_every_process(tmp_path):
    # Before: SIGINT was ignored and the study ran on; after SIGTERM papermill, the kernel and the training workers
    # ran on as orphans, writing checkpoints into the run directory.
    sets = ["--set", "name=stopme", "--set", "train.max_steps=100000", "--set", "train.save_steps=5"]
    sets += ["--set", "steps=[explore,train]", "--set", "train.save_total_limit=2"]
    run_dir = tmp_path / "stopme"
    ckpts = run_dir / "artifacts" / "train" / "tiny-llama"
    proc = _cli_run(tmp_path, *sets)
    tree, err = None, ""
    try:
        deadline = time.monotonic() + 400
        while not (run_dir / ".run.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        second = subprocess.run(  # the run directory is locked while the first run goes on
            [sys.executable, "-m", "llm4academic", "run", str(SMOKE), "--reports-dir", str(tmp_path), *sets],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert second.returncode == 2 and "is in use: another run of this study is in progress" in second.stderr
        tree, err = _stop_during_training(proc, ckpts, signal.SIGTERM, set())
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_gone(tree)
    assert proc.returncode == 128 + signal.SIGTERM and "SIGTERM: study stopped during notebook 02_train_fsdp" in err
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["notebooks"][1]["status"] == "interrupted"
    assert 'class="status interrupted"' in (run_dir / "index.html").read_text()
    kept = {p.name for p in ckpts.glob("checkpoint-*")}
    assert kept and all((ckpts / k / "trainer_state.json").is_file() for k in kept)  # complete, resumable
    time.sleep(3)  # no orphan writes another checkpoint
    assert {p.name for p in ckpts.glob("checkpoint-*")} == kept

    # SIGINT (Ctrl-C), with SIGINT ignored at start: the rerun resumes from the checkpoint and stops likewise.
    proc = _cli_run(tmp_path, *sets, "--only", "train")
    try:
        tree, err = _stop_during_training(proc, ckpts, signal.SIGINT, kept)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_gone(tree)
    assert proc.returncode == 128 + signal.SIGINT and "SIGINT: study stopped" in err
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "interrupted" and [nb["status"] for nb in m["notebooks"]] == ["ok", "interrupted"]
    new = {int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*")} - {int(k.split("-")[1]) for k in kept}
    assert new and min(new) > max(int(k.split("-")[1]) for k in kept)  # resumed from the kept checkpoint


def test_a_worker_exits_with_its_parent(tmp_path):
    # base.exit_with_parent, which train.worker calls: a worker whose kernel or launcher dies does not run on.
    script = (
        "import os, sys, time\n"
        "from llm4academic.base import exit_with_parent\n"
        "if os.fork() == 0:\n"
        "    assert exit_with_parent()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "    sys.exit(0)\n"
        "time.sleep(2)\n"  # the parent dies; the worker must die with it
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    worker = int(proc.stdout.split()[0])
    t0 = time.monotonic()
    while _alive({worker}) and time.monotonic() - t0 < 5:
        time.sleep(0.1)
    assert not _alive({worker})
