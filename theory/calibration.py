"""Calibration of the theory's unknown constants and exponents against simulated error tables
(docs/model.md#theory-statements).

    boundary_from_grid(df, threshold=0.15)         # per d: smallest ||mu|| with mean error <= p + delta
    fit_power_law(ds, boundaries)                  # (exponent, prefactor) by least squares on log-log axes
    bootstrap_fit(df, threshold=0.15)              # exponent with a 95% CI, resampling seeds
    calibrate_sgd_constant(boundaries, d, n, P, sigma_p)   # C1 of ||mu||* = (C1 d P^4 sigma_p^4 / n)^(1/4)
    interpolated(df); gate_cells(df, cell, ok)    # the premise gate: runs that fitted every sample, whole cells
    bootstrap_statistic(df, statistic)            # any statistic of a seed-level table with a 95% CI over seeds

Everything takes plain pandas/numpy input, so it works on a sweep's ``results.csv`` and on synthetic tables alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .predictions import sgd_boundary


def _crossing(xs: np.ndarray, ys: np.ndarray, threshold: float) -> float:
    """Smallest x where the piecewise-linear curve through (xs, ys) first falls to <= threshold; NaN if never."""
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    keep = np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    below = np.flatnonzero(ys <= threshold)
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (y0 - threshold) * (x1 - x0) / (y0 - y1))


def boundary_from_grid(df: pd.DataFrame, x: str = "signal_strength", by: Sequence[str] = ("d",),
                       threshold: float = 0.15, y: str = "test_error") -> pd.DataFrame:
    """For each group of ``by`` (e.g. each d), the smallest ``x`` where the mean of ``y`` over seeds (all rows of a
    cell) falls to <= ``threshold`` (p + delta), linearly interpolated between grid points; NaN where never crossed.

    Returns a DataFrame with the ``by`` columns and ``boundary``, sorted by ``by``."""
    by = list(by)
    means = df.groupby([*by, x], sort=True)[y].mean().reset_index()
    rows = []
    for key, group in means.groupby(by, sort=True) if by else [((), means)]:
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)),
                     "boundary": _crossing(group[x].to_numpy(float), group[y].to_numpy(float), threshold)})
    return pd.DataFrame(rows, columns=[*by, "boundary"])


def fit_power_law(xs, ys) -> tuple[float, float]:
    """Least squares of ``log y = exponent log x + log prefactor`` → ``(exponent, prefactor)``.

    Points with a non-finite or non-positive coordinate are dropped; fewer than two distinct x give NaNs."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    xs, ys = xs[keep], ys[keep]
    if np.unique(xs).size < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope), float(np.exp(intercept))


def bootstrap_fit(df: pd.DataFrame, x: str = "signal_strength", along: str = "d", threshold: float = 0.15,
                  y: str = "test_error", seed_col: str = "seed", n_boot: int = 200, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Exponent of the boundary ``x*`` in ``along`` (a power law), with a bootstrap over seeds.

    Each replicate draws the seeds with replacement (a seed drawn twice counts twice in every cell mean), recomputes
    the boundaries and refits. Returns ``exponent``/``prefactor`` (full data), ``boundaries`` (full data),
    ``boot_mean``, ``ci_low``, ``ci_high`` (percentile interval at ``level``) and ``n_valid`` (replicates with a
    finite fit)."""
    full = boundary_from_grid(df, x=x, by=(along,), threshold=threshold, y=y)
    exponent, prefactor = fit_power_law(full[along], full["boundary"])
    seeds = np.unique(df[seed_col].to_numpy())
    by_seed = {s: df[df[seed_col] == s] for s in seeds}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        drawn = rng.choice(seeds, size=seeds.size, replace=True)
        sample = pd.concat([by_seed[s] for s in drawn], ignore_index=True)
        b = boundary_from_grid(sample, x=x, by=(along,), threshold=threshold, y=y)
        e, _ = fit_power_law(b[along], b["boundary"])
        if np.isfinite(e):
            samples.append(e)
    samples = np.asarray(samples)
    tail = (1 - level) / 2 * 100
    if samples.size:
        lo, hi = np.percentile(samples, [tail, 100 - tail])
        mean = float(samples.mean())
    else:
        lo = hi = mean = float("nan")
    return {"exponent": exponent, "prefactor": prefactor, "boundaries": full, "boot_mean": mean,
            "ci_low": float(lo), "ci_high": float(hi), "n_valid": int(samples.size)}


def sgd_constant_per_point(boundaries, d, n, P=2, sigma_p=1.0) -> np.ndarray:
    """Per-point ``C1`` of ``||mu||* = (C1 d P^4 sigma_p^4 / n)^(1/4)``: ``(boundary / ||mu||*(C1=1))^4``.

    The unit-constant boundary comes from :func:`theory.predictions.sgd_boundary` (the (C) statement); since the
    threshold is proportional to ``C1^(1/4)``, the ratio to the fourth power is the constant."""
    unit = sgd_boundary(d, n, P, sigma_p, 1.0)
    return (np.asarray(boundaries, float) / unit) ** 4


def calibrate_sgd_constant(boundaries, d, n, P=2, sigma_p=1.0) -> float:
    """``C1`` of the SGD boundary: the median of the per-point estimates (NaN, infinite and non-positive boundaries
    ignored; NaN if none)."""
    per = sgd_constant_per_point(boundaries, d, n, P, sigma_p)
    # a boundary that is not positive has no constant (its fourth power would be positive all the same)
    positive = np.broadcast_to(np.asarray(boundaries, float) > 0, per.shape)
    per = per[np.isfinite(per) & positive]
    return float(np.median(per)) if per.size else float("nan")


def calibrate_sam_constant(boundaries) -> float:
    """``C_sam`` of (C)'s SAM condition ``||mu|| >= C_sam`` [med]: the median SAM boundary (it should not depend on
    d or n; NaN boundaries ignored)."""
    b = np.asarray(boundaries, float)
    b = b[np.isfinite(b) & (b > 0)]
    return float(np.median(b)) if b.size else float("nan")


def linear_fit_r2(xs, ys) -> tuple[float, float, float]:
    """Ordinary least squares ``y = slope x + intercept`` → ``(slope, intercept, R^2)`` (NaNs if < 3 points)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 3 or np.unique(xs).size < 2:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(xs, ys, 1)
    resid = ys - (slope * xs + intercept)
    total = ((ys - ys.mean()) ** 2).sum()
    r2 = 1 - (resid**2).sum() / total if total > 0 else float("nan")
    return float(slope), float(intercept), float(r2)


# ---------------------------------------------------------------------- trajectory read-outs


def signal_rate(traj: dict, start_step: float) -> float:
    """(max kappa at the first logged step after ``start_step`` - at ``start_step``) / the steps between."""
    start = int(np.argmin(np.abs(traj["step"] - start_step)))
    nxt = min(start + 1, len(traj["step"]) - 1)
    dt = traj["step"][nxt] - traj["step"][start]
    return float((traj["signal_coef_max"][nxt] - traj["signal_coef_max"][start]) / dt) if dt > 0 else float("nan")


# ---------------------------------------------------------------------- premise gate and seed bootstrap


def distinct_resamples(k: int) -> int:
    """Number of distinct multisets of size k drawn with replacement from k seeds: C(2k - 1, k)."""
    from math import comb

    return comb(2 * k - 1, k) if k > 0 else 0


def interpolated(df: pd.DataFrame, error: str = "pre_train_error", loss: str = "pre_train_loss",
                 loss_eps: float | None = None) -> pd.Series:
    """Per run: the premise of every bound — every training sample fitted (train error exactly 0, flipped labels
    included) and, when ``loss_eps`` is given, train loss <= ``loss_eps``. A non-finite value fails the premise."""
    def numbers(column: str) -> np.ndarray:  # a missing value of a nullable column (<NA>) becomes NaN: it fails
        return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    err = numbers(error)
    ok = np.isfinite(err) & (err == 0)
    if loss_eps is not None:
        lo = numbers(loss)
        ok &= np.isfinite(lo) & (lo <= loss_eps)
    return pd.Series(ok, index=df.index)


def gate_cells(df: pd.DataFrame, cell: list[str], ok: pd.Series) -> tuple[pd.DataFrame, int, int]:
    """Keep the cells (groups of ``cell`` columns, all seeds) whose every run satisfies ``ok``.

    Returns ``(rows of the kept cells, cells kept, cells excluded)``. A cell with one failing seed is excluded
    whole, so a seed mean never mixes runs inside and outside the premise."""
    if df.empty:
        return df, 0, 0
    # one integer per distinct tuple of cell values, a missing value being a value of its own (joining the values
    # as text would let a NaN key escape and make ("a|b", "c") and ("a", "b|c") one cell)
    keys = df.groupby(cell, dropna=False, sort=False).ngroup()
    good = ok.groupby(keys).transform("all").astype(bool)
    kept_cells = int(keys[good].nunique())
    excluded_cells = int(keys.nunique()) - kept_cells
    return df[good], kept_cells, excluded_cells


def boundary_reasons(df: pd.DataFrame, x: str, by: str, threshold: float, y: str,
                     grid: pd.DataFrame | None = None) -> dict:
    """For each value of ``by``: the boundary (see :func:`boundary_from_grid`) and, when it is NaN, why.

    ``grid`` (the table before the premise gate) tells an excluded cell from one that was never simulated."""
    out = {}
    values = sorted(set((grid if grid is not None else df)[by]))
    for v in values:
        part = df[df[by] == v]
        if part.empty:
            out[v] = (float("nan"), "every cell excluded (not interpolated)")
            continue
        means = part.groupby(x)[y].mean()
        b = _crossing(means.index.to_numpy(float), means.to_numpy(float), threshold)
        if np.isfinite(b):
            reason = "at the grid's smallest ||mu|| (boundary at or below it)" if b == means.index.min() else ""
        else:
            reason = f"error never <= {threshold:g} on the used grid (up to {means.index.max():g})"
        out[v] = (b, reason)
    return out


def bootstrap_statistic(df: pd.DataFrame, statistic, n_boot: int = 200, seed: int = 0, level: float = 0.95,
                        seed_col: str = "seed") -> dict:
    """A statistic of a seed-level table with a percentile bootstrap over seeds (all cells resampled together).

    Returns ``value`` (full data), ``ci_low``, ``ci_high``, ``n_valid`` (finite replicates), ``seeds`` and
    ``distinct`` (how many different resamples exist: C(2k-1, k) for k seeds). With few seeds the bootstrap has
    few distinct resamples and its interval is too narrow: callers treat ``distinct < n_boot`` as too few."""
    value = float(statistic(df))
    seeds = np.unique(df[seed_col].to_numpy()) if len(df) else np.array([])
    codes = np.searchsorted(seeds, df[seed_col].to_numpy()) if seeds.size else np.array([], int)
    rows_of = [np.flatnonzero(codes == k) for k in range(seeds.size)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot if seeds.size else 0):
        drawn = rng.integers(0, seeds.size, size=seeds.size)
        sample = df.iloc[np.concatenate([rows_of[k] for k in drawn])]
        v = float(statistic(sample))
        if np.isfinite(v):
            draws.append(v)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail]) if draws else (np.nan, np.nan)
    return {"value": value, "ci_low": float(lo), "ci_high": float(hi), "n_valid": len(draws),
            "seeds": int(seeds.size), "distinct": distinct_resamples(int(seeds.size))}
