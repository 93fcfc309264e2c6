"""Theory vs simulation (spec §7): the figures behind ``python -m theory validate``, drawn from the same sweeps
(the validation's ``smoke`` preset, run by ``python -m figures`` into ``results/figures/theory_*``).

Each figure names the prediction it tests; the verdicts themselves are in ``python -m theory validate``'s report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from theory.calibration import (
    boundary_from_grid,
    calibrate_sgd_constant,
    fit_power_law,
    noise_change,
    signal_rate,
)
from theory.predictions import sgd_boundary

from .registry import register
from .style import HEATMAP_CMAP, OPTIMIZER_LABELS, PALETTE, apply_style, save

DELTA = 0.05  # a boundary is where the seed-mean error first falls to p + DELTA (as in theory.validation)


def _boundaries(df, along: str, column: str = "pretrain_test_error"):
    p = float(df["label_flip"].iloc[0])
    return {opt: boundary_from_grid(df[df["optimizer"] == opt], by=(along,), threshold=p + DELTA, y=column)
            for opt in ("gd", "sam") if opt in set(df["optimizer"])}


@register("theory_heatmap_boundaries", "theory_heat_d",
          "prediction 2/4: GD and SAM heatmaps with fitted boundaries and the calibrated (C) SGD boundary")
def render_heatmap_boundaries(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    bounds = _boundaries(df, "d")
    gd = bounds["gd"].dropna()
    c1 = calibrate_sgd_constant(gd["boundary"].to_numpy(), gd["d"].to_numpy(), n=int(df["n"].iloc[0]),
                                P=int(df["P"].iloc[0]), sigma_p=float(df["sigma_p"].iloc[0]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True, constrained_layout=True)
    signals = np.sort(df["signal_strength"].unique())
    ds = np.sort(df["d"].unique())[::-1]
    for ax, opt in zip(axes, ("gd", "sam")):
        table = df[df["optimizer"] == opt].pivot_table(index="d", columns="signal_strength",
                                                       values="pretrain_test_error").loc[ds]
        sns.heatmap(table, ax=ax, vmin=0.1, vmax=0.5, cmap=HEATMAP_CMAP, cbar=opt == "sam",
                    cbar_kws={"label": "test error"} if opt == "sam" else None)
        # data coordinates -> heatmap cell coordinates (columns are evenly spaced signal values)
        to_x = lambda s: np.interp(s, signals, np.arange(len(signals)) + 0.5)  # noqa: E731
        rows = {d: i + 0.5 for i, d in enumerate(ds)}
        b = bounds[opt].dropna()
        ax.plot(to_x(b["boundary"]), [rows[d] for d in b["d"]], "o-", color="white", lw=1.5, ms=5,
                label="fitted boundary (error = p + 0.05)")
        if opt == "gd":
            pred = sgd_boundary(ds.astype(float), int(df["n"].iloc[0]), P=int(df["P"].iloc[0]), C1=c1)
            ax.plot(to_x(pred), [rows[d] for d in ds], "--", color="cyan", lw=1.5,
                    label=f"(C): (C1 d P⁴σ_p⁴/n)^¼, C1 = {c1:.3g}")
        ax.set_title(OPTIMIZER_LABELS[opt])
        step = max(1, len(signals) // 6)
        ax.set_xticks(np.arange(len(signals))[::step] + 0.5)
        ax.set_xticklabels([f"{v:g}" for v in signals[::step]], rotation=0)
        ax.set_xlabel("signal strength ||μ||")
        ax.legend(loc="lower right", fontsize=7, facecolor="0.3", labelcolor="white")
    fig.suptitle("Benign/harmful boundary after pretraining: fitted vs predicted (predictions 2, 4)")
    return save(fig, out_dir, "theory_heatmap_boundaries")


@register("theory_boundary_scaling", ("theory_heat_d", "theory_heat_n"),
          "prediction 2/4: boundary ||μ||* vs d and vs n on log axes, fitted slopes vs ±1/4")
def render_boundary_scaling(results, out_dir: Path) -> list[Path]:
    apply_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, (name, along, theory_slope) in zip(axes, (("theory_heat_d", "d", 0.25), ("theory_heat_n", "n", -0.25))):
        df = results[name].table()
        for opt, b in _boundaries(df, along).items():
            b = b.dropna()
            xs, ys = b[along].to_numpy(float), b["boundary"].to_numpy(float)
            slope, pref = fit_power_law(xs, ys)
            ax.loglog(xs, ys, "o", color=PALETTE[opt], label=f"{OPTIMIZER_LABELS[opt]}: fitted slope {slope:+.2f}")
            if np.isfinite(slope):
                grid = np.geomspace(xs.min(), xs.max(), 50)
                ax.loglog(grid, pref * grid**slope, "-", color=PALETTE[opt], lw=1)
        gd = _boundaries(df, along)["gd"].dropna()
        if len(gd):
            x0, y0 = float(gd[along].iloc[0]), float(gd["boundary"].iloc[0])
            grid = np.geomspace(gd[along].min(), gd[along].max(), 50)
            ax.loglog(grid, y0 * (grid / x0) ** theory_slope, "k--", lw=1, label=f"theory slope {theory_slope:+g}")
        ax.set_xlabel(along)
        ax.set_ylabel("boundary ||μ||*")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle("Boundary ||μ||* on log axes: theory says SGD ∝ d^¼ n^-¼ and SAM flat in d and n (predictions 2, 4)")
    return save(fig, out_dir, "theory_boundary_scaling")


@register("theory_signal_surplus", "theory_heat_d",
          "prediction 8 (Lemma 3.4): early signal-learning rate SAM ÷ GD vs ||φ|| on log axes, against slope 2")
def render_signal_surplus(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    d = df["d"].max()
    sel = df[df["d"] == d]
    rates = {}
    for opt in ("gd", "sam"):
        part = sel[sel["optimizer"] == opt]
        r = [signal_rate(results.trajectory(h), 0.0) for h in part["hash"]]
        rates[opt] = part.assign(rate=r).groupby("signal_strength")["rate"].mean()
    ratio = (rates["sam"] / rates["gd"]).dropna()
    ratio = ratio[ratio > 0]
    slope, pref = fit_power_law(ratio.index.to_numpy(float), ratio.to_numpy())
    fig, ax = plt.subplots(figsize=(5, 3.8), constrained_layout=True)
    xs = ratio.index.to_numpy(float)
    ax.loglog(xs, ratio.to_numpy(), "o-", color=PALETTE["sam"], label=f"simulated, slope {slope:+.2f}")
    if len(xs):
        ax.loglog(xs, ratio.iloc[0] * (xs / xs[0]) ** 2, "k--", lw=1, label="Lemma 3.4: slope 2 (reconstruction)")
    ax.set_xlabel("signal strength ||φ||")
    ax.set_ylabel("Δκ per step, SAM ÷ GD (first interval)")
    ax.set_title(f"Signal surplus, d = {d}")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "theory_signal_surplus")


@register("theory_alpha_threshold", "theory_alpha",
          "prediction 9: alpha* (smallest retain weight keeping error <= p + 0.05 after NegGrad) vs d/n")
def render_alpha_threshold(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    p = float(df["label_flip"].iloc[0])
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    top = float(df["alpha"].max())
    for opt in ("gd", "sam"):
        b = boundary_from_grid(df[df["optimizer"] == opt], x="alpha", by=("d",), threshold=p + DELTA)
        ratio = b["d"] / df["n"].iloc[0]
        reached = b["boundary"].notna()
        ax.semilogx(ratio[reached], b["boundary"][reached], "o-", color=PALETTE[opt], label=OPTIMIZER_LABELS[opt])
        ax.semilogx(ratio[~reached], np.full((~reached).sum(), top + 0.05), "x", color=PALETTE[opt], ms=8,
                    label=f"{OPTIMIZER_LABELS[opt]}: none on the grid" if (~reached).any() else None)
    ax.set_xlabel("d / n")
    ax.set_ylabel("α*")
    ax.set_title(f"α* after NegGrad, ||φ|| = {df['signal_strength'].iloc[0]:g}")
    ax.legend(fontsize=8)
    return save(fig, out_dir, "theory_alpha_threshold")


@register("theory_lemma_3_1", "theory_lemma",
          "prediction 6 (Lemma 3.1): change of max noise coefficient on F and on R during NegGrad, SAM vs GD")
def render_lemma_3_1(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    steps = int(df["steps"].iloc[0])
    rows = []
    for _, run in df.iterrows():
        t = results.trajectory(run["hash"])
        for side in ("forget", "retain"):
            rows.append({"opt": run["unlearn_optimizer"], "side": side, "signal": run["signal_strength"],
                         "change": noise_change(t, steps, side)})
    import pandas as pd

    table = pd.DataFrame(rows).groupby(["side", "opt", "signal"])["change"].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, constrained_layout=True)
    for ax, side in zip(axes, ("forget", "retain")):
        for opt in ("gd", "sam"):
            part = table[(table["side"] == side) & (table["opt"] == opt)]
            ax.plot(part["signal"], part["change"], "o-", color=PALETTE[opt], label=f"NegGrad with {opt.upper()}")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_title(f"{'forget set F' if side == 'forget' else 'retain set R'}")
        ax.set_xlabel("signal strength ||φ||")
        ax.set_ylabel("Δ max ζ̄ during unlearning")
        ax.legend(fontsize=8)
    fig.suptitle("Lemma 3.1: on F, SAM-NegGrad should move noise coefficients like SGD; on R it should not")
    return save(fig, out_dir, "theory_lemma_3_1")


@register("theory_sharp_minmax", ("theory_minmax", "theory_heat_d"),
          "prediction 11: Sharp MinMax vs SAM-NegGrad vs GD-NegGrad: test error and forget accuracy vs ||φ||")
def render_sharp_minmax(results, out_dir: Path) -> list[Path]:
    apply_style()
    mm, hd = results["theory_minmax"].table(), results["theory_heat_d"].table()
    d = hd["d"].max()
    curves = {"Sharp MinMax (SAM-pretrained)": (mm[mm["d"] == d], "#2a9d8f"),
              "SAM-NegGrad": (hd[(hd["d"] == d) & (hd["optimizer"] == "sam")], PALETTE["sam"]),
              "GD-NegGrad": (hd[(hd["d"] == d) & (hd["optimizer"] == "gd")], PALETTE["gd"])}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for label, (part, colour) in curves.items():
        g = part.groupby("signal_strength")[["test_error", "forget_acc"]].mean()
        axes[0].plot(g.index, g["test_error"], "o-", color=colour, label=label, ms=3)
        axes[1].plot(g.index, g["forget_acc"], "o-", color=colour, label=label, ms=3)
    axes[0].set_ylabel("test error after unlearning")
    axes[1].set_ylabel("forget accuracy (observed label)")
    for ax in axes:
        ax.set_xlabel("signal strength ||φ||")
        ax.legend(fontsize=8)
    fig.suptitle(f"Sharp MinMax vs NegGrad at d = {d} (prediction 11)")
    return save(fig, out_dir, "theory_sharp_minmax")
