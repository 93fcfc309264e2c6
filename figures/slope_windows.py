"""Fitted slope of the GD boundary ||mu||* against the upper end of the window it was fitted on (prediction 2 of
docs/model.md#checkable-predictions):
do the slopes approach +1/4 in d and -1/4 in n as the ranges grow? Reads ``slopes.csv`` of
``python -m theory.widening`` (:func:`theory.widening.run_widening`).

    render_slope_windows("results/widening/slopes.csv", "figures/out")  # -> slope_windows.png, slope_windows.pdf
    render_slope_windows("results/widening/slopes.csv", "figures/out", "slope_windows_sigma0", label="σ₀ = 0.01",
                         others={"σ₀ ∝ 1/√d": "results/widening_sigma0/slopes.csv"})
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import PALETTE, apply_style, save

AXIS_LABELS = {"d": ("dimension d (window upper end)", "slope of log ||μ||* in log d", +0.25),
               "n": ("sample size n (window upper end)", "slope of log ||μ||* in log n", -0.25)}
KINDS = {"expanding": ("o-", PALETTE["gd"], "expanding window [x_min, x]"),
         "sliding": ("s--", "#6c757d", "sliding window (fixed width in log x), by upper end")}
OTHER_COLOURS = ("#1f5fa8", "#2a9d8f", "#e9a03b")


def _draw(ax, part: pd.DataFrame, kind: str, style: str, colour: str, label: str, offset: float) -> None:
    k = part[(part["window"] == kind) & np.isfinite(part["slope"])].sort_values("window_hi")
    if k.empty:
        return
    x = k["window_hi"].to_numpy(float) * offset
    y = k["slope"].to_numpy(float)
    lo = np.where(np.isfinite(k["ci_low"]), y - k["ci_low"], 0.0).clip(min=0)
    hi = np.where(np.isfinite(k["ci_high"]), k["ci_high"] - y, 0.0).clip(min=0)
    ax.errorbar(x, y, yerr=[lo, hi], fmt=style, color=colour, ms=5, capsize=3, lw=1.2, label=label)


def slope_windows_figure(slopes: pd.DataFrame, others: dict[str, pd.DataFrame] | None = None,
                         label: str | None = None, title: str | None = None):
    """Two panels (d, n): slope with its bootstrap CI vs the window's upper end, log x-axis, the theory's ±1/4.

    ``others`` maps a label to another ``slopes.csv`` table (e.g. another sigma_0 rule): its expanding windows are
    drawn too, in their own colour; ``label`` then names the main table in the legend."""
    apply_style()
    others = others or {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), constrained_layout=True)
    for ax, axis in zip(axes, ("d", "n")):
        xlabel, ylabel, theory = AXIS_LABELS[axis]
        part = slopes[slopes["axis"] == axis]
        ticks = sorted(set(part["window_hi"]).union(*(set(o[o["axis"] == axis]["window_hi"]) for o in
                                                      others.values())))
        offsets = np.geomspace(1 / 1.06, 1.06, 2 + len(others))  # side by side where windows end at the same x
        for (kind, (style, colour, text)), off in zip(KINDS.items(), offsets[[0, -1]]):
            _draw(ax, part, kind, style, colour, f"{label}: {text}" if label else text, off)
        for (name, table), colour, off in zip(others.items(), OTHER_COLOURS, offsets[1:-1]):
            _draw(ax, table[table["axis"] == axis], "expanding", "D-", colour, f"{name}: expanding window", off)
        ax.axhline(theory, color="k", ls=":", lw=1.2, label="theory: +1/4 in d, −1/4 in n")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_xscale("log")
        if ticks:
            ax.set_xlim(min(ticks) / 1.35, max(ticks) * 1.35)
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 7 else 0)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"boundary slope in {axis} (theory {'+' if theory > 0 else '−'}1/4, dotted)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2 if others else 3, fontsize=8, frameon=False)
    fig.suptitle(title or "GD boundary ||μ||*: fitted log-log slope as the window widens (95% bootstrap CI over seeds)")
    return fig


def render_slope_windows(slopes_csv: str | Path, out_dir: str | Path, name: str = "slope_windows",
                         others: dict[str, str | Path] | None = None, label: str | None = None,
                         title: str | None = None) -> list[Path]:
    """Read ``slopes.csv`` (and each of ``others``, label -> csv) and write ``out_dir/name.png`` and ``.pdf``."""
    tables = {k: pd.read_csv(v) for k, v in (others or {}).items()}
    return save(slope_windows_figure(pd.read_csv(slopes_csv), tables, label, title), Path(out_dir), name)
