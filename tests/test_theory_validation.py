"""theory.calibration recovers known constants from synthetic data; ``python -m theory validate`` fills its table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from theory import calibration, validation
from theory.__main__ import main
from theory.predictions import sgd_boundary


def synthetic_error_table(boundaries: dict[int, float], seeds=(0, 1, 2), p=0.1, width=0.3, noise=0.0, seed=0):
    """Seed-level test errors that fall linearly through p + 0.05 exactly at the given boundary of each d."""
    rng = np.random.default_rng(seed)
    xs = np.round(np.arange(0.25, 6.01, 0.25), 6)
    rows = []
    for d, b in boundaries.items():
        for s in seeds:
            for x in xs:
                mean = np.clip(p + 0.05 + (b - x) * width, 0.0, 0.5)
                rows.append({"d": d, "seed": s, "signal_strength": x, "test_error": mean + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_boundary_from_grid_recovers_crossing():
    table = synthetic_error_table({100: 1.3, 400: 2.1, 1600: 3.7})
    b = calibration.boundary_from_grid(table, threshold=0.15).set_index("d")["boundary"]
    assert b[100] == pytest.approx(1.3, abs=1e-9)
    assert b[400] == pytest.approx(2.1, abs=1e-9)
    assert b[1600] == pytest.approx(3.7, abs=1e-9)


def test_boundary_interpolates_and_reports_never_crossed():
    df = pd.DataFrame({"d": [1, 1, 1, 2, 2], "signal_strength": [1.0, 2.0, 3.0, 1.0, 2.0],
                       "test_error": [0.4, 0.2, 0.1, 0.4, 0.3]})
    b = calibration.boundary_from_grid(df, threshold=0.15).set_index("d")["boundary"]
    assert b[1] == pytest.approx(2.5)  # 0.2 -> 0.1 between x=2 and x=3 crosses 0.15 half-way
    assert math.isnan(b[2])


def test_fit_power_law_exact():
    d = np.array([100, 200, 400, 800, 1600.0])
    exponent, prefactor = calibration.fit_power_law(d, 0.7 * d**0.25)
    assert exponent == pytest.approx(0.25, abs=1e-10) and prefactor == pytest.approx(0.7, rel=1e-10)
    assert all(math.isnan(v) for v in calibration.fit_power_law([1.0], [2.0]))


def test_calibration_recovers_constant_and_exponent_from_noisy_boundaries():
    rng = np.random.default_rng(1)
    C1, P, sigma_p = 0.13, 2, 1.0
    d = np.repeat([100, 200, 400, 800, 1600, 3200], 4).astype(float)
    n = np.tile([10, 20, 40, 80], 6).astype(float)
    true = sgd_boundary(d, n, P, sigma_p, C1)
    noisy = true * np.exp(0.05 * rng.normal(size=true.shape))
    assert calibration.calibrate_sgd_constant(noisy, d, n, P, sigma_p) == pytest.approx(C1, rel=0.15)
    at_n20 = n == 20
    exponent, _ = calibration.fit_power_law(d[at_n20], noisy[at_n20])
    assert exponent == pytest.approx(0.25, abs=0.06)


def test_bootstrap_fit_recovers_exponent_with_ci():
    ds = [100, 200, 400, 800, 1600]
    table = synthetic_error_table({d: 0.9 * d**0.25 / 100**0.25 for d in ds}, seeds=range(6), noise=0.02)
    fit = calibration.bootstrap_fit(table, threshold=0.15, n_boot=60, seed=0)
    assert fit["exponent"] == pytest.approx(0.25, abs=0.05)
    assert fit["ci_low"] <= fit["boot_mean"] <= fit["ci_high"]
    assert fit["ci_low"] < 0.25 + 0.05 and fit["ci_high"] > 0.25 - 0.05
    assert fit["n_valid"] == 60


def test_linear_fit_r2():
    x = np.arange(10.0)
    slope, intercept, r2 = calibration.linear_fit_r2(x, -2 * x + 1)
    assert (slope, intercept, r2) == pytest.approx((-2, 1, 1))


def _est(value, lo, hi, seeds=10):
    return {"value": value, "ci_low": lo, "ci_high": hi, "seeds": seeds,
            "distinct": calibration.distinct_resamples(seeds), "n_valid": 100}


def test_band_rule_agrees_disagrees_and_refuses_thin_evidence():
    assert validation.band_rule(_est(0.2, 0.15, 0.25), 0.25, 0.125, 200)[0] == "agrees"
    assert validation.band_rule(_est(0.06, 0.05, 0.07), 0.25, 0.125, 200)[0] == "disagrees"  # old band took 0.06
    assert validation.band_rule(_est(0.6, 0.5, 0.7), 0.25, 0.125, 200)[0] == "disagrees"
    assert validation.band_rule(_est(0.1, 0.05, 0.13), 0.25, 0.125, 200)[0] == "agrees"  # CI meets the band
    assert validation.band_rule(_est(0.25, 0.2, 0.3, seeds=3), 0.25, 0.125, 200)[0] == "inconclusive"
    assert validation.band_rule(_est(float("nan"), 0, 1), 0.25, 0.125, 200)[0] == "inconclusive"
    assert validation.band_rule(_est(2.0, 1.9, 2.1), 2.0, 0.5, 200)[0] == "agrees"


def test_distinct_resamples_counts_multisets():
    assert calibration.distinct_resamples(3) == 10  # the user's example: 3 seeds give 10 distinct resamples
    assert calibration.distinct_resamples(10) == 92378
    assert calibration.distinct_resamples(0) == 0


def test_premise_gate_excludes_whole_cells_and_counts_them():
    df = pd.DataFrame({"d": [100, 100, 100, 100, 200, 200], "signal_strength": [1.0, 1.0, 2.0, 2.0, 1.0, 1.0],
                       "seed": [0, 1, 0, 1, 0, 1], "pre_train_error": [0.0, 0.05, 0.0, 0.0, 0.0, float("nan")],
                       "pre_train_loss": [0.01, 0.2, 0.3, 0.01, 0.01, 0.01]})
    ok = calibration.interpolated(df)
    assert ok.tolist() == [True, False, True, True, True, False]
    kept, used, excluded = calibration.gate_cells(df, ["d", "signal_strength"], ok)
    assert (used, excluded) == (1, 2) and kept.index.tolist() == [2, 3]  # one failing seed excludes the cell
    ok = calibration.interpolated(df, loss_eps=0.1)
    assert ok.tolist() == [True, False, False, True, True, False]


def test_pretrain_columns_fall_back_to_final_ones_without_unlearning():
    df = pd.DataFrame({"pretrain_test_error": [0.2, np.nan], "test_error": [0.3, 0.4],
                       "pretrain_train_error": [0.0, np.nan], "train_error": [0.1, 0.05],
                       "pretrain_train_loss": [0.01, np.nan], "train_loss": [0.2, 0.3],
                       "pretrain_test_error_se": [0.01, np.nan], "test_error_se": [0.02, 0.02]})
    out = validation.with_premise(df)
    assert out["pre_test_error"].tolist() == [0.2, 0.4]
    assert out["interpolated"].tolist() == [True, False]


def test_boundary_reasons_name_why_a_boundary_is_missing():
    grid = pd.DataFrame({"d": [1, 1, 2, 2, 3], "signal_strength": [1.0, 2.0, 1.0, 2.0, 1.0],
                         "pre_test_error": [0.3, 0.1, 0.3, 0.3, 0.1]})
    used = grid[grid["d"] != 3]
    reasons = calibration.boundary_reasons(used, "signal_strength", "d", 0.15, "pre_test_error", grid=grid)
    assert reasons[1][0] == pytest.approx(1.75) and reasons[1][1] == ""
    assert math.isnan(reasons[2][0]) and "never" in reasons[2][1]
    assert math.isnan(reasons[3][0]) and "excluded" in reasons[3][1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val")
    assert main(["validate", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_validate_tiny_complete_table(tiny_run):
    table = pd.read_csv(tiny_run / "validation.csv", keep_default_na=False)
    assert list(table.columns) == list(validation.COLUMNS)
    assert set(table["verdict"]) <= set(validation.VERDICTS)
    covered = {p.split()[0].rstrip("abcd") for p in table["prediction"]}
    assert {str(k) for k in range(2, 12)} <= covered
    for col in ("prediction", "measured", "expected", "verdict"):
        assert (table[col].astype(str).str.len() > 0).all(), col
    for v in table["value"]:
        assert v == "" or np.isfinite(float(v))
    assert not any("not run" in m for m in table["measured"]), table["measured"].tolist()
    assert ((table["cells_used"] + table["cells_excluded"]) > 0).all()
    # the gate's counts match the sweep: GD/SAM cells of heat_d whose every seed fitted its training set
    heat = validation.with_premise(pd.read_csv(tiny_run / "sweeps" / "heat_d" / "results.csv"))
    cells = heat.groupby(["optimizer", "d", "signal_strength"])["interpolated"].all()
    row4a = table[table["prediction"].str.startswith("4a")].iloc[0]
    assert (row4a["cells_used"], row4a["cells_excluded"]) == (int(cells.sum()), int((~cells).sum()))
    md = (tiny_run / "validation.md").read_text()
    assert "| prediction |" in md and "## Settings" in md


def test_validate_reuses_cache(tiny_run):
    before = (tiny_run / "validation.csv").read_text()
    table = validation.validate(validation.TINY, tiny_run, only=["2"])
    assert (table["prediction"] == "3").any()  # not selected: still a filled row
    assert table.loc[table["prediction"] == "3", "verdict"].item() == "inconclusive"
    assert before.splitlines()[1] == (tiny_run / "validation.csv").read_text().splitlines()[1]
