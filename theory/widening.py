"""Do the fitted slopes of the GD boundary approach the theory's +1/4 in d and -1/4 in n as the ranges grow?

Prediction 2 (docs/model.md#checkable-predictions): the benign/harmful boundary ``||mu||*`` of GD should scale like
``d^{1/4} n^{-1/4}``, but small ranges bend the fitted slope (the (K) authors' grid gives ~0.16 in d). This module runs
GD sweeps (gram backend, cached and resumable) over widening windows of d (at fixed n) and of n (at a large fixed d, so
that d >> n), finds the boundary per d / per n and fits the log-log slope over

* expanding windows ``[x_min, x_max]`` with ``x_max`` growing, and
* sliding windows of a fixed number of consecutive grid values (a fixed factor in x),

each with a bootstrap CI over seeds (:func:`theory.calibration.bootstrap_fit`).

The ||mu|| grid is found per axis value in two stages: a coarse geometric grid around the (C) form
``c0 (d/100)^{1/4} (n/20)^{-1/4}`` on a few seeds locates the crossing, then a fine geometric grid around that
crossing runs on every seed; only the fine stage enters the fits, and an axis value whose fine grid does not bracket
the crossing is left out (``bracketed`` in boundaries.csv; ``points_used`` counts what a window kept). The theorems
speak only of interpolating networks (docs/model.md#premise-of-every-bound): runs with train error > 0 (or non-finite
metrics) are excluded from the boundary and counted in ``cells_excluded``.

    python -m theory.widening --out results/widening --preset full --executor pool          # ~100 s on 2 cores
    python -m theory.widening --out results/widening_sigma0 --preset full_sigma0 --executor pool   # sigma_0 ~ 1/sqrt(d)
    python -m theory.widening --out /tmp/w --preset small                # seconds: for tests

``full``: d = 100, 200, ..., 102400 at n = 20 and n = 10, 20, ..., 640 at d = 102400; GD, lr 0.5, 200 steps,
sigma_0 = 0.01; 12 seeds. ``full_sigma0``: the same with sigma_0 = 0.01 sqrt(100/d), so the initial noise
pre-activations sigma_0 sigma_p sqrt(d) stay at 0.1 instead of growing to 3.2 (docs/slope-windows.md: this is what
brings the slopes to +-1/4).

Writes ``OUT/slopes.csv`` (``axis, window, window_lo, window_hi, slope, ci_low, ci_high, points_used,
cells_excluded, theory``), ``OUT/boundaries.csv`` (per axis value: the boundary, the fine grid, runs and runs
excluded), ``OUT/summary.json`` and the figure ``OUT/slope_windows.{png,pdf}`` (:mod:`figures.slope_windows`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .calibration import bootstrap_fit, boundary_from_grid

AXES = ("d", "n")
THEORY_SLOPE = {"d": 0.25, "n": -0.25}
SLOPE_COLUMNS = ("axis", "window", "window_lo", "window_hi", "slope", "ci_low", "ci_high", "points_used",
                 "cells_excluded", "theory")


@dataclass(frozen=True)
class WideningPreset:
    """What :func:`run_widening` sweeps. ``base`` is a GD configuration (gram backend) shared by every run."""

    name: str
    base: dict[str, Any]
    ds: list[int]                # the d axis, at n = base["n"]
    ns: list[int]                # the n axis, at d = n_axis_d
    n_axis_d: int
    seeds: list[int]             # fine stage (>= 10 for a bootstrap with many distinct resamples)
    locate_seeds: list[int]      # coarse stage
    locate_ratios: list[float]   # coarse grid: guess * ratios
    fine_ratios: list[float]     # fine grid: coarse crossing * ratios
    guess_c0: float = 2.2        # guess of the boundary at d = 100, n = 20 (the project's GD, lr 0.5, 200 steps)
    delta: float = 0.05          # boundary: the seed-mean test error first falls to <= p + delta
    sliding_points: dict[str, int] = field(default_factory=lambda: {"d": 5, "n": 4})
    min_points: int = 3          # a window needs at least this many grid values
    n_boot: int = 200
    sigma_0_ref_d: int | None = None  # set: sigma_0 = base sigma_0 * sqrt(ref_d / d) (sigma_0 sigma_p sqrt d fixed)
    axes: tuple[str, ...] = AXES


def _geom(lo: float, hi: float, count: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, count)]


_BASE = dict(backend="gram", optimizer="gd", n=20, P=2, m=10, sigma_p=1.0, sigma_0=0.01, label_flip=0.1, lr=0.5,
             steps=200, n_test=4000, unlearn_method="none", log_points=2)

PRESETS: dict[str, WideningPreset] = {
    "full": WideningPreset(
        "full", base=_BASE, ds=[100 * 2**k for k in range(11)], ns=[10 * 2**k for k in range(7)], n_axis_d=102400,
        seeds=list(range(12)), locate_seeds=[0, 1, 2], locate_ratios=_geom(0.35, 2.8, 13),
        fine_ratios=_geom(0.8, 1.25, 11)),
    # the same with sigma_0 sigma_p sqrt(d) held at its d = 100 value (0.1): the initial noise pre-activations do not
    # grow with d (at d = 102400 the fixed sigma_0 = 0.01 gives 3.2), as the theory's small initialisation asks
    "full_sigma0": WideningPreset(
        "full_sigma0", base=_BASE, ds=[100 * 2**k for k in range(11)], ns=[10 * 2**k for k in range(7)],
        n_axis_d=102400, seeds=list(range(12)), locate_seeds=[0, 1, 2], locate_ratios=_geom(0.35, 2.8, 13),
        fine_ratios=_geom(0.8, 1.25, 11), sigma_0_ref_d=100),
    "small": WideningPreset(
        "small", base={**_BASE, "n_test": 1000, "steps": 100}, ds=[100, 400, 1600, 6400], ns=[10, 20, 40],
        n_axis_d=6400, seeds=[0, 1, 2, 3], locate_seeds=[0, 1], locate_ratios=_geom(0.4, 2.5, 7),
        fine_ratios=_geom(0.75, 1.33, 5), sliding_points={"d": 3, "n": 3}, n_boot=20),
}


# ---------------------------------------------------------------------- pure functions (tested on synthetic tables)


def usable(df: pd.DataFrame, error: str = "test_error") -> pd.Series:
    """Rows inside the theorems' premise: the run interpolated (train error 0) and its metrics are finite."""
    ok = (df["train_error"] == 0) & np.isfinite(df[error].to_numpy(float))
    if "diverged" in df:
        ok &= ~df["diverged"].astype(bool)
    return ok


def bracketed(df: pd.DataFrame, axis: str, threshold: float, x: str = "signal_strength",
              error: str = "test_error") -> pd.Series:
    """Per axis value: does its grid bracket the crossing (seed-mean error above ``threshold`` at the smallest
    ||mu|| and at or below it somewhere)?"""
    means = df.groupby([axis, x])[error].mean().reset_index()
    out = {}
    for value, g in means.groupby(axis):
        g = g.sort_values(x)
        ys = g[error].to_numpy(float)
        out[value] = bool(ys.size and ys[0] > threshold and (ys <= threshold).any())
    return pd.Series(out, name="bracketed", dtype=bool)


def windows(values: list, min_points: int, sliding_points: int) -> list[tuple[str, list]]:
    """``("expanding", values[:k])`` for k >= min_points, then ``("sliding", values[i:i+sliding_points])``."""
    values = sorted(values)
    out = [("expanding", values[:k]) for k in range(min_points, len(values) + 1)]
    if sliding_points >= min_points:
        out += [("sliding", values[i:i + sliding_points]) for i in range(len(values) - sliding_points + 1)]
    return out


def window_slopes(df: pd.DataFrame, axis: str, threshold: float, min_points: int = 3, sliding_points: int = 4,
                  n_boot: int = 200, seed: int = 0, error: str = "test_error") -> pd.DataFrame:
    """Fitted log-log slope of the boundary in ``axis`` over expanding and sliding windows of its values.

    ``df`` has one row per run (``axis``, ``signal_strength``, ``seed``, ``train_error``, ``error``). Runs outside the
    premise (:func:`usable`) are dropped and counted per window (``cells_excluded``); axis values whose grid does not
    bracket the crossing are dropped. ``points_used``: axis values with a finite boundary in the window."""
    ok = usable(df, error)
    kept = df[ok]
    good = bracketed(kept, axis, threshold, error=error)
    rows = []
    for kind, vals in windows(sorted(df[axis].unique()), min_points, sliding_points):
        part = kept[kept[axis].isin(vals) & kept[axis].map(good).fillna(False).astype(bool)]
        excluded = int((~ok[df[axis].isin(vals)]).sum())
        fit = {"exponent": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        used = 0
        if len(part):
            b = boundary_from_grid(part, by=(axis,), threshold=threshold, y=error)
            used = int(np.isfinite(b["boundary"]).sum())
            if used >= 2:
                fit = bootstrap_fit(part, along=axis, threshold=threshold, y=error, n_boot=n_boot, seed=seed)
        rows.append({"axis": axis, "window": kind, "window_lo": vals[0], "window_hi": vals[-1],
                     "slope": fit["exponent"], "ci_low": fit["ci_low"], "ci_high": fit["ci_high"],
                     "points_used": used, "cells_excluded": excluded, "theory": THEORY_SLOPE.get(axis, np.nan)})
    return pd.DataFrame(rows, columns=list(SLOPE_COLUMNS))


def boundary_table(df: pd.DataFrame, axis: str, threshold: float, error: str = "test_error") -> pd.DataFrame:
    """Per axis value: boundary over the premise-satisfying runs, whether the grid brackets it, runs and exclusions."""
    ok = usable(df, error)
    b = boundary_from_grid(df[ok], by=(axis,), threshold=threshold, y=error).set_index(axis)["boundary"]
    good = bracketed(df[ok], axis, threshold, error=error)
    rows = []
    for value, g in df.groupby(axis):
        rows.append({"axis": axis, "value": value, "boundary": float(b.get(value, np.nan)),
                     "bracketed": bool(good.get(value, False)), "runs": int(len(g)),
                     "runs_excluded": int((~ok[g.index]).sum()),
                     "signal_lo": float(g["signal_strength"].min()), "signal_hi": float(g["signal_strength"].max())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- the sweeps


def _guess(preset: WideningPreset, d: float, n: float) -> float:
    return preset.guess_c0 * (d / 100) ** 0.25 * (n / 20) ** -0.25


def _axis_cells(preset: WideningPreset, axis: str) -> list[tuple[int, int]]:
    n0 = int(preset.base.get("n", 20))
    return [(d, n0) for d in preset.ds] if axis == "d" else [(preset.n_axis_d, n) for n in preset.ns]


def sigma_0_of(preset: WideningPreset, d: int) -> float:
    """The initial filter scale at dimension d: the base's, or scaled as 1/sqrt(d) from ``sigma_0_ref_d``."""
    s0 = float(preset.base.get("sigma_0", 0.01))
    return s0 if preset.sigma_0_ref_d is None else s0 * math.sqrt(preset.sigma_0_ref_d / d)


def _sweep(preset: WideningPreset, axis: str, points: list[tuple[int, int, float]], seeds: list[int], out: Path,
           stage: str, executor: str, workers: int) -> pd.DataFrame:
    from simulations.sweep import run_sweep

    if preset.sigma_0_ref_d is None:
        grid = {"d+n+signal_strength": [(d, n, round(s, 6)) for d, n, s in points], "seed": list(seeds)}
    else:
        grid = {"d+n+signal_strength+sigma_0": [(d, n, round(s, 6), sigma_0_of(preset, d)) for d, n, s in points],
                "seed": list(seeds)}
    summary = run_sweep(dict(preset.base), grid, out / "sweeps" / f"{axis}-{stage}", executor=executor,
                        workers=workers, cache=out / "cache", progress=False)
    return pd.read_csv(summary["results"])


def _locate(preset: WideningPreset, table: pd.DataFrame, axis: str, threshold: float) -> dict[int, float]:
    """Coarse crossing per axis value; where the coarse grid never crosses, its top end (the fine stage then shows
    the value as not bracketed); where it crosses at once, its bottom end."""
    ok = usable(table)
    b = boundary_from_grid(table[ok], by=(axis,), threshold=threshold).set_index(axis)["boundary"]
    out = {}
    for value, g in table.groupby(axis):
        lo, hi = float(g["signal_strength"].min()), float(g["signal_strength"].max())
        v = float(b.get(value, np.nan))
        out[int(value)] = v if np.isfinite(v) else hi
        out[int(value)] = min(max(out[int(value)], lo), hi)
    return out


def run_widening(preset: str | WideningPreset = "full", out: str | Path = "results/widening",
                 executor: str = "inprocess", workers: int = 2, figure: bool = True) -> dict[str, Any]:
    """Run (or resume from the cache) both axes' sweeps; write slopes.csv, boundaries.csv, summary.json and the
    figure into ``out``. Returns the summary (with the two tables as DataFrames under ``slopes``/``boundaries``)."""
    pre = preset if isinstance(preset, WideningPreset) else PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    p = float(pre.base.get("label_flip", 0.1))
    threshold = p + pre.delta
    slopes, bounds, timings = [], [], {}
    for axis in pre.axes:
        t0 = time.perf_counter()
        cells = _axis_cells(pre, axis)
        coarse_pts = [(d, n, _guess(pre, d, n) * r) for d, n in cells for r in pre.locate_ratios]
        coarse = _sweep(pre, axis, coarse_pts, pre.locate_seeds, out, "locate", executor, workers)
        centre = _locate(pre, coarse, axis, threshold)
        fine_pts = [(d, n, centre[d if axis == "d" else n] * r) for d, n in cells for r in pre.fine_ratios]
        fine = _sweep(pre, axis, fine_pts, pre.seeds, out, "fine", executor, workers)
        timings[axis] = round(time.perf_counter() - t0, 1)
        bounds.append(boundary_table(fine, axis, threshold))
        slopes.append(window_slopes(fine, axis, threshold, pre.min_points, pre.sliding_points[axis], pre.n_boot))
    slope_df = pd.concat(slopes, ignore_index=True)
    bound_df = pd.concat(bounds, ignore_index=True)
    slope_df.to_csv(out / "slopes.csv", index=False)
    bound_df.to_csv(out / "boundaries.csv", index=False)
    summary = {"preset": pre.name, "settings": asdict(pre), "threshold": threshold, "seconds_per_axis": timings,
               "seconds": round(time.perf_counter() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if figure:
        from figures.slope_windows import render_slope_windows

        summary["figure"] = [str(x) for x in render_slope_windows(out / "slopes.csv", out)]
    return {**summary, "slopes": slope_df, "boundaries": bound_df}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory.widening", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for sweeps (cached, resumable), CSVs and the figure")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS))
    parser.add_argument("--executor", default="inprocess", choices=("inprocess", "pool"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of an inprocess run (1: on a shared 2-core machine more threads thrash)")
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    if args.executor == "inprocess" and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    res = run_widening(args.preset, args.out, executor=args.executor, workers=args.workers,
                       figure=not args.no_figure)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(res["boundaries"].to_string(index=False))
        print(res["slopes"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wall {res['seconds']} s; wrote {args.out}/slopes.csv, boundaries.csv, summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
