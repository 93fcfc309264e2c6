"""Tests written against the surviving mutants of ``theory/calibration.py`` (docs/testing.md, mutation testing).

Each test pins a defining property of one read-out with exact or hand-computed values: the bootstrap's percentile
interval at its level over replicates that redraw whole seeds with replacement (recomputed here by hand from the same
seeded generator), its defaults (200 replicates, seed 0, level 0.95, threshold 0.15), the constant C1 as (boundary /
unit boundary)^4, which boundaries the medians ignore, the least-squares line and R^2 on hand-solved data, the
finite-difference rate, the premise gate's exact-zero / <= eps rule and whole-cell exclusion, and the reasons' texts.
"""

from __future__ import annotations

import math
import warnings
from math import comb

import numpy as np
import pandas as pd
import pytest

from theory import calibration

# ------------------------------------------------------------------------ _crossing / boundary_from_grid


def test_crossing_sorts_the_grid_and_counts_a_point_at_the_threshold_as_crossed():
    xs, ys = np.array([3.0, 1.0, 2.0]), np.array([0.1, 0.4, 0.2])  # given out of order
    assert calibration._crossing(xs, ys, 0.15) == pytest.approx(2.5)
    # a grid point exactly at the threshold is the boundary, also when it is the last point
    assert calibration._crossing(np.array([1.0, 2.0]), np.array([0.4, 0.15]), 0.15) == 2.0
    # ... and when the curve rises again afterwards: the first crossing counts
    assert calibration._crossing(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.4, 0.15, 0.3, 0.1]), 0.15) == 2.0
    assert calibration._crossing(np.array([1.0, 2.0]), np.array([0.15, 0.1]), 0.15) == 1.0
    # NaN means are skipped, never-crossed is NaN
    assert calibration._crossing(np.array([1.0, 2.0, 3.0]), np.array([0.4, np.nan, 0.1]), 0.15) == \
        pytest.approx(1.0 + 0.25 / 0.3 * 2.0)
    assert math.isnan(calibration._crossing(np.array([1.0, 2.0]), np.array([0.4, 0.3]), 0.15))


def test_boundary_from_grid_default_threshold_no_groups_and_empty_table():
    df = pd.DataFrame({"d": [1, 1, 1], "signal_strength": [1.0, 2.0, 3.0], "test_error": [0.4, 0.2, 0.1]})
    b = calibration.boundary_from_grid(df)  # threshold 0.15 by default
    assert b.to_dict("list") == {"d": [1], "boundary": [pytest.approx(2.5)]}
    whole = calibration.boundary_from_grid(df, by=())  # no grouping: one boundary for the whole table
    assert list(whole.columns) == ["boundary"] and whole["boundary"].tolist() == [pytest.approx(2.5)]
    empty = calibration.boundary_from_grid(df.iloc[:0])
    assert list(empty.columns) == ["d", "boundary"] and empty.empty
    two = calibration.boundary_from_grid(df.assign(n=5), by=("d", "n"), threshold=0.3)
    assert two.to_dict("list") == {"d": [1], "n": [5], "boundary": [pytest.approx(1.5)]}


# ------------------------------------------------------------------------------------------- fit_power_law


def test_fit_power_law_drops_exactly_the_non_finite_non_positive_and_missing_points():
    xs = [1, 2, 4, 8]  # integers, and y below 1: both kept
    ys = [0.5 * x**0.3 for x in xs]
    junk_x = [0, -1, math.inf, math.nan, None, 2, 2, 2, 2, 2]
    junk_y = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, -1.0, math.inf, math.nan, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log of a dropped point is ever taken
        exponent, prefactor = calibration.fit_power_law(xs + junk_x, ys + junk_y)
    assert exponent == pytest.approx(0.3, rel=1e-12) and prefactor == pytest.approx(0.5, rel=1e-12)
    assert all(math.isnan(v) for v in calibration.fit_power_law([2, 2, 0], [1.0, 3.0, 1.0]))  # one distinct x


# ---------------------------------------------------------------------------------------------- bootstrap_fit

# Seed s has boundary 2 at d = 1 and 2 * 16**e_s at d = 16; its error falls linearly (unclipped) through the
# threshold exactly at its boundary, so a cell mean over any multiset of seeds crosses at the mean boundary. With two
# d values the log-log fit is exact: prefactor 2 (log d = 0 at d = 1), exponent log(mean b16 / 2) / log 16.
EXPONENTS = np.array([0.1, 0.17, 0.22, 0.26, 0.31, 0.4])
B16 = 2.0 * 16.0 ** EXPONENTS
GRID = np.arange(0.5, 8.01, 0.25)


def _fit_table(threshold=0.15, names=("d", "signal_strength", "test_error", "seed"), labels=None):
    along, x, y, seed_col = names
    labels = list(range(len(B16))) if labels is None else labels
    rows = []
    for s, b16 in zip(labels, B16):
        for d, b in ((1, 2.0), (16, b16)):
            for mu in GRID:
                rows.append({along: d, seed_col: s, x: mu, y: threshold + (b - mu) * 0.1})
    return pd.DataFrame(rows)


def _exponent(b16_mean):
    return math.log(b16_mean / 2.0) / math.log(16.0)


def _hand_replicates(labels, n_boot, seed):
    """The documented bootstrap: each replicate draws len(seeds) seeds with replacement from the sorted seeds."""
    seeds = np.unique(labels)
    b16_of = dict(zip(labels, B16))
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        drawn = rng.choice(seeds, size=seeds.size, replace=True)
        reps.append(_exponent(np.mean([b16_of[s] for s in drawn])))
    return np.asarray(reps)


def test_bootstrap_fit_defaults_give_the_95_percent_percentile_interval_of_200_seed_resamples():
    """Defaults: threshold 0.15, 200 replicates, generator seed 0, level 0.95 (percentiles 2.5 and 97.5)."""
    fit = calibration.bootstrap_fit(_fit_table())
    assert fit["exponent"] == pytest.approx(_exponent(B16.mean()), abs=1e-9)
    assert fit["prefactor"] == pytest.approx(2.0, rel=1e-9)
    assert list(fit["boundaries"].columns) == ["d", "boundary"]
    assert fit["boundaries"]["d"].tolist() == [1, 16]
    assert fit["boundaries"]["boundary"].tolist() == pytest.approx([2.0, B16.mean()], abs=1e-9)
    reps = _hand_replicates(list(range(len(B16))), 200, 0)
    assert fit["n_valid"] == 200
    assert fit["boot_mean"] == pytest.approx(reps.mean(), abs=1e-9)
    assert fit["ci_low"] == pytest.approx(np.percentile(reps, 2.5), abs=1e-9)
    assert fit["ci_high"] == pytest.approx(np.percentile(reps, 97.5), abs=1e-9)


def test_bootstrap_fit_resamples_whole_seeds_with_replacement():
    """At level 1 the interval is [min, max] of the replicates: with replacement some replicate draws one seed three
    times, so the ends are the exponents of single seeds (drawing without replacement would give only the full data;
    resampling every seed but the drawn one would never reach a single seed)."""
    labels = [0, 1, 2]
    table = _fit_table(labels=labels)
    table = table[table["seed"].isin(labels)]
    fit = calibration.bootstrap_fit(table, n_boot=150, seed=0, level=1.0)
    assert fit["ci_low"] == pytest.approx(EXPONENTS[0], abs=1e-9)
    assert fit["ci_high"] == pytest.approx(EXPONENTS[2], abs=1e-9)


def test_bootstrap_fit_uses_the_named_columns_threshold_seed_and_level():
    names = ("n", "mu", "err", "run")
    labels = [11, 3, 7, 29, 5, 17]
    table = _fit_table(threshold=0.2, names=names, labels=labels)
    fit = calibration.bootstrap_fit(table, x="mu", along="n", threshold=0.2, y="err", seed_col="run", n_boot=40,
                                    seed=7, level=0.5)
    assert fit["exponent"] == pytest.approx(_exponent(B16.mean()), abs=1e-9)
    assert list(fit["boundaries"].columns) == ["n", "boundary"]
    assert fit["boundaries"]["boundary"].tolist() == pytest.approx([2.0, B16.mean()], abs=1e-9)
    reps = _hand_replicates(labels, 40, 7)
    assert fit["n_valid"] == 40
    assert fit["ci_low"] == pytest.approx(np.percentile(reps, 25), abs=1e-9)  # level 0.5: the quartiles
    assert fit["ci_high"] == pytest.approx(np.percentile(reps, 75), abs=1e-9)


def test_bootstrap_fit_without_any_crossing_returns_nans():
    table = _fit_table()
    table["test_error"] = 0.4  # never <= 0.15
    fit = calibration.bootstrap_fit(table, n_boot=5)
    assert fit["n_valid"] == 0
    for key in ("exponent", "prefactor", "boot_mean", "ci_low", "ci_high"):
        assert isinstance(fit[key], float) and math.isnan(fit[key]), key


# ------------------------------------------------------------------------------ SGD and SAM constants


def test_sgd_constant_is_the_fourth_power_of_boundary_over_unit_boundary():
    """||mu||*(C1=1) = (d P^4 sigma_p^4 / n)^(1/4): d=16, n=4, P=2, sigma_p=1 give 64^(1/4) = 2 sqrt 2, so a boundary
    of 2 means C1 = 16 / 64 = 1/4 and 4 means C1 = 256 / 64 = 4 (defaults P = 2, sigma_p = 1)."""
    assert calibration.sgd_constant_per_point([2.0, 4.0], 16, 4) == pytest.approx([0.25, 4.0], rel=1e-12)
    # sigma_p = 1/2: unit boundary (16 * 16 / 16 / 4)^(1/4) = sqrt 2, so C1 = (2 / sqrt 2)^4 = 4 and (4 / sqrt 2)^4 = 64
    assert calibration.sgd_constant_per_point([2.0, 4.0], 16, 4, 2, 0.5) == pytest.approx([4.0, 64.0], rel=1e-12)
    # P = 1: unit boundary (16 / 4)^(1/4) = sqrt 2 as well
    assert calibration.sgd_constant_per_point([2.0], 16, 4, P=1) == pytest.approx([4.0], rel=1e-12)
    # a missing boundary given as None is a NaN estimate, not an error
    per = calibration.sgd_constant_per_point([2.0, None], 16, 4)
    assert per[0] == pytest.approx(0.25) and math.isnan(per[1])


def test_calibrate_sgd_constant_is_the_median_over_finite_positive_estimates():
    assert calibration.calibrate_sgd_constant([2.0, 4.0, 4.0], 16, 4) == pytest.approx(4.0)  # defaults P=2, sigma=1
    assert calibration.calibrate_sgd_constant([2.0, 4.0, 4.0], 16, 4, 2, 0.5) == pytest.approx(64.0)
    assert calibration.calibrate_sgd_constant([2.0, 4.0, np.nan], 16, 4) == pytest.approx(2.125)
    assert calibration.calibrate_sgd_constant([2.0, 4.0, np.inf], 16, 4) == pytest.approx(2.125)  # inf ignored
    assert calibration.calibrate_sgd_constant([2.0, 4.0, 0.0], 16, 4) == pytest.approx(2.125)  # 0 ignored
    assert calibration.calibrate_sgd_constant([2.0, None, 4.0], 16, 4) == pytest.approx(2.125)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no boundary at all: NaN, quietly (no median of an empty array)
        assert math.isnan(calibration.calibrate_sgd_constant([np.nan, np.nan], 16, 4))
        assert math.isnan(calibration.calibrate_sgd_constant([], 16, 4))


def test_calibrate_sam_constant_is_the_median_positive_finite_boundary():
    assert calibration.calibrate_sam_constant([1.0, 2.0, 4.0]) == pytest.approx(2.0)
    assert calibration.calibrate_sam_constant([1.0, 2.0, 4.0, np.nan, -1.0, 0.0, np.inf]) == pytest.approx(2.0)
    assert calibration.calibrate_sam_constant([1.0, 2.0, 4.0, 0.0]) == pytest.approx(2.0)
    assert calibration.calibrate_sam_constant([0.5, 0.75, 4.0]) == pytest.approx(0.75)  # values below 1 count
    assert calibration.calibrate_sam_constant(pd.Series([3.0, 1.0])) == pytest.approx(2.0)
    assert calibration.calibrate_sam_constant([1.0, None, 3.0]) == pytest.approx(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(calibration.calibrate_sam_constant([np.nan, 0.0]))
        assert math.isnan(calibration.calibrate_sam_constant([]))


# ------------------------------------------------------------------------------------------ linear_fit_r2


def test_linear_fit_r2_hand_solved():
    """x = 0..3, y = 0, 2, 1, 3: Sxy = 4, Sxx = 5, slope 0.8, intercept 1.5 - 1.2 = 0.3; residuals -0.3, 0.9, -0.9,
    0.3 (SSres 1.8), SStot 5, R^2 = 1 - 1.8 / 5 = 0.64. Scaling y by 0.1 scales the line, not R^2."""
    assert calibration.linear_fit_r2([0, 1, 2, 3], [0, 2, 1, 3]) == pytest.approx((0.8, 0.3, 0.64), abs=1e-12)
    assert calibration.linear_fit_r2([0, 1, 2, 3], [0, 0.2, 0.1, 0.3]) == pytest.approx((0.08, 0.03, 0.64),
                                                                                        abs=1e-12)
    # shifted far from 0 (the mean is subtracted in SStot): same slope and R^2
    assert calibration.linear_fit_r2([0, 1, 2, 3], [10, 12, 11, 13]) == pytest.approx((0.8, 10.3, 0.64), abs=1e-9)


def test_linear_fit_r2_needs_three_points_and_two_distinct_x():
    # three points, two distinct x: (0,0), (0,2), (1,3) -> y = 2x + 1, residuals -1, 1, 0, SStot 42/9, R^2 = 4/7
    assert calibration.linear_fit_r2([0, 0, 1], [0, 2, 3]) == pytest.approx((2.0, 1.0, 4 / 7), abs=1e-12)
    assert calibration.linear_fit_r2([0, 1, 2], [1, 2, 4]) == pytest.approx((1.5, 5 / 6, 1 - (1 / 6) / (14 / 3)),
                                                                            abs=1e-12)
    for xs, ys in (([0, 1], [0, 1]), ([2, 2, 2], [0, 1, 2]), ([], [])):
        out = calibration.linear_fit_r2(xs, ys)
        assert len(out) == 3 and all(isinstance(v, float) and math.isnan(v) for v in out)


def test_linear_fit_r2_drops_rows_with_a_missing_coordinate():
    xs = [0, 1, 2, 3, None, 5, np.inf]
    ys = [0, 2, 1, 3, 7, None, 1]
    assert calibration.linear_fit_r2(xs, ys) == pytest.approx((0.8, 0.3, 0.64), abs=1e-12)
    xs = [0, 1, 2, 3, np.nan]
    ys = [0, 2, 1, 3, 5]
    assert calibration.linear_fit_r2(xs, ys) == pytest.approx((0.8, 0.3, 0.64), abs=1e-12)


def test_linear_fit_r2_of_a_constant_is_undefined_not_a_division_by_zero():
    xs = [6.37, 2.698, 0.41, 0.165, 8.133]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slope, intercept, r2 = calibration.linear_fit_r2(xs, [0.913] * 5)
    assert slope == pytest.approx(0.0, abs=1e-12) and intercept == pytest.approx(0.913, abs=1e-12)
    assert isinstance(r2, float) and math.isnan(r2)


# ------------------------------------------------------------------------------------------- signal_rate


def test_signal_rate_over_unit_steps_and_at_the_end_of_the_log():
    traj = {"step": np.array([0.0, 1.0, 2.0]), "signal_coef_max": np.array([1.0, 1.5, 3.0])}
    assert calibration.signal_rate(traj, 0.0) == pytest.approx(0.5)  # steps one apart: dt = 1 is a valid interval
    assert calibration.signal_rate(traj, 1.0) == pytest.approx(1.5)
    traj = {"step": np.array([0.0, 0.5, 1.0]), "signal_coef_max": np.array([1.0, 2.0, 2.5])}
    assert calibration.signal_rate(traj, 0.0) == pytest.approx(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the last logged step has no later one: NaN (no rate over zero steps), not an index error
        assert math.isnan(calibration.signal_rate(traj, 1.0))
        assert math.isnan(calibration.signal_rate(traj, 5.0))
        # a step logged twice: zero steps between, NaN (not +-inf)
        twice = {"step": np.array([0.0, 10.0, 10.0, 20.0]), "signal_coef_max": np.array([1.0, 2.0, 5.0, 6.0])}
        assert math.isnan(calibration.signal_rate(twice, 10.0))
    assert calibration.signal_rate(twice, 0.0) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------- premise gate


def test_interpolated_keeps_the_index_and_treats_unparsable_values_as_failing():
    df = pd.DataFrame({"pre_train_error": ["0", "failed", 0.0, 0.0], "pre_train_loss": [0.1, 0.0, "n/a", 0.1000001]},
                      index=[10, 20, 30, 40])
    ok = calibration.interpolated(df)
    assert ok.index.tolist() == [10, 20, 30, 40]
    assert ok.dtype == bool and ok.tolist() == [True, False, True, True]
    ok = calibration.interpolated(df, loss_eps=0.1)  # loss exactly eps passes (<=)
    assert ok.index.tolist() == [10, 20, 30, 40]
    assert ok.tolist() == [True, False, False, False]
    # the result aligns with its table: gate_cells on a non-default index keeps the right rows
    df["d"] = [1, 1, 2, 2]
    kept, used, excluded = calibration.gate_cells(df, ["d"], calibration.interpolated(df))
    assert kept.index.tolist() == [30, 40] and (used, excluded) == (1, 1)
    df2 = df.assign(pre_train_error=0.0)
    kept, used, excluded = calibration.gate_cells(df2, ["d"], calibration.interpolated(df2, loss_eps=0.1))
    assert kept.index.tolist() == [10, 20] and (used, excluded) == (1, 1)


def test_gate_cells_on_an_empty_table_and_on_one_cell_column():
    empty = pd.DataFrame({"d": [], "seed": []})
    kept, used, excluded = calibration.gate_cells(empty, ["d"], pd.Series([], dtype=bool))
    assert kept.empty and (used, excluded) == (0, 0)
    # one cell column: each value is a cell, excluded whole when one of its seeds fails
    df = pd.DataFrame({"d": [1.0, 1.0, 3.0, 3.0, 2.0], "seed": [0, 1, 0, 1, 0]})
    ok = pd.Series([True, True, True, False, False])
    kept, used, excluded = calibration.gate_cells(df, ["d"], ok)
    assert kept.index.tolist() == [0, 1] and (used, excluded) == (1, 2)
    kept, used, excluded = calibration.gate_cells(df, ["d"], pd.Series([True] * 5))
    assert kept.index.tolist() == [0, 1, 2, 3, 4] and (used, excluded) == (3, 0)


# --------------------------------------------------------------------------------- boundary_reasons


def test_boundary_reasons_texts_and_order():
    grid = pd.DataFrame({"d": [1, 1, 2, 2, 3, 3, 4, 4], "signal_strength": [1.0, 2.0] * 4,
                         "e": [0.3, 0.1, 0.1, 0.05, 0.3, 0.2, 0.3, 0.1]})
    used = grid[grid["d"] != 1]  # d = 1 (the first value) excluded by the gate
    reasons = calibration.boundary_reasons(used, "signal_strength", "d", 0.15, "e", grid=grid)
    assert list(reasons) == [1, 2, 3, 4]
    assert math.isnan(reasons[1][0]) and reasons[1][1] == "every cell excluded (not interpolated)"
    assert reasons[2] == (1.0, "at the grid's smallest ||mu|| (boundary at or below it)")
    assert math.isnan(reasons[3][0]) and reasons[3][1] == "error never <= 0.15 on the used grid (up to 2)"
    assert reasons[4][0] == pytest.approx(1.75) and reasons[4][1] == ""
    # without a grid the values are those of the table itself
    alone = calibration.boundary_reasons(used, "signal_strength", "d", 0.15, "e")
    assert list(alone) == [2, 3, 4]
    assert alone[2] == (1.0, "at the grid's smallest ||mu|| (boundary at or below it)")


# ------------------------------------------------------------------------------- bootstrap_statistic


def _seed_table():
    # seeds with 1 to 3 rows each, labels not 0..k-1 and rows not sorted by seed
    seeds = [42, 3, 17, 8, 25, 3, 42, 17, 42, 8]
    values = [0.31, 1.7, -0.4, 2.9, 0.05, 1.1, 0.77, -1.3, 0.2, 3.6]
    return pd.DataFrame({"seed": seeds, "v": values})


def _hand_statistic_replicates(df, n_boot, seed):
    """Each replicate draws k seed indices uniformly from 0..k-1 (indices into the sorted seeds) and stacks every row
    of each drawn seed (a seed drawn twice counts twice)."""
    seeds = np.unique(df["seed"])
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        drawn = rng.integers(0, seeds.size, size=seeds.size)
        values = np.concatenate([df.loc[df["seed"] == seeds[k], "v"].to_numpy() for k in drawn])
        reps.append(values.mean())
    return np.asarray(reps)


def test_bootstrap_statistic_defaults_give_the_95_percent_percentile_interval_over_seeds():
    df = _seed_table()
    est = calibration.bootstrap_statistic(df, lambda t: t["v"].mean())
    reps = _hand_statistic_replicates(df, 200, 0)
    assert est["value"] == pytest.approx(df["v"].mean(), abs=1e-12)
    assert est["n_valid"] == 200
    assert est["ci_low"] == pytest.approx(np.percentile(reps, 2.5), abs=1e-12)
    assert est["ci_high"] == pytest.approx(np.percentile(reps, 97.5), abs=1e-12)
    assert est["seeds"] == 5 and est["distinct"] == comb(9, 5) == 126
    # level 1: [min, max] of the replicates; with three seeds some replicate draws one seed three times, so the ends
    # are the smallest and the largest single-seed mean (never reached when drawing without replacement)
    three = df[df["seed"].isin([3, 8, 42])]
    wide = calibration.bootstrap_statistic(three, lambda t: t["v"].mean(), n_boot=300, seed=0, level=1.0)
    per_seed = three.groupby("seed")["v"].mean()
    assert wide["ci_low"] == pytest.approx(per_seed.min(), abs=1e-12)
    assert wide["ci_high"] == pytest.approx(per_seed.max(), abs=1e-12)


def test_bootstrap_statistic_on_an_empty_table_and_an_undefined_statistic():
    empty = pd.DataFrame({"seed": pd.Series([], dtype=int), "v": pd.Series([], dtype=float)})
    est = calibration.bootstrap_statistic(empty, lambda t: float(len(t)))
    assert est["value"] == 0.0 and est["n_valid"] == 0 and est["seeds"] == 0 and est["distinct"] == 0
    assert math.isnan(est["ci_low"]) and math.isnan(est["ci_high"])
    est = calibration.bootstrap_statistic(_seed_table(), lambda t: float("nan"), n_boot=5)
    assert math.isnan(est["value"]) and est["n_valid"] == 0 and est["seeds"] == 5 and est["distinct"] == 126
    assert math.isnan(est["ci_low"]) and math.isnan(est["ci_high"])


# The three latent bugs the mutation reading found (docs/testing.md), fixed: each test fails on the old code.

def test_gate_cells_keeps_a_missing_key_as_a_cell_of_its_own():
    # one cell column: the two NaN-keyed runs form one cell, one of whose seeds failed, so the whole cell goes
    df = pd.DataFrame({"d": [100.0, 100.0, np.nan, np.nan], "v": [1, 2, 3, 4]})
    ok = pd.Series([True, True, True, False])
    kept, used, excluded = calibration.gate_cells(df, ["d"], ok)
    assert kept["v"].tolist() == [1, 2] and (used, excluded) == (1, 1)
    # two cell columns, one value missing: no TypeError, the same cells
    df2 = df.assign(mu=[0.5, 0.5, 0.5, 0.5])
    kept, used, excluded = calibration.gate_cells(df2, ["d", "mu"], ok)
    assert kept["v"].tolist() == [1, 2] and (used, excluded) == (1, 1)


def test_gate_cells_does_not_merge_cells_whose_joined_text_coincides():
    df = pd.DataFrame({"a": ["x|y", "x"], "b": ["z", "y|z"], "v": [1, 2]})
    kept, used, excluded = calibration.gate_cells(df, ["a", "b"], pd.Series([True, False]))
    assert kept["v"].tolist() == [1] and (used, excluded) == (1, 1)


def test_interpolated_fails_a_missing_value_of_a_nullable_column_instead_of_raising():
    df = pd.DataFrame({"pre_train_error": pd.array([0.0, None, 0.0, 0.0], dtype="Float64"),
                       "pre_train_loss": pd.array([0.01, 0.0, None, 0.2], dtype="Float64")})
    assert calibration.interpolated(df).tolist() == [True, False, True, True]
    assert calibration.interpolated(df, loss_eps=0.05).tolist() == [True, False, False, False]


def test_calibrate_sgd_constant_drops_a_negative_boundary():
    d, n = 100, 10
    unit = (d * 2 ** 4 / n) ** 0.25  # the C1 = 1 boundary at P = 2, sigma_p = 1
    # -3 unit would give 81 if its fourth power were kept: the median over {1, 16} is 8.5, over {81, 1, 16} 16
    got = calibration.calibrate_sgd_constant([-3 * unit, unit, 2 * unit], d, n)
    assert got == pytest.approx(8.5)
    assert math.isnan(calibration.calibrate_sgd_constant([-unit, 0.0], d, n))
    # a positive boundary below 1 counts: d = 1, n = 100 puts the unit boundary at (16/100)^(1/4) ≈ 0.63
    small = (1 * 2 ** 4 / 100) ** 0.25
    assert small < 1 and calibration.calibrate_sgd_constant([0.5 * small], 1, 100) == pytest.approx(0.0625)
