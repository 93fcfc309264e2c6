"""Coefficient dynamics (docs/model.md#signal-and-noise-coefficients; prediction 5 of
docs/model.md#checkable-predictions): max signal coefficient κ, max noise coefficient ζ̄ and the
fraction of noise neurons active at the (SAM-perturbed) point, GD vs SAM, in a harmful and a benign setting."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .registry import SweepResults, register
from .style import OPTIMIZER_LABELS, PALETTE, apply_style, save

PANELS = (("signal_coef_max", "max signal coefficient κ"), ("noise_coef_max", "max noise coefficient ζ̄"),
          ("active_noise_fraction", "active noise neurons (at W+ε)"))


@register("coefficient_dynamics", "dynamics", "κ, ζ̄ and active noise neurons over steps, GD vs SAM")
def render_dynamics(results: SweepResults, out_dir: Path) -> list[Path]:
    apply_style()
    df = results.table()
    signals = sorted(df["signal_strength"].unique())
    fig, axes = plt.subplots(len(signals), len(PANELS), figsize=(4.2 * len(PANELS), 3.0 * len(signals)),
                             constrained_layout=True, squeeze=False)
    for row, signal in enumerate(signals):
        sub = df[df["signal_strength"] == signal]
        err = {r.optimizer: r.pretrain_test_error for r in sub.itertuples()}
        for _, run in sub.iterrows():
            traj = results.trajectory(run["hash"])
            steps = traj["step"]
            for col, (key, label) in enumerate(PANELS):
                ax = axes[row, col]
                ax.plot(steps, traj[key], color=PALETTE.get(run["optimizer"]), lw=1.8,
                        label=f"{OPTIMIZER_LABELS.get(run['optimizer'])} (test err {err[run['optimizer']]:.2f})")
                if run["unlearn_method"] != "none":
                    ax.axvline(run["steps"], color="0.5", ls=":", lw=1)
                ax.set_xlabel("step")
                ax.set_ylabel(label)
                if key != "active_noise_fraction":
                    ax.set_yscale("symlog", linthresh=1e-2)
        setting = "harmful for GD" if err.get("gd", 0) > sub["label_flip"].iloc[0] + 0.1 else "benign for GD"
        axes[row, 0].set_title(f"||μ|| = {signal:g} ({setting})", loc="left")
        axes[row, -1].legend(loc="best", fontsize=8)
    fig.suptitle("Signal vs noise learning; dotted line: NegGrad unlearning starts")
    return save(fig, out_dir, "coefficient_dynamics")
