"""``llm4academic …``: thin commands over the package (the notebooks call the same functions)."""

from __future__ import annotations

import importlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
import yaml

from .base import KitError, atomic_write, project_root, setup_environment
from .config import TINY_ARCHS, load_params, resolved_dict

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="llm4academic: run instruction-tuning studies from one params file.",
)
models_app = typer.Typer(no_args_is_help=True, help="Offline models for tests and the default study.")
app.add_typer(models_app, name="models")
data_app = typer.Typer(no_args_is_help=True, help="Instruction datasets: catalogue, formats, inspection.")
app.add_typer(data_app, name="data")
zbench_app = typer.Typer(no_args_is_help=True, help="Z-Bench: the 14 reference models' leaderboard, the answer key.")
app.add_typer(zbench_app, name="zbench")

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a param: KEY=VALUE (YAML value), e.g. --set data.sources[0].max_records=100"),
]


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON records instead of a table")]


@contextmanager
def user_errors():
    """Print a ``KitError`` as a plain message and exit with its code; other errors keep their traceback."""
    try:
        yield
    except KitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


@app.command()
def run(
    params: Annotated[Path, typer.Argument(help="the study's params YAML")],
    set_: SetOpt = None,
    only: Annotated[str | None, typer.Option(help="comma-separated steps to run, e.g. explore")] = None,
    reports_dir: Annotated[Path | None, typer.Option(help="default: the checkout's reports/")] = None,
):
    """Run the whole study (its notebooks, in order) → reports/<name>/index.html."""
    from .pipeline import run_study

    with user_errors():
        run_study(
            params,
            set_ or [],
            only=[s.strip() for s in only.split(",") if s.strip()] if only else None,
            reports_dir=reports_dir,
        )


@app.command()
def train(
    params: Annotated[Path, typer.Argument(help="the study's params YAML")],
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="the model to train (one per launch)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="default: reports/<study name>")] = None,
):
    """One training worker: run it under `accelerate launch` / torchrun (multi-GPU, multi-node).

    Example: accelerate launch --config_file params/accelerate/fsdp_1node_4gpu.yaml -m llm4academic train
    params/recipes/llama-7b.yaml
    """
    from .base import default_reports_dir
    from .train import run_distributed

    with user_errors():
        study = load_params(params, set_ or [])
        run_distributed(params, run_dir or default_reports_dir() / study.name, model, set_ or [])


@app.command()
def align(
    params: Annotated[Path, typer.Argument(help="the study's params YAML")],
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(help="the studied model to preference-tune (one per launch)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="default: reports/<study name>")] = None,
):
    """One DPO worker (the align step): run it under `accelerate launch` / torchrun (multi-GPU, multi-node).

    Example: accelerate launch --multi_gpu --num_processes 4 -m llm4academic align params/recipes/llama-7b.yaml
    --model llama-7b  (FSDP2 comes from the params' align.fsdp, through TRL's trainer)
    """
    from .align import run_distributed
    from .base import default_reports_dir

    with user_errors():
        study = load_params(params, set_ or [])
        run_distributed(params, run_dir or default_reports_dir() / study.name, model, set_ or [])


@app.command()
def evaluate(
    params: Annotated[Path, typer.Argument(help="the study's params YAML")],
    set_: SetOpt = None,
    run_dir: Annotated[Path | None, typer.Option(help="default: reports/<study name>")] = None,
):
    """Answer and score the study's Z-Bench slice (what 04_evaluate_zbench.ipynb runs), without the notebook."""
    from . import evaluate as ev
    from .base import default_reports_dir

    with user_errors():
        study = load_params(params, set_ or [])
        result = ev.run(study, run_dir or default_reports_dir() / study.name)
    overall = result["summary"][result["summary"]["split"] == "overall"]
    typer.echo(overall.pivot_table(index="model", columns="scorer", values="score").round(3).to_string())


@app.command()
def compare(
    studies: Annotated[
        list[Path], typer.Argument(help="finished studies' report folders, e.g. reports/llama-7b reports/bloomz-7b1-mt")
    ],
    out: Annotated[Path | None, typer.Option(help="default: reports/compare-<study>-<study>…")] = None,
    timeout_s: Annotated[int, typer.Option(help="stop the notebook after this many seconds")] = 3600,
):
    """Compare finished studies in one report (05_compare_models over all of them) → <out>/index.html.

    Refuses studies that evaluated different Z-Bench items or used different scorers or judges.
    """
    from .pipeline import run_comparison

    with user_errors():
        run_comparison(studies, out, timeout_s=timeout_s)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="smaller sizes: the whole run in ~3 minutes")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object with every case")] = False,
    case: Annotated[str | None, typer.Option(help="comma-separated cases, e.g. P1,P3 (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the JSON object to this file")] = None,
):
    """Speed against stanford_alpaca's way, kit and baseline side by side in one process (benchmarks/README.md).

    P1 preprocessing · P2 token efficiency · P3 training throughput · P4 generation · P5 GPU (benchmarks/gpu.py;
    skipped without a GPU) · P6 the default study's wall time. Ratios, not absolute times, are the result.
    Exits 1 when a case errored (a missed goal is a result, not a failure).
    """
    with user_errors():
        harness = bench_harness()
        result = harness.run(quick=quick, cases=harness.parse_cases(case), progress=lambda m: typer.echo(m, err=True))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out:
        atomic_write(out, text + "\n")
    typer.echo(text if as_json else harness.format_table(result))
    raise typer.Exit(1 if result["summary"]["errors"] else 0)


@app.command()
def doctor(
    gpu: Annotated[bool, typer.Option("--gpu", help="the check on every GPU here (~1B LLaMA, FSDP2, bf16)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="the same check on CPU: tiny model, 2 processes")] = False,
    out: Annotated[Path | None, typer.Option(help="also write the JSON verdict to this file")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="keep the model, params and runs here (default: temp)")] = None,
):
    """GPU acceptance: train with packing under FSDP2, stop and resume, save and reload, answer Z-Bench (docs/cli.md).

    Prints one JSON verdict (fsdp_engaged, loss_falls, resume_exact, reload_equal, generation_ok, vllm, mfu,
    peak_memory_gb, gpus, ok); exits 1 when it is not ok. Run `llm4academic doctor --gpu` first on a new cluster.
    """
    from .doctor import main as run_doctor

    with user_errors():
        verdict = run_doctor(gpu=gpu, dry_run=dry_run, out=out, work_dir=work_dir)
    raise typer.Exit(0 if verdict["ok"] else 1)


def bench_harness():
    """``benchmarks.harness`` of the checkout the kit runs from (the benchmarks are not part of the package)."""
    root = project_root()
    if root is None or not (root / "benchmarks" / "harness.py").is_file():
        raise KitError(
            "the benchmarks ship with the checkout, not with the installed package: clone the kit's "
            "repository, `pip install -e .` it and run `llm4academic bench` there"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.harness")


@zbench_app.command("leaderboard")
def zbench_leaderboard(
    split: Annotated[list[str] | None, typer.Option(help="basic, advanced or domain")] = None,
    by_scorer: Annotated[bool, typer.Option("--by-scorer", help="one row per model, split and scorer")] = False,
    as_json: JsonOpt = False,
):
    """The 14 reference models on their shipped Z-Bench answers: per model the primary (answer-key) score per split
    and overall with a 95 % bootstrap interval and the rank; --by-scorer for every reference scorer with coverage."""
    from .scoring import leaderboard, leaderboard_json
    from .scoring.board import headline

    with user_errors():
        if by_scorer and as_json:
            typer.echo(json.dumps(leaderboard_json(split or None), indent=2, ensure_ascii=False))
            return
        table = leaderboard(split or None) if by_scorer else headline(split or None)
    if by_scorer:
        shown = table.assign(
            score=table["score"].round(3),
            ci=[f"[{a:.2f}, {b:.2f}]" for a, b in zip(table["ci_low"], table["ci_high"], strict=True)],
        )
        typer.echo(shown[["split", "scorer", "model", "n", "coverage", "score", "ci"]].to_string(index=False))
        return
    splits = table.attrs["headline"]["splits"]
    if as_json:
        records = [
            {"model": r["model"], **{sp: {k: _num(r[f"{sp}.{k}"]) for k in ("score", "ci_low", "ci_high", "rank", "n")}
                                     for sp in splits}}
            for r in table.to_dict("records")
        ]  # fmt: skip
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    shown = pd.DataFrame({"model": table["model"]})
    for sp in splits:
        shown[sp] = [f"{s:.3f} [{lo:.2f}, {hi:.2f}] #{int(rk)}" for s, lo, hi, rk in
                     zip(table[f"{sp}.score"], table[f"{sp}.ci_low"], table[f"{sp}.ci_high"], table[f"{sp}.rank"],
                         strict=True)]  # fmt: skip
    typer.echo(
        f"primary score (answer key; {int(table[f'{splits[-1]}.n'].max())} keyed items), 95 % bootstrap CI, rank"
    )
    typer.echo(shown.to_string(index=False))


def _num(value):
    return round(float(value), 4) if isinstance(value, float) and not float(value).is_integer() else int(value)


@zbench_app.command("key")
def zbench_key(
    files: Annotated[
        list[Path] | None, typer.Argument(help="answer key files to check (default: the shipped key)")
    ] = None,
    as_json: JsonOpt = False,
):
    """Check Z-Bench's answer key (every referenced item once, entries that fit their type) and show what it holds."""
    from .answer_key import load_answer_key, summary

    with user_errors():
        key = load_answer_key(files or None, complete=not files)
    if as_json:
        typer.echo(key.frame().to_json(orient="records", force_ascii=False, indent=2))
        return
    typer.echo(summary(key).to_string())
    typer.echo(f"{len(key)} entries, {len(key.flagged)} flagged (reference kept, reason given)")


@zbench_app.command("validate")
def zbench_validate(as_json: JsonOpt = False):
    """How far the keyed scorer can be trusted: agreement with the labelled development set (357 answers of the
    reference models other than GPT4, GPT3.5 and moss) and the adversarial baselines (echo, continuation, …)."""
    from .scoring.validate import adversarial, agreement, load_devset

    with user_errors():
        agree, held_out, baselines = agreement(), agreement(devset=load_devset(held_out=True)), adversarial()
    if as_json:
        report = {"agreement": agree.to_dict(), "held_out": held_out.to_dict(),
                  "baselines": baselines.to_dict(orient="records")}  # fmt: skip
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    typer.echo(
        f"agreement with the development set: {agree.agreement:.3f} on {agree.n} answers labelled correct or "
        f"incorrect (skipped: {agree.skipped})"
    )
    typer.echo(agree.by_type.round(3).to_string(index=False))
    typer.echo(agree.confusion.to_string())
    typer.echo(f"\nheld-out check (GPT4, GPT3.5, moss; labelled without the key, never used for tuning): "
               f"{held_out.agreement:.3f} on {held_out.n} answers")  # fmt: skip
    typer.echo("\nadversarial baselines (mean keyed score: the bare reference and the English answer ~1, the rest ~0):")
    typer.echo(
        baselines.assign(score=baselines["score"].round(3))[["baseline", "items", "score"]].to_string(index=False)
    )


@app.command()
def config(
    params: Annotated[Path, typer.Argument(help="the study's params YAML")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of YAML")] = False,
):
    """Print the resolved, validated params."""
    with user_errors():
        resolved = resolved_dict(load_params(params, set_ or []))
    if as_json:
        typer.echo(json.dumps(resolved, indent=2, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), nl=False)


@models_app.command("tiny")
def models_tiny(
    out_dir: Annotated[Path, typer.Argument(help="directory to write the model to")],
    arch: Annotated[str, typer.Option(help=f"one of: {', '.join(TINY_ARCHS)}")] = "llama",
    seed: int = 0,
):
    """Build a tiny randomly initialised model + tokenizer offline (save_pretrained, safetensors)."""
    from .models import build_tiny

    if arch not in TINY_ARCHS:
        typer.echo(f"error: --arch {arch!r}: expected one of {', '.join(TINY_ARCHS)}", err=True)
        raise typer.Exit(2)
    path = build_tiny(arch, out_dir, seed=seed)
    typer.echo(str(path))


def _show_catalog(kind: str, as_json: bool) -> None:
    from . import catalog

    frame, table = {
        "models": (catalog.model_frame, catalog.format_model_table),
        "data": (catalog.catalog_frame, catalog.format_table),
    }[kind]
    typer.echo(frame().to_json(orient="records", force_ascii=False, indent=2) if as_json else table())


@models_app.command("catalog")
def models_catalog(as_json: JsonOpt = False):
    """The model cards: family, the seed's model, architecture, FSDP wrap class, template, remote code."""
    _show_catalog("models", as_json)


@data_app.command("catalog")
def data_catalog(as_json: JsonOpt = False):
    """The seed's catalogue of open instruction datasets (languages, producer, size, format, licence, link)."""
    _show_catalog("data", as_json)


@data_app.command("formats")
def data_formats():
    """The on-disk formats the kit reads, with the fields that identify each."""
    from .data.formats import FORMATS

    for fmt in FORMATS.values():
        typer.echo(f"{fmt.name:<11} fields: {fmt.fields():<36} {fmt.description}")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="a .json / .jsonl file (or gzip of either)")],
    format: Annotated[str, typer.Option("--format", help="auto or a format name")] = "auto",
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Detected format, record count, invalid records by reason (with file:line examples), language mix.

    Exits 0 when every record loads; 1 when some are invalid; 2 when the file cannot be read at all.
    """
    from .data.formats import inspect_file

    with user_errors():
        info = inspect_file(path, fmt=format, on_invalid="skip")
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        typer.echo(
            f"{info['path']}\n  format: {info['format']} ({info['layout']})\n  records: {info['records']:,} "
            f"of {info['read']:,} read\n  invalid: {info['invalid_total']:,}"
        )
        for reason, n in sorted(info["invalid"].items()):
            typer.echo(f"    {reason}: {n:,}")
        for ex in info["examples"]:
            typer.echo(f"    e.g. {ex}")
        typer.echo("  languages: " + ", ".join(f"{k} {v:,}" for k, v in info["languages"].items()))
    if info["invalid_total"]:
        raise typer.Exit(1)


def main() -> None:
    setup_environment()
    app()


if __name__ == "__main__":
    sys.exit(main())
