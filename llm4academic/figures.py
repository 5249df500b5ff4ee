"""Every figure the notebooks draw (seaborn/matplotlib), so that a notebook cell is one call and the same data is
drawn the same way wherever it appears.

- ``style()``: the seaborn theme with a CJK fallback font (Z-Bench's tags are Chinese); ``palette()``: one colour
  per model, the same in every comparison figure;
- 01 explore: ``plot_mix``, ``plot_sources_languages``, ``plot_length_ecdf``, ``plot_token_lengths``,
  ``plot_leading_verbs``;
- 02 train: ``plot_train_curves``;
- 03 evaluate: ``plot_scorers``, and ``plot_tag_heatmap`` (shared with 04);
- 04 compare: ``plot_leaderboard``, ``plot_splits``, ``plot_tag_heatmap``, ``plot_deltas``, ``plot_length_bias``,
  ``plot_judge``, ``plot_curves``.

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


def palette(kinds: Mapping[str, str], studied: Sequence[str]) -> dict[str, tuple]:
    """One colour per model of ``kinds`` (model → ``study``/``tuned``/``reference``, in display order), the same
    in every figure: studied base models take the colour-blind palette in order, each tuned model a darker shade of
    its base's colour, reference models greys."""
    models = list(kinds)
    bases = [m for m in dict.fromkeys([*studied, *models]) if kinds.get(m) == "study"]
    extra = [m for m in models if kinds.get(m) == "tuned" and m[: -len("-tuned")] not in bases]
    colours = sns.color_palette("colorblind", max(len(bases) + len(extra), 1))
    out: dict[str, tuple] = {}
    for m, c in zip([*bases, *extra], colours, strict=False):  # colours: at least one
        out[m] = tuple(c)
    for m in models:
        if kinds[m] == "tuned" and m not in out:
            base = out.get(m[: -len("-tuned")])
            out[m] = tuple(0.6 * np.asarray(base)) if base is not None else (0.2, 0.2, 0.2)
    greys = np.linspace(0.5, 0.8, len(REFERENCE_MODELS))
    for m in models:
        if kinds[m] == "reference":
            g = float(greys[REFERENCE_MODELS.index(m)]) if m in REFERENCE_MODELS else 0.65
            out[m] = (g, g, g)
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


# --------------------------------------------------------------------------------------------- 02 train


def plot_train_curves(curves: pd.DataFrame):
    """Every logged metric (loss, learning rate, tokens/s …) against the optimizer step, one line per model."""
    g = sns.relplot(
        data=curves,
        x="step",
        y="value",
        hue="model",
        col="metric",
        kind="line",
        height=3.2,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    g.set_titles("{col_name}")
    return g.figure


# --------------------------------------------------------------------------------------------- 03 evaluate


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


# --------------------------------------------------------------------------------------------- 04 compare


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
    """Tuned − base per split with paired CIs; a dashed line at zero."""
    pairs = list(dict.fromkeys(deltas["tuned"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(deltas) + 1.4))
    labels = []
    for i, r in enumerate(deltas.itertuples(index=False)):
        ax.errorbar(
            r.delta,
            i,
            xerr=[[r.delta - r.ci_low], [r.ci_high - r.delta]],
            fmt="o",
            capsize=3,
            color=colours.get(r.tuned, "C0"),
        )
        labels.append(f"{model_label(r.tuned)} · {r.split}")
    ax.axvline(0, ls="--", color="#555555", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("tuned − base, primary score (paired 95 % bootstrap CI)")
    ax.set_title(f"What tuning changed ({len(pairs)} model{'s' if len(pairs) != 1 else ''})")
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
    """Per model: wins/ties/losses against the baseline (both orders) and the judge's order consistency."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.5 * len(agreement) + 1.6))
    y = np.arange(len(agreement))
    left = np.zeros(len(agreement))
    for col, colour in (("wins", "#1a7f37"), ("ties", "#bbbbbb"), ("losses", "#cf222e")):
        share = agreement[col] / agreement["n"]
        a.barh(y, share, left=left, color=colour, label=col)
        left += share.to_numpy()
    labels = [model_label(m) for m in agreement["model"]]
    a.set_yticks(y, labels)
    a.set_xlim(0, 1)
    a.legend(loc="lower right", fontsize=8)
    a.set_title(f"verdicts against {agreement['baseline'].iloc[0]}")
    b.barh(y, agreement["order_consistency"], color=[colours.get(m, "C0") for m in agreement["model"]])
    b.set_yticks(y, labels)
    b.set_xlim(0, 1)
    b.set_title("order consistency (same verdict both orders)")
    fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame, colours: dict[str, tuple]):
    """Loss (and learning rate) against step, one line per trained model, in the comparison's colours."""
    data = curves.assign(label=curves["model"].map(model_label))
    g = sns.relplot(
        data=data,
        x="step",
        y="value",
        hue="label",
        col="metric",
        kind="line",
        height=3.4,
        aspect=1.4,
        facet_kws={"sharey": False},
        palette=label_palette(colours),
    )
    g.set_titles("{col_name}")
    g.set_axis_labels("optimizer step", "")
    return g.figure


# --------------------------------------------------------------------------------------------- text beside the figures


def markdown_list(items: Iterable, code: bool = True) -> str:
    """A Markdown bullet list of ``items`` (paths, findings …), each as inline code unless ``code`` is false."""
    return "\n".join(f"- `{x}`" if code else f"- {x}" for x in items)


def model_names(models: Iterable, paths: bool = False) -> str:
    """The models (``ModelParams`` or names) as inline code, comma-separated; with ``paths``, each path in brackets."""
    return ", ".join(f"`{getattr(m, 'name', m)}`" + (f" ({m.path})" if paths else "") for m in models)
