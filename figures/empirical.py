"""Figures of the empirical protocol (``python -m empirical protocol``), rendered from its ``summary.json``.

* ``empirical_avg_tow``: AVG ToW (×100, over the forget sets) per unlearning method, one bar per (pretraining,
  unlearning) optimizer pair — the paper's "SAM as pretrain" and "SAM as unlearn algorithm" comparison;
* ``empirical_tow_by_forget_set``: ToW per forget set (high / mid / low memorization, random), one panel per method.

``python -m figures`` renders them from ``--protocol DIR`` (a protocol folder, or a report folder of
``python -m empirical report``), else from ``results/protocol`` when it exists, else from the committed CPU-scale
results ``docs/results/cpu`` (labelled on the figures: not the paper's setting).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from simulations.errors import ConfigError

from .style import OPTIMIZER_LABELS, apply_style, save

PAIR_COLOURS = {("sgd", "sgd"): "#c0392b", ("sgd", "sam"): "#e67e22", ("sam", "sgd"): "#5dade2",
                ("sam", "sam"): "#1f5fa8", ("asam", "sgd"): "#76b7a0", ("asam", "sam"): "#1e7a5a"}
FORGET_ORDER = ("low", "mid", "high", "random")


def load_summary(folder: Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        summary = json.loads(path.read_text())
        rows, averages = summary["rows"], summary["averages"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the protocol summary {path} ({type(exc).__name__}: {exc}); run "
                          "python -m empirical protocol --out " + str(folder)) from None
    if not rows or not averages:
        raise ConfigError(f"{path} has no runs")
    return summary


def _pair_label(pre: str, opt: str) -> str:
    return f"{OPTIMIZER_LABELS.get(pre, pre.upper())} pretrain → {OPTIMIZER_LABELS.get(opt, opt.upper())} unlearn"


def render_protocol(folder: Path, out_dir: Path) -> list[Path]:
    """Both figures from ``folder/summary.json`` into ``out_dir``."""
    summary = load_summary(folder)
    apply_style()
    averages = summary["averages"]
    methods = list(dict.fromkeys(a["method"] for a in averages))
    pairs = list(dict.fromkeys((a["pretrain"], a["optimizer"]) for a in averages))
    width = 0.8 / len(pairs)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(methods) * max(1, len(pairs) / 2)), 3.6),
                           constrained_layout=True)
    for k, (pre, opt) in enumerate(pairs):
        values = [next((100 * a["avg_tow"] for a in averages if (a["method"], a["pretrain"], a["optimizer"]) ==
                        (m, pre, opt)), np.nan) for m in methods]
        ax.bar(np.arange(len(methods)) + (k - (len(pairs) - 1) / 2) * width, values, width,
               color=PAIR_COLOURS.get((pre, opt)), label=_pair_label(pre, opt))
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylabel("AVG ToW (×100)")
    sets = ", ".join(averages[0]["forget_sets"])
    ax.set_title(f"Unlearning quality over forget sets ({sets}); preset {summary.get('preset', '?')}"
                 + (f"\n{summary['label']}" if summary.get("label") else ""), fontsize=9)
    lows = [100 * a["avg_tow"] for a in averages]
    ax.set_ylim(max(0.0, min(lows) - 5), min(100.0, max(lows) + 3))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    paths = save(fig, out_dir, "empirical_avg_tow")

    rows = summary["rows"]
    forget_sets = [f for f in FORGET_ORDER if any(r["forget"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.0 * len(methods), 3.4), constrained_layout=True,
                             squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for pre, opt in pairs:
            tows = [next((100 * r["tow"] for r in rows if (r["method"], r["pretrain"], r["optimizer"], r["forget"])
                          == (method, pre, opt, f)), np.nan) for f in forget_sets]
            ax.plot(forget_sets, tows, marker="o", color=PAIR_COLOURS.get((pre, opt)), label=_pair_label(pre, opt))
        ax.set_title(method)
        ax.set_xlabel("forget set (memorization)")
    axes[0, 0].set_ylabel("ToW (×100)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncol=2,
               frameon=False)
    if summary.get("label"):
        fig.suptitle(summary["label"], fontsize=9)
    return paths + save(fig, out_dir, "empirical_tow_by_forget_set")
