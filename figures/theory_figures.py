"""Theory vs simulation: the figures behind ``python -m theory validate``, drawn from the same sweeps (the
validation's ``smoke`` preset, run by ``python -m figures`` into ``results/figures/theory_*``).

Every boundary here is computed, as in the report, on the cells whose pretraining fitted every training sample (the
premise of every bound); the other cells are hatched or left out and counted. Each figure names the prediction it
tests; the verdicts themselves are in ``python -m theory validate``'s report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from theory.calibration import boundary_from_grid, calibrate_sgd_constant, fit_power_law, gate_cells, signal_rate
from theory.predictions import sgd_boundary
from theory.validation import non_monotone, with_premise

from .heatmaps import hatch_cells, premise_table
from .registry import register
from .style import HEATMAP_CMAP, OPTIMIZER_LABELS, PALETTE, apply_style, save

DELTA = 0.05  # a boundary is where the seed-mean error first falls to p + DELTA (as in theory.validation)
LEGEND_BELOW = dict(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)


def _used(df: pd.DataFrame, along: str) -> tuple[pd.DataFrame, int]:
    df = with_premise(df)
    used, _, excluded = gate_cells(df, ["optimizer", along, "signal_strength"], df["interpolated"])
    return used, excluded


def _boundaries(df, along: str, column: str = "pre_test_error"):
    p = float(df["label_flip"].iloc[0])
    return {opt: boundary_from_grid(df[df["optimizer"] == opt], by=(along,), threshold=p + DELTA, y=column)
            for opt in ("gd", "sam") if opt in set(df["optimizer"])}


def _log_ticks(ax) -> None:
    """Plain-number tick labels on the log axes of ``ax``, with labelled 2x and 5x ticks so that an axis spanning
    less than a decade still has labels."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_locator(matplotlib.ticker.LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))


@register("theory_heatmap_boundaries", "theory_heat_d",
          "prediction 2/4: GD and SAM heatmaps with fitted boundaries and the calibrated (C) SGD boundary")
def render_heatmap_boundaries(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = with_premise(results.table())
    used, _ = _used(df, "d")
    bounds = _boundaries(used, "d")
    gd = bounds["gd"].dropna()
    c1 = calibrate_sgd_constant(gd["boundary"].to_numpy(), gd["d"].to_numpy(), n=int(df["n"].iloc[0]),
                                P=int(df["P"].iloc[0]), sigma_p=float(df["sigma_p"].iloc[0]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, constrained_layout=True)
    signals = np.sort(df["signal_strength"].unique())
    ds = np.sort(df["d"].unique())[::-1]
    for ax, opt in zip(axes, ("gd", "sam")):
        part = df[df["optimizer"] == opt]
        table = part.pivot_table(index="d", columns="signal_strength", values="pre_test_error").loc[ds]
        sns.heatmap(table, ax=ax, vmin=0.1, vmax=0.5, cmap=HEATMAP_CMAP, cbar=opt == "sam",
                    cbar_kws={"label": "test error"} if opt == "sam" else None)
        hatched = hatch_cells(ax, premise_table(part, "d").reindex(index=ds, columns=table.columns).fillna(False))
        to_x = lambda s: np.interp(s, signals, np.arange(len(signals)) + 0.5)  # noqa: E731
        rows = {d: i + 0.5 for i, d in enumerate(ds)}
        b = bounds[opt].dropna()
        wobbly = non_monotone(used[used["optimizer"] == opt]) if opt == "sam" else []
        b = b[~b["d"].isin(wobbly)]  # a boundary is a threshold only where the error falls monotonically
        ax.plot(to_x(b["boundary"]), [rows[d] for d in b["d"]], "o-", color="white", mec="k", lw=1.5, ms=5,
                label="fitted boundary (error = p + 0.05)")
        if opt == "gd" and np.isfinite(c1):
            pred = sgd_boundary(ds.astype(float), int(df["n"].iloc[0]), P=int(df["P"].iloc[0]), C1=c1)
            ax.plot(to_x(pred), [rows[d] for d in ds], "--", color="cyan", lw=1.5,
                    label=f"(C): (C1 d P⁴σ_p⁴/n)^¼, C1 = {c1:.3g}")
        notes = [f"{hatched} cells hatched: not interpolated"] if hatched else []
        if wobbly:
            notes.append(f"no boundary drawn at d = {', '.join(map(str, wobbly))}: error not monotone in ||μ||")
        ax.set_title(OPTIMIZER_LABELS[opt] + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
        step = max(1, len(signals) // 6)
        ax.set_xticks(np.arange(len(signals))[::step] + 0.5)
        ax.set_xticklabels([f"{v:g}" for v in signals[::step]], rotation=0)
        ax.set_xlabel("signal strength ||μ||")
        ax.legend(**LEGEND_BELOW)
    fig.suptitle("Benign/harmful boundary after pretraining: fitted vs predicted (predictions 2, 4)")
    return save(fig, out_dir, "theory_heatmap_boundaries")


@register("theory_boundary_scaling", ("theory_heat_d", "theory_heat_n"),
          "prediction 2/4: boundary ||μ||* vs d and vs n on log axes, fitted slopes vs ±1/4")
def render_boundary_scaling(results, out_dir: Path) -> list[Path]:
    apply_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, (name, along, theory_slope) in zip(axes, (("theory_heat_d", "d", 0.25), ("theory_heat_n", "n", -0.25))):
        used, excluded = _used(results[name].table(), along)
        bounds = _boundaries(used, along)
        for opt, b in bounds.items():
            if opt == "sam":
                b = b[~b[along].isin(non_monotone(used[used["optimizer"] == "sam"], along))]
            b = b.dropna()
            xs, ys = b[along].to_numpy(float), b["boundary"].to_numpy(float)
            slope, pref = fit_power_law(xs, ys)
            ax.loglog(xs, ys, "o", color=PALETTE[opt], label=f"{OPTIMIZER_LABELS[opt]}: fitted slope {slope:+.2f}")
            if np.isfinite(slope):
                grid = np.geomspace(xs.min(), xs.max(), 50)
                ax.loglog(grid, pref * grid**slope, "-", color=PALETTE[opt], lw=1)
        gd = bounds["gd"].dropna()
        if len(gd):
            x0, y0 = float(gd[along].iloc[0]), float(gd["boundary"].iloc[0])
            grid = np.geomspace(gd[along].min(), gd[along].max(), 50)
            ax.loglog(grid, y0 * (grid / x0) ** theory_slope, "k--", lw=1, label=f"theory slope {theory_slope:+g}")
        ax.set_xlabel(along)
        ax.set_ylabel("boundary ||μ||*")
        ax.set_title(f"{excluded} non-interpolating cells left out" if excluded else "all cells interpolate",
                     fontsize=9)
        _log_ticks(ax)
        ax.legend(**LEGEND_BELOW)
    fig.suptitle("Boundary ||μ||* on log axes: theory says SGD ∝ d^¼ n^-¼ and SAM flat in d and n (predictions 2, 4)")
    return save(fig, out_dir, "theory_boundary_scaling")


def _scratch_rates(results) -> pd.DataFrame:
    df = results.table()
    rates = [signal_rate(results.trajectory(h), 0.0) for h in df["hash"]]
    return df.assign(rate=rates).groupby(["unlearn_optimizer", "signal_strength"])["rate"].mean().unstack(0)


@register("theory_signal_surplus", "theory_scratch",
          "prediction 8 (Lemma 3.4): early Δκ per step, SAM − GD (the surplus) and SAM ÷ GD, vs ||φ|| on log axes")
def render_signal_surplus(results, out_dir: Path) -> list[Path]:
    apply_style()
    m = _scratch_rates(results)
    diff = (m["sam"] - m["gd"]).dropna()
    diff = diff[diff > 0]
    ratio = (m["sam"] / m["gd"]).dropna()
    ratio = ratio[ratio > 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    for ax, series, label, ref in ((axes[0], diff, "Δκ_SAM − Δκ_GD per step (the surplus)", 2),
                                   (axes[1], ratio, "Δκ_SAM ÷ Δκ_GD (read-out)", 0)):
        xs = series.index.to_numpy(float)
        slope, _ = fit_power_law(xs, series.to_numpy())
        ax.loglog(xs, series.to_numpy(), "o-", color=PALETTE["sam"], label=f"simulated, slope {slope:+.2f}")
        if len(xs):
            ax.loglog(xs, series.iloc[0] * (xs / xs[0]) ** ref, "k--", lw=1,
                      label=f"slope {ref} ({'Lemma 3.4' if ref else 'O(1), derived'})")
        ax.set_xlabel("signal strength ||φ||")
        ax.set_ylabel(label)
        _log_ticks(ax)
        ax.legend(**LEGEND_BELOW)
    d = int(results.table()["d"].iloc[0])
    fig.suptitle(f"Signal surplus early in NegGrad from initialisation, d = {d} (prediction 8)")
    return save(fig, out_dir, "theory_signal_surplus")


@register("theory_alpha_threshold", "theory_alpha",
          "prediction 9: alpha* (smallest retain weight keeping error <= p + 0.05 after NegGrad) vs d/n")
def render_alpha_threshold(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = with_premise(results.table())
    p = float(df["label_flip"].iloc[0])
    fig, ax = plt.subplots(figsize=(5.2, 4.4), constrained_layout=True)
    top = float(df["alpha"].max())
    before = df.groupby(["d", "optimizer"])["pre_test_error"].mean().unstack()
    benign = [d for d in before.index if (before.loc[d] <= p + DELTA).all()]
    for opt in ("gd", "sam"):
        part = df[(df["optimizer"] == opt) & df["d"].isin(benign)]
        b = boundary_from_grid(part, x="alpha", by=("d",), threshold=p + DELTA)
        ratio = b["d"] / df["n"].iloc[0]
        reached = b["boundary"].notna()
        ax.semilogx(ratio[reached], b["boundary"][reached], "o-", color=PALETTE[opt], label=OPTIMIZER_LABELS[opt])
        ax.semilogx(ratio[~reached], np.full((~reached).sum(), top + 0.05), "x", color=PALETTE[opt], ms=8,
                    label=f"{OPTIMIZER_LABELS[opt]}: none on the grid" if (~reached).any() else None)
    ax.set_xlabel("d / n")
    ax.set_ylabel("α*")
    _log_ticks(ax)
    left_out = sorted(set(before.index) - set(benign))
    ax.set_title(f"α* after NegGrad, ||φ|| = {df['signal_strength'].iloc[0]:g}" +
                 (f"\nd = {', '.join(map(str, left_out))} left out: pretrained model not benign" if left_out else ""),
                 fontsize=9)
    ax.legend(**LEGEND_BELOW)
    return save(fig, out_dir, "theory_alpha_threshold")


@register("theory_lemma_3_1", "theory_scratch",
          "prediction 6 (Lemma 3.1): own-class noise neurons active at W+ε on R and on F during NegGrad, SAM vs GD")
def render_lemma_3_1(results, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True, constrained_layout=True)
    for ax, side in zip(axes, ("retain", "forget")):
        for opt in ("gd", "sam"):
            trajs = [results.trajectory(h) for h in df[df["unlearn_optimizer"] == opt]["hash"]]
            steps = trajs[0]["step"]
            mean = np.mean([t[f"active_noise_fraction_{side}"] for t in trajs], axis=0)
            ax.plot(steps, mean, "o-", ms=3, color=PALETTE[opt],
                    label=f"NegGrad with {OPTIMIZER_LABELS[opt]} ({'at W+ε' if opt == 'sam' else 'at W'})")
        ax.set_title(f"{'retain set R' if side == 'retain' else 'forget set F'}")
        ax.set_xlabel("NegGrad step (from initialisation)")
        ax.set_ylabel("fraction of own-class noise neurons active")
        ax.legend(**LEGEND_BELOW)
    fig.suptitle("Lemma 3.1: SAM's perturbation switches off R's noise neurons but not F's (prediction 6)")
    return save(fig, out_dir, "theory_lemma_3_1")


@register("theory_sharp_minmax", ("theory_samax", "theory_minmax", "theory_heat_d"),
          "prediction 11: sharpness maximisation vs GD as the training optimizer (boundary over d); Sharp MinMax vs "
          "SAM-NegGrad forget accuracy")
def render_sharp_minmax(results, out_dir: Path) -> list[Path]:
    apply_style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    sx, excluded = _used(results["theory_samax"].table(), "d")
    for opt, b in _boundaries(sx, "d").items():
        b = b.dropna()
        label = "SAM-max (sam_sign=max)" if opt == "sam" else "GD"
        axes[0].loglog(b["d"], b["boundary"], "o-", color="#2a9d8f" if opt == "sam" else PALETTE["gd"], label=label)
    axes[0].set_xlabel("d")
    axes[0].set_ylabel("boundary ||μ||* (pretraining)")
    axes[0].set_title("the remark: sharpness maximisation needs a larger ||μ||" +
                      (f"\n{excluded} non-interpolating cells left out" if excluded else ""), fontsize=9)
    _log_ticks(axes[0])
    mm, hd = results["theory_minmax"].table(), results["theory_heat_d"].table()
    d = hd["d"].max()
    for label, part, colour in (("Sharp MinMax (SAM-pretrained)", mm[mm["d"] == d], "#2a9d8f"),
                                ("SAM-NegGrad", hd[(hd["d"] == d) & (hd["optimizer"] == "sam")], PALETTE["sam"]),
                                ("GD-NegGrad", hd[(hd["d"] == d) & (hd["optimizer"] == "gd")], PALETTE["gd"])):
        g = part.groupby("signal_strength")["forget_acc"].mean()
        axes[1].plot(g.index, g.to_numpy(), "o-", color=colour, label=label, ms=3)
    axes[1].set_xlabel("signal strength ||φ||")
    axes[1].set_ylabel("forget accuracy (observed label)")
    axes[1].set_title(f"after unlearning, d = {d}", fontsize=9)
    for ax in axes:
        ax.legend(**LEGEND_BELOW)
    fig.suptitle("Sharp MinMax (prediction 11)")
    return save(fig, out_dir, "theory_sharp_minmax")
