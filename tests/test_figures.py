"""figures.py: every figure function draws small frames of the shapes the notebooks pass, and returns its Figure
(or Axes); the comparison palette keeps one colour per model."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llm4academic import compare, figures  # noqa: E402

ITEMS = [f"{split}-{i:03d}" for split in ("basic", "advanced") for i in range(4)]
SCORES = {"x": [1, 0, 1, 1, 0, 1, 0, 1], "x-tuned": [1, 1, 1, 1, 0, 1, 1, 1], "GPT4": [1, 1, 0, 1, 1, 1, 0, 1]}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def primary():
    rows = [
        (item, item.split("-")[0], m, "contains", float(v))
        for m, vs in SCORES.items()
        for item, v in zip(ITEMS, vs, strict=True)
    ]
    return pd.DataFrame(rows, columns=["item_id", "split", "model", "scorer", "score"])


@pytest.fixture(scope="module")
def colours():
    return figures.palette({"x": "study", "x-tuned": "tuned", "GPT4": "reference"}, ["x", "x-tuned"])


def test_style_and_palette(colours):
    assert isinstance(figures.style(), list)
    assert set(colours) == {"x", "x-tuned", "GPT4"}
    assert np.allclose(colours["x-tuned"], 0.6 * np.asarray(colours["x"]))  # a darker shade of its base
    assert colours["GPT4"][0] == colours["GPT4"][1] == colours["GPT4"][2]  # grey
    assert set(figures.label_palette(colours)) == {"x", "x-tuned", "GPT4"}


def test_explore_figures():
    draws = pd.DataFrame({"source": ["alpaca", "belle"], "available": [10, 20], "taken": [5, 20]})
    assert isinstance(figures.plot_mix(draws, 25, seed=1), Figure)
    per_source = pd.DataFrame({"source": ["alpaca", "belle"], "records": [5, 20], "share": [0.2, 0.8]})
    langs = pd.DataFrame(
        {"source": ["alpaca", "belle", "belle"], "language": ["en", "zh", "en"], "share": [1, 0.9, 0.1]}
    )
    assert isinstance(figures.plot_sources_languages(per_source, langs), Figure)
    chars = pd.DataFrame(
        {
            "source": ["alpaca", "belle"] * 4,
            "field": ["instruction"] * 4 + ["output"] * 4,
            "chars": [10, 20, 0, 40, 50, 60, 70, 80],
        }
    )
    assert isinstance(figures.plot_length_ecdf(chars), Figure)
    tokens = chars.rename(columns={"chars": "tokens"}).assign(model="tiny-llama")
    assert isinstance(figures.plot_token_lengths(tokens), Figure)
    verbs = pd.DataFrame(
        {"verb": ["write", "write", "give"], "object": ["poem", "story", "list"], "records": [3, 2, 1]}
    )
    assert isinstance(figures.plot_leading_verbs(verbs), Figure)


def test_train_and_evaluate_figures():
    curves = pd.DataFrame(
        {
            "model": "tiny-llama",
            "step": [1, 2, 1, 2],
            "metric": ["loss", "loss", "lr", "lr"],
            "value": [2.0, 1.5, 1e-4, 5e-5],
        }
    )
    assert isinstance(figures.plot_train_curves(curves), Figure)
    summary = pd.DataFrame(
        {
            "model": ["x", "x", "GPT4", "GPT4"],
            "split": "overall",
            "scorer": ["contains", "rouge_l"] * 2,
            "score": [0.5, 0.3, 0.8, 0.4],
        }
    )
    assert isinstance(figures.plot_scorers(summary), Figure)
    matrix = pd.DataFrame({"化学": [0.5, 1.0], "物理": [np.nan, 0.0]}, index=["x", "GPT4"])
    assert isinstance(figures.plot_tag_heatmap(matrix), Figure)


def test_compare_figures(primary, colours):
    board = compare.leaderboard(primary, ["x", "x-tuned"], n_boot=50)
    assert isinstance(figures.plot_leaderboard(board, colours), Axes)
    assert isinstance(figures.plot_splits(board, colours), Figure)
    deltas = compare.tuning_deltas(primary, ["x", "x-tuned"], n_boot=50)
    assert isinstance(figures.plot_deltas(deltas, colours), Figure)
    lengths = primary[["model", "item_id"]].assign(chars=np.arange(len(primary)) * 7 + 1)
    assert isinstance(figures.plot_length_bias(primary, lengths, colours), Figure)
    agreement = pd.DataFrame(
        {
            "model": ["x", "x-tuned"],
            "n": [4, 4],
            "wins": [1, 2],
            "ties": [2, 1],
            "losses": [1, 1],
            "order_consistency": [0.75, 1.0],
            "baseline": "GPT4",
        }
    )
    assert isinstance(figures.plot_judge(agreement, colours), Figure)
    curves = pd.DataFrame({"model": "x-tuned", "step": [1, 2], "metric": "loss", "value": [2.0, 1.5]})
    assert isinstance(figures.plot_curves(curves, colours), Figure)


def test_text_beside_the_figures():
    assert figures.markdown_list(["a.csv", "b.json"]) == "- `a.csv`\n- `b.json`"
    assert figures.markdown_list(["overall: x wins"], code=False) == "- overall: x wins"

    class Model:
        name, path = "tiny-llama", "tiny:llama"

    assert figures.model_names([Model(), "x"]) == "`tiny-llama`, `x`"
    assert figures.model_names([Model()], paths=True) == "`tiny-llama` (tiny:llama)"


def test_dpo_stages_keep_their_foundation_models_hue():
    kinds = {"x": "study", "x-tuned": "tuned", "x-tuned-dpo": "tuned-dpo", "y-dpo": "dpo", "y": "study",
             "GPT4": "reference"}  # fmt: skip
    colours = figures.palette(kinds, ["x", "x-tuned", "x-tuned-dpo", "y", "y-dpo"])
    x, y = np.asarray(colours["x"]), np.asarray(colours["y"])
    assert np.allclose(colours["x-tuned"], 0.6 * x) and np.allclose(colours["x-tuned-dpo"], 0.35 * x)
    assert np.allclose(colours["y-dpo"], y + 0.45 * (1 - y)) and not np.allclose(x, y)
    assert len({colours[m] for m in kinds}) == len(kinds)
    # a DPO model whose base is not in the figure still takes its foundation model's hue
    alone = figures.palette({"z-tuned-dpo": "tuned-dpo", "x": "study"}, ["x", "z-tuned-dpo"])
    assert not np.allclose(alone["z-tuned-dpo"], 0.35 * np.asarray(alone["x"]))


def test_stage_delta_judge_and_dpo_curve_figures():
    scores = {**SCORES, "x-tuned-dpo": [1, 1, 1, 1, 1, 1, 1, 1], "y": [0] * 8, "y-dpo": [1, 0] * 4}
    rows = [
        (i, i.split("-")[0], m, "contains", float(v))
        for m, vs in scores.items()
        for i, v in zip(ITEMS, vs, strict=True)
    ]
    primary = pd.DataFrame(rows, columns=["item_id", "split", "model", "scorer", "score"])
    studied = ["x", "x-tuned", "x-tuned-dpo", "y", "y-dpo"]
    board = compare.leaderboard(primary, studied, n_boot=50)
    colours = figures.palette(compare.model_kinds(board["model"].unique(), studied), studied)
    fig = figures.plot_stages(compare.stage_scores(board, studied), colours)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 3  # x: base → SFT → SFT+DPO, y: base → DPO
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["base", "SFT", "DPO", "SFT+DPO"]
    deltas = compare.tuning_deltas(primary, studied, n_boot=50)
    fig = figures.plot_deltas(deltas, colours)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "x sft→sft+dpo · overall" in labels and "y base→dpo · basic" in labels and len(labels) == len(deltas)
    agreement = pd.DataFrame(
        {"model": ["x-tuned-dpo", "x-tuned-dpo"], "baseline": ["GPT4", "x-tuned"], "n": 4, "wins": [1, 3],
         "ties": [1, 1], "losses": [2, 0], "order_consistency": [0.75, 0.75]}
    )  # fmt: skip
    fig = figures.plot_judge(agreement, colours)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["x-tuned-dpo vs GPT4", "x-tuned-dpo vs x-tuned"]
    logged = pd.DataFrame(
        {"step": [1, 2, 3], "loss": [0.69, 0.6, 0.5], "rewards/accuracies": [0.5, 0.6, 0.8], "rewards/margins": [0,
         0.2, 0.4], "kl/implicit": [0.0, 0.01, 0.03], "lr": 1e-6, "model": "x-tuned-dpo"}
    )  # fmt: skip
    titles = [ax.get_title() for ax in figures.align_curves(logged).axes]  # wide, as logged: the four DPO curves
    assert titles == ["DPO loss", "reward accuracy", "reward margin", "implicit KL"]
    long = logged.melt(id_vars=["step", "model"], var_name="metric")  # long: the four first, then the others
    assert [ax.get_title() for ax in figures.align_curves(long).axes] == [*titles, "lr"]
    curves = pd.concat(
        [
            pd.DataFrame({"model": "x-tuned", "step": [1, 2], "metric": "loss", "value": [2.0, 1.5]}),
            logged.melt(id_vars=["step", "model"], var_name="metric").replace({"metric": figures.DPO_CURVES}),
        ]
    )
    assert len(figures.plot_curves(curves, colours).axes) == 6  # SFT loss, lr, and the four DPO curves
