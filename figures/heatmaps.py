"""Test-error heatmaps, GD vs SAM, after pretraining and after NegGrad unlearning (predictions 2, 4, 7 of
docs/model.md#checkable-predictions)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .registry import SweepResults, register
from .style import HEATMAP_CMAP, OPTIMIZER_LABELS, apply_style, save

PHASES = {"pretrain": ("pretrain_test_error", "after pretraining"), "neggrad": ("test_error", "after NegGrad")}


def premise_table(df, index: str, columns: str = "signal_strength"):
    """Per heatmap cell: True where every seed's pretraining fitted all training samples (the premise of every
    bound; see ``theory.validation.with_premise``)."""
    from theory.validation import with_premise

    flags = with_premise(df)
    return flags.pivot_table(index=index, columns=columns, values="interpolated", aggfunc="all").astype(bool)


def hatch_cells(ax, ok) -> int:
    """Hatch the heatmap cells where ``ok`` (a table laid out like the heatmap) is False; returns their count."""
    from matplotlib.patches import Rectangle

    bad = 0
    for i in range(ok.shape[0]):
        for j in range(ok.shape[1]):
            if not ok.iat[i, j]:
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="0.35", lw=0))
                bad += 1
    return bad


def heatmap_figure(df, y: str, value: str, title: str):
    """Two panels (GD, SAM): mean test error over seeds on (signal strength, ``y``), one shared colour scale."""
    apply_style()
    optimizers = [o for o in ("gd", "sgd", "sam") if o in set(df["optimizer"])]
    floor = float(df["label_flip"].iloc[0])
    fig, axes = plt.subplots(1, len(optimizers), figsize=(5.2 * len(optimizers), 3.6), sharey=True,
                             constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, opt in zip(axes, optimizers):
        table = df[df["optimizer"] == opt].pivot_table(index=y, columns="signal_strength", values=value,
                                                       aggfunc="mean").sort_index(ascending=False)
        sns.heatmap(table, ax=ax, vmin=floor, vmax=0.5, cmap=HEATMAP_CMAP, cbar=ax is axes[-1],
                    cbar_kws={"label": "test error"} if ax is axes[-1] else None)
        ok = premise_table(df[df["optimizer"] == opt], y).reindex(index=table.index, columns=table.columns)
        excluded = hatch_cells(ax, ok.fillna(False))
        step = max(1, len(table.columns) // 6)
        ax.set_xticks(np.arange(len(table.columns))[::step] + 0.5)
        ax.set_xticklabels([f"{v:g}" for v in table.columns[::step]], rotation=0)
        ax.set_title(OPTIMIZER_LABELS.get(opt, opt) + (f" ({excluded} hatched: not interpolated)" if excluded else ""))
        ax.set_xlabel("signal strength ||μ||")
        ax.set_ylabel(y if ax is axes[0] else "")
    n_seeds = df["seed"].nunique()
    fig.suptitle(f"{title} (mean over {n_seeds} seeds; floor p = {floor:g}; hatched cells did not fit every "
                 "training sample: outside the theorems)")
    return fig


def _render(results: SweepResults, out_dir: Path, y: str) -> list[Path]:
    df = results.table()
    paths = []
    for phase, (column, label) in PHASES.items():
        fig = heatmap_figure(df, y, column, f"Test error {label} over (||μ||, {y})")
        paths += save(fig, out_dir, f"heatmap_signal_{y}_{phase}")
    return paths


@register("heatmap_signal_d", "signal_d", "GD vs SAM test error over (signal strength, d), pretraining and NegGrad")
def render_signal_d(results: SweepResults, out_dir: Path) -> list[Path]:
    return _render(results, out_dir, "d")


@register("heatmap_signal_n", "signal_n", "GD vs SAM test error over (signal strength, n), pretraining and NegGrad")
def render_signal_n(results: SweepResults, out_dir: Path) -> list[Path]:
    return _render(results, out_dir, "n")
