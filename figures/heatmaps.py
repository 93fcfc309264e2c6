"""Test-error heatmaps, GD vs SAM, after pretraining and after NegGrad unlearning (spec §7 predictions 2, 4, 7)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .registry import SweepResults, register
from .style import HEATMAP_CMAP, OPTIMIZER_LABELS, apply_style, save

PHASES = {"pretrain": ("pretrain_test_error", "after pretraining"), "neggrad": ("test_error", "after NegGrad")}


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
        step = max(1, len(table.columns) // 6)
        ax.set_xticks(np.arange(len(table.columns))[::step] + 0.5)
        ax.set_xticklabels([f"{v:g}" for v in table.columns[::step]], rotation=0)
        ax.set_title(OPTIMIZER_LABELS.get(opt, opt))
        ax.set_xlabel("signal strength ||μ||")
        ax.set_ylabel(y if ax is axes[0] else "")
    n_seeds = df["seed"].nunique()
    fig.suptitle(f"{title} (mean over {n_seeds} seeds; floor p = {floor:g})")
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
