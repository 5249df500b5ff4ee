"""Every figure the notebooks draw (seaborn/matplotlib), so that a notebook cell is one call and the same data is
drawn the same way wherever it appears.

- ``style()``: the seaborn theme with a CJK fallback font (Z-Bench's tags are Chinese); ``palette()``: one colour
  per model, the same in every comparison figure (one hue per foundation model, a shade per stage);
- 01 explore: ``plot_mix``, ``plot_sources_languages``, ``plot_length_ecdf``, ``plot_token_lengths``,
  ``plot_leading_verbs``; 02 train: ``plot_train_curves``; 03 align: ``align_curves``;
- 04 evaluate: ``plot_scorers``, and ``plot_tag_heatmap`` (shared with 05);
- 05 compare: ``plot_leaderboard``, ``plot_splits``, ``plot_tag_heatmap``, ``plot_stages``, ``plot_deltas``,
  ``plot_length_bias``, ``plot_judge``, ``plot_curves``.

Each function returns its Figure (or the Axes it drew on, for ``plot_leaderboard``); the notebook shows it. Two
text helpers put lists beside the figures without a loop in a cell: ``markdown_list`` and ``model_names``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager

from .rundir import STAGES, lineage
from .scoring import OVERALL
from .zbench import REFERENCE_MODELS, SPLITS, model_label

CJK_FONTS: tuple[str, ...] = (
    "WenQuanYi Micro Hei",
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
)


# --------------------------------------------------------------------------------------------- theme and colours


def style() -> list[str]:
    """Seaborn theme for the kit's figures, with a CJK fallback font (Z-Bench's tags are Chinese). A CJK font
    installed after matplotlib built its font cache (``scripts/install-system-deps`` adds Debian's
    fonts-wqy-microhei) is added from disk. Returns the CJK fonts in use; without one, tags draw as boxes and the
    missing-glyph warnings are silenced (the notebook says so instead)."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not any(n in names for n in CJK_FONTS):
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in ("wqy", "notosanscjk", "sourcehansans")):
                font_manager.fontManager.addfont(path)
        names = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [n for n in CJK_FONTS if n in names]
    sns.set_theme(
        style="whitegrid",
        context="notebook",
        rc={
            "font.family": ["DejaVu Sans", *cjk, "sans-serif"],  # matplotlib falls back glyph by glyph
            "axes.unicode_minus": False,
        },
    )
    if not cjk:
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    return cjk


SHADES: dict[str, float] = {"sft": 0.6, "sft+dpo": 0.35, "dpo": -0.45}  # × the base colour; negative: toward white


def palette(kinds: Mapping[str, str], studied: Sequence[str]) -> dict[str, tuple]:
    """One colour per model of ``kinds`` (model → ``study``/``tuned``/``dpo``/``tuned-dpo``/``reference``, in display
    order), the same in every figure: one hue per foundation model (the colour-blind palette, in order), its SFT model
    a darker shade, SFT+DPO darker still, DPO straight from the base a lighter tint (``SHADES``, by
    ``rundir.lineage``); reference models greys."""
    models = list(kinds)
    studied_models = [m for m in dict.fromkeys([*studied, *models]) if kinds.get(m) not in (None, "reference")]
    roots = list(dict.fromkeys(lineage(m)[0] for m in studied_models))
    hue = dict(zip(roots, sns.color_palette("colorblind", max(len(roots), 1)), strict=False))
    greys = dict(zip(REFERENCE_MODELS, np.linspace(0.5, 0.8, len(REFERENCE_MODELS)), strict=True))
    out: dict[str, tuple] = {}
    for m in models:
        if kinds[m] == "reference":
            out[m] = (float(greys.get(m, 0.65)),) * 3
            continue
        root, stage = lineage(m)
        c, f = np.asarray(hue[root]), SHADES.get(stage, 1.0)
        out[m] = tuple(float(v) for v in (c * f if f > 0 else c - f * (1 - c)))
    return out


def label_palette(colours: dict[str, tuple]) -> dict[str, tuple]:
    """The same colours keyed by display label."""
    return {model_label(m): c for m, c in colours.items()}


# --------------------------------------------------------------------------------------------- 01 explore


def plot_mix(draws: pd.DataFrame, records: int, seed: int):
    """Per source: records available after cleaning and taken into the mix."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    sns.barplot(
        data=draws.melt(id_vars="source", value_vars=["available", "taken"], var_name="", value_name="records"),
        x="source",
        y="records",
        hue="",
        ax=ax,
    )
    ax.set_title(f"Training mix: {records:,} records (seed {seed})")
    return fig


def plot_sources_languages(per_source: pd.DataFrame, langs: pd.DataFrame):
    """Left: records per source; right: the language share within each source."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    sns.barplot(data=per_source, x="source", y="records", hue="source", legend=False, ax=axes[0])
    axes[0].set_title(f"Records per source ({int(per_source['records'].sum()):,} in all)")
    sns.barplot(data=langs, x="source", y="share", hue="language", ax=axes[1])
    axes[1].set_title("Language share within each source")
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    return fig


def plot_length_ecdf(chars: pd.DataFrame):
    """ECDF (log scale) of each field's length in characters per source; empty fields left out."""
    g = sns.displot(
        data=chars[chars["chars"] > 0],
        x="chars",
        hue="source",
        col="field",
        kind="ecdf",
        log_scale=True,
        height=3.4,
        aspect=1.1,
    )
    g.set_titles("{col_name}")
    return g.figure


def plot_token_lengths(tokens: pd.DataFrame):
    """Box plots of each field's length in tokens per source, one panel per model's tokenizer."""
    g = sns.catplot(
        data=tokens,
        x="field",
        y="tokens",
        hue="source",
        col="model",
        kind="box",
        showfliers=False,
        height=3.6,
        aspect=1.2,
    )
    g.set_titles("{col_name}")
    return g.figure


def plot_leading_verbs(verbs: pd.DataFrame):
    """The most common first words of English instructions and their first content words."""
    fig, ax = plt.subplots(figsize=(9, max(3, 0.22 * len(verbs))))
    sns.barplot(
        data=verbs.assign(pair=verbs["verb"] + " · " + verbs["object"]),
        y="pair",
        x="records",
        hue="verb",
        legend=False,
        ax=ax,
    )
    ax.set_title("Most common first words (verbs) and their first content words")
    ax.set_ylabel("")
    return fig


# --------------------------------------------------------------------------------------------- 02 train, 03 align


def plot_train_curves(curves: pd.DataFrame):
    """Every logged metric (loss, learning rate, tokens/s …) against the optimizer step, one line per model."""
    return _lines(curves, hue="model", aspect=1.2)


def _lines(data: pd.DataFrame, *, hue: str | None, xlabel: str = "step", wrap: int | None = None, **kw):
    """``value`` against ``step``, one panel per ``metric`` (each on its own scale), one line per ``hue``."""
    g = sns.relplot(data=data, x="step", y="value", hue=hue, col="metric", col_wrap=wrap, kind="line",
                    facet_kws={"sharey": False, "sharex": False}, **{"height": 3.2, "aspect": 1.4, **kw})  # fmt: skip
    g.set_titles("{col_name}")
    g.set_axis_labels(xlabel, "")
    return g.figure


DPO_CURVES: dict[str, str] = {  # the align step's metrics (RunDir.read_align_metrics) → their names in figures
    "loss": "DPO loss",
    "rewards/accuracies": "reward accuracy",
    "rewards/margins": "reward margin",
    "kl/implicit": "implicit KL",
}


def align_curves(frame: pd.DataFrame):
    """The DPO runs' curves against the DPO step, one panel each: DPO loss, reward accuracy (the share of pairs whose
    chosen answer the policy rewards above the rejected one), reward margin and implicit KL first (``DPO_CURVES``),
    then any other metric of a long ``frame`` (``model, step, metric, value``: metrics named as
    ``RunDir.read_align_metrics`` logs them, e.g. ``logps/chosen``, ``lr``). A wide ``frame`` (the metrics as logged:
    ``step`` and metric columns, ``model`` optional) draws the four ``DPO_CURVES``."""
    if "metric" not in frame.columns:
        ids = ["step", *(["model"] if "model" in frame.columns else [])]
        frame = frame.melt(id_vars=ids, value_vars=[m for m in DPO_CURVES if m in frame.columns], var_name="metric")
    data = frame.assign(metric=frame["metric"].map(lambda m: DPO_CURVES.get(m, m))).dropna(subset=["value"])
    named = [v for v in DPO_CURVES.values() if v in set(data["metric"])]
    order = [*named, *sorted(set(data["metric"]) - set(named))]
    hue = "model" if "model" in data.columns else None
    wrap = 4 if len(order) > 4 else 2
    return _lines(data, hue=hue, xlabel="DPO step", wrap=wrap, col_order=order, height=3, aspect=1.4)


# --------------------------------------------------------------------------------------------- 04 evaluate


def plot_scorers(summary: pd.DataFrame):
    """Overall mean score per model, one panel per scorer, models best first (mean over the scorers)."""
    overall = summary[summary["split"] == OVERALL].copy()
    overall["model"] = overall["model"].map(model_label)
    g = sns.catplot(
        data=overall,
        y="model",
        x="score",
        col="scorer",
        kind="bar",
        height=4.2,
        aspect=0.8,
        order=overall.groupby("model")["score"].mean().sort_values(ascending=False).index,
    )
    g.set(xlim=(0, 1))
    g.set_titles("{col_name}")
    return g.figure


def plot_tag_heatmap(matrix: pd.DataFrame, max_tags: int = 40):
    """Models × tags heatmap of mean primary scores (the ``max_tags`` tags with the most scored cells)."""
    cols = matrix.notna().sum().sort_values(ascending=False).index[:max_tags]
    mat = matrix[cols]
    mat.index = mat.index.map(model_label)
    fig, ax = plt.subplots(figsize=(min(24, 0.42 * mat.shape[1] + 4), 0.38 * mat.shape[0] + 2.2))
    sns.heatmap(
        mat,
        cmap="viridis",
        vmin=0,
        vmax=1,
        ax=ax,
        cbar_kws={"label": "mean primary score"},
        linewidths=0.3,
        linecolor="white",
    )
    ax.set_xlabel("Z-Bench task tag")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- 05 compare


def plot_leaderboard(board: pd.DataFrame, colours: dict[str, tuple], split: str = OVERALL, ax=None):
    """Horizontal bars of one split's scores with CI whiskers, best on top, in each model's colour."""
    part = board[board["split"] == split].sort_values("score", ascending=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.32 * len(part) + 1.4))
    y = np.arange(len(part))
    ax.barh(
        y,
        part["score"],
        color=[colours.get(m, (0.6, 0.6, 0.6)) for m in part["model"]],
        edgecolor=["black" if k != "reference" else "none" for k in part["kind"]],
    )
    ax.errorbar(
        part["score"],
        y,
        xerr=[part["score"] - part["ci_low"], part["ci_high"] - part["score"]],
        fmt="none",
        ecolor="#333333",
        elinewidth=1,
        capsize=2,
    )
    ax.set_yticks(
        y,
        [
            f"{model_label(m)}{'  ★' if k != 'reference' else ''}"
            for m, k in zip(part["model"], part["kind"], strict=True)
        ],
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("primary score (95 % bootstrap CI)")
    ax.set_title(f"Z-Bench {split}: studied models (★) next to the reference models")
    return ax


def plot_splits(board: pd.DataFrame, colours: dict[str, tuple], models: Sequence[str] | None = None):
    """Per split, the score of each model (points with CI bars), models in overall order."""
    order = board[board["split"] == OVERALL].sort_values("score", ascending=False)["model"].tolist()
    if models is not None:
        order = [m for m in order if m in set(models)]
    splits = [s for s in [*SPLITS, OVERALL] if s in set(board["split"])]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.2 * len(splits) + 1.5, 0.3 * len(order) + 1.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits, strict=True):
        part = board[board["split"] == split].set_index("model").reindex(order)
        y = np.arange(len(order))[::-1]
        for yi, (m, r) in zip(y, part.iterrows(), strict=True):
            if not math.isnan(r["score"]):
                ax.errorbar(
                    r["score"],
                    yi,
                    xerr=[[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]],
                    fmt="o",
                    color=colours.get(m, (0.5, 0.5, 0.5)),
                    ms=5,
                    capsize=2,
                )
        ax.set_title(split)
        ax.set_xlim(-0.02, 1.02)
        ax.set_yticks(y, [model_label(m) for m in order])
    fig.supxlabel("primary score (95 % bootstrap CI)")
    fig.tight_layout()
    return fig


def plot_deltas(deltas: pd.DataFrame, colours: dict[str, tuple]):
    """After − before for each lineage step (base→sft, sft→sft+dpo, base→sft+dpo, base→dpo: ``compare.tuning_deltas``)
    per split, with paired CIs, in the colour of the model after the step; a dashed line at zero."""
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(deltas) + 1.4))
    labels = []
    for i, r in enumerate(deltas.itertuples(index=False)):
        err = [[r.delta - r.ci_low], [r.ci_high - r.delta]]
        ax.errorbar(r.delta, i, xerr=err, fmt="o", capsize=3, color=colours.get(r.tuned, "C0"))
        labels.append(f"{model_label(r.foundation)} {r.step} · {r.split}")
    ax.axvline(0, ls="--", color="#555555", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("after − before, primary score (paired 95 % bootstrap CI)")
    ax.set_title(f"What each tuning step changed ({deltas['tuned'].nunique()} tuned model(s))")
    fig.tight_layout()
    return fig


STAGE_PATHS: tuple[tuple[str, ...], ...] = (("base", "sft", "sft+dpo"), ("base", "dpo"))  # lines in plot_stages


def plot_stages(stages: pd.DataFrame, colours: dict[str, tuple]):
    """Base → SFT → DPO per foundation model: each studied model's score with its CI at its stage
    (``compare.stage_scores``), one foundation model's stages joined along base → SFT → SFT+DPO and base → DPO."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    x = {stage: i for i, stage in enumerate(STAGES)}
    for foundation, part in stages.groupby("foundation", sort=False):
        by = part.set_index("stage")
        for path in STAGE_PATHS:
            on = [st for st in path if st in by.index]
            if len(on) > 1:
                ax.plot([x[st] for st in on], by.loc[on, "score"], color=colours.get(by.at[on[-1], "model"]), lw=1)
        for st, r in by.iterrows():
            err = [[r["score"] - r["ci_low"]], [r["ci_high"] - r["score"]]]
            ax.errorbar(x[st], r["score"], yerr=err, fmt="o", capsize=3, color=colours.get(r["model"], "C0"))
        last = (x[by.index[-1]], by["score"].iloc[-1])
        ax.annotate(model_label(foundation), last, xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(range(len(STAGES)), ["base", "SFT", "DPO", "SFT+DPO"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("primary score (95 % bootstrap CI)")
    ax.set_title("Base → SFT → DPO per foundation model")
    fig.tight_layout()
    return fig


def plot_length_bias(primary: pd.DataFrame, lengths: pd.DataFrame, colours: dict[str, tuple]):
    """Left: answer length per model (box plot, log scale). Right: score against length, every answer."""
    joined = primary.merge(lengths, on=["model", "item_id"], how="inner")
    joined["label"] = joined["model"].map(model_label)
    lab_colours = label_palette(colours)
    order = joined.groupby("label")["chars"].median().sort_values().index.tolist()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.3 * len(order) + 2.2), gridspec_kw={"width_ratios": [1, 1.2]})
    sns.boxplot(
        data=joined,
        y="label",
        x=joined["chars"].clip(lower=1),
        hue="label",
        order=order,
        palette=lab_colours,
        ax=a,
        legend=False,
        fliersize=2,
    )
    a.set_xscale("log")
    a.set_xlabel("answer length (characters, log)")
    a.set_ylabel("")
    sns.stripplot(
        data=joined,
        x=joined["chars"].clip(lower=1),
        y="score",
        hue="label",
        palette=lab_colours,
        ax=b,
        native_scale=True,
        jitter=False,
        alpha=0.6,
        size=4,
        legend=False,
    )
    b.set_xscale("log")
    b.set_xlabel("answer length (characters, log)")
    b.set_ylabel("primary score")
    fig.tight_layout()
    return fig


def plot_judge(agreement: pd.DataFrame, colours: dict[str, tuple]):
    """Per model and baseline (the configured one; a DPO model's start model): wins/ties/losses in both orders and
    the judge's order consistency."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.5 * len(agreement) + 1.6))
    y = np.arange(len(agreement))
    left = np.zeros(len(agreement))
    for col, colour in (("wins", "#1a7f37"), ("ties", "#bbbbbb"), ("losses", "#cf222e")):
        share = agreement[col] / agreement["n"]
        a.barh(y, share, left=left, color=colour, label=col)
        left += share.to_numpy()
    baselines = list(dict.fromkeys(agreement["baseline"]))
    labels = [model_label(m) for m in agreement["model"]]
    if len(baselines) > 1:
        labels = [f"{m} vs {model_label(v)}" for m, v in zip(labels, agreement["baseline"], strict=True)]
    a.set_yticks(y, labels)
    a.set_xlim(0, 1)
    a.legend(loc="lower right", fontsize=8)
    a.set_title(f"verdicts against {baselines[0]}" if len(baselines) == 1 else "verdicts (both orders)")
    b.barh(y, agreement["order_consistency"], color=[colours.get(m, "C0") for m in agreement["model"]])
    b.set_yticks(y, labels)
    b.set_xlim(0, 1)
    b.set_title("order consistency (same verdict both orders)")
    fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame, colours: dict[str, tuple]):
    """Every logged curve against its step (SFT loss and learning rate; DPO loss, reward accuracy, reward margin,
    implicit KL: ``compare.training_curves``), one line per tuned model, in the comparison's colours."""
    data = curves.assign(label=curves["model"].map(model_label))
    wrap = 3 if data["metric"].nunique() > 3 else None
    return _lines(data, hue="label", wrap=wrap, palette=label_palette(colours))


# --------------------------------------------------------------------------------------------- text beside the figures


def markdown_list(items: Iterable, code: bool = True) -> str:
    """A Markdown bullet list of ``items`` (paths, findings …), each as inline code unless ``code`` is false."""
    return "\n".join(f"- `{x}`" if code else f"- {x}" for x in items)


def model_names(models: Iterable, paths: bool = False) -> str:
    """The models (``ModelParams`` or names) as inline code, comma-separated; with ``paths``, each path in brackets."""
    return ", ".join(f"`{getattr(m, 'name', m)}`" + (f" ({m.path})" if paths else "") for m in models)
