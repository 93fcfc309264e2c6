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


def test_slope_verdict_rules():
    assert validation.slope_verdict(0.2, 0.15, 0.25, (0.05, 0.5), +1) == "agrees"
    assert validation.slope_verdict(-0.2, -0.3, -0.1, (0.05, 0.5), +1) == "disagrees"
    assert validation.slope_verdict(-0.2, -0.3, -0.1, (-0.5, -0.05), -1) == "agrees"
    assert validation.slope_verdict(float("nan"), 0, 1, (0.05, 0.5), +1) == "inconclusive"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val")
    assert main(["validate", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_validate_tiny_complete_table(tiny_run):
    table = pd.read_csv(tiny_run / "validation.csv", keep_default_na=False)
    assert list(table.columns) == list(validation.COLUMNS)
    assert set(table["verdict"]) <= set(validation.VERDICTS)
    covered = {p.split()[0].rstrip("abc") for p in table["prediction"]}
    assert {str(k) for k in range(2, 12)} <= covered
    for col in ("prediction", "measured", "expected", "verdict"):
        assert (table[col].astype(str).str.len() > 0).all(), col
    for v in table["value"]:
        assert v == "" or np.isfinite(float(v))
    assert not any("not run" in m for m in table["measured"]), table["measured"].tolist()
    md = (tiny_run / "validation.md").read_text()
    assert "| prediction |" in md and "## Settings" in md


def test_validate_reuses_cache(tiny_run):
    before = (tiny_run / "validation.csv").read_text()
    table = validation.validate(validation.TINY, tiny_run, only=["2"])
    assert (table["prediction"] == "3").any()  # not selected: still a filled row
    assert table.loc[table["prediction"] == "3", "verdict"].item() == "inconclusive"
    assert before.splitlines()[1] == (tiny_run / "validation.csv").read_text().splitlines()[1]


def test_bootstrap_constants_recover_known_constants():
    """An error surface p + 0.4 exp(-n mu^4 / (K d P^4)) crosses p + delta exactly at C = K ln(0.4 / delta)."""
    import numpy as np
    import pandas as pd

    from theory.calibration import bootstrap_constants

    p, K, n, P = 0.1, 0.05, 20, 2
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for d in (100, 200, 400, 800, 1600):
            for s in np.arange(0.05, 8.0, 0.01):
                err = p + 0.4 * np.exp(-n * s**4 / (K * d * P**4)) + rng.normal(0, 0.002)
                rows.append({"seed": seed, "d": d, "signal_strength": s, "optimizer": "gd", "test_error": err})
                rows.append({"seed": seed, "d": d, "signal_strength": s, "optimizer": "sam",
                             "test_error": p + 0.4 * (s < 1.3) + rng.normal(0, 0.002)})
    consts = bootstrap_constants(pd.DataFrame(rows), {"C1": ("gd", p + 0.05), "C3": ("gd", p + 0.1),
                                                      "C_sam": ("sam", p + 0.05)}, n=n, P=P, n_boot=20)
    assert consts["C1"]["value"] == pytest.approx(K * np.log(8), rel=0.05)
    assert consts["C3"]["value"] == pytest.approx(K * np.log(4), rel=0.05)
    assert consts["C_sam"]["value"] == pytest.approx(1.3, abs=0.02)
    assert consts["C1"]["ci_low"] <= consts["C1"]["value"] <= consts["C1"]["ci_high"]
