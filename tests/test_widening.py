"""theory.widening: window fits recover a known power-law boundary; excluded runs are counted; the small preset
runs end to end (sweeps, CSVs, figure) through the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theory.widening import SLOPE_COLUMNS, boundary_table, main, window_slopes, windows

P, THR = 0.1, 0.15


def synthetic(axis: str, values, exponent: float, c: float = 0.7, seeds=range(10), seed: int = 0) -> pd.DataFrame:
    """error = p + 0.3 1(||mu|| < c x^exponent) + noise, on a fine geometric ||mu|| grid around each boundary."""
    rng = np.random.default_rng(seed)
    rows = []
    for x in values:
        true = c * x**exponent
        for s in true * np.geomspace(0.6, 1.6, 41) * (1 + 0.003 * rng.standard_normal()):
            for k in seeds:
                err = P + 0.3 * (s < true) + 0.02 * rng.standard_normal()
                rows.append({axis: x, "signal_strength": float(s), "seed": k, "train_error": 0.0, "test_error": err})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("axis, values, exponent", [
    ("d", [100 * 2**k for k in range(11)], 0.25),
    ("n", [10 * 2**k for k in range(7)], -0.25),
])
def test_window_fits_recover_the_known_slope(axis, values, exponent):
    df = synthetic(axis, values, exponent)
    out = window_slopes(df, axis, THR, min_points=3, sliding_points=4, n_boot=30)
    assert list(out.columns) == list(SLOPE_COLUMNS)
    n = len(values)
    assert (out["window"] == "expanding").sum() == n - 2 and (out["window"] == "sliding").sum() == n - 3
    assert np.allclose(out["slope"], exponent, atol=0.02), out
    assert ((out["ci_low"] <= out["slope"] + 1e-12) & (out["slope"] <= out["ci_high"] + 1e-12)).all()
    assert (out["ci_low"] > exponent - 0.05).all() and (out["ci_high"] < exponent + 0.05).all()
    assert (out["cells_excluded"] == 0).all()
    assert (out["points_used"] == out["window_hi"].map(lambda h: sum(v <= h for v in values))
            - out["window_lo"].map(lambda lo: sum(v < lo for v in values))).all()
    # a wrong law is not recovered: the same fit on a flat boundary gives slope ~0
    flat = window_slopes(synthetic(axis, values, 0.0), axis, THR, n_boot=10)
    assert np.allclose(flat["slope"], 0.0, atol=0.02)


def test_runs_that_did_not_interpolate_are_excluded_and_counted():
    ds = [100, 400, 1600, 6400, 25600]
    df = synthetic("d", ds, 0.25)
    # at d = 25600, every seed of the cells at 0.62-0.78 of the boundary "did not interpolate" and shows a low error:
    # used, they would pull that boundary down by a third and bend the slope
    ratio = df["signal_strength"] / (0.7 * df["d"] ** 0.25)
    bad = (df["d"] == 25600) & ratio.between(0.62, 0.78)
    df.loc[bad, "train_error"] = 0.05
    df.loc[bad, "test_error"] = P
    nan = (df["d"] == 1600) & (df["seed"] == 3)
    df.loc[nan, "test_error"] = np.nan  # non-finite: excluded too
    out = window_slopes(df, "d", THR, min_points=3, sliding_points=3, n_boot=20)
    assert np.allclose(out["slope"], 0.25, atol=0.02), out
    n_bad, n_nan = int(bad.sum()), int(nan.sum())
    assert n_bad >= 40
    for _, row in out.iterrows():
        expect = n_bad * (row["window_hi"] >= 25600) + n_nan * (row["window_lo"] <= 1600 <= row["window_hi"])
        assert row["cells_excluded"] == expect
    # without the exclusion the slope would be off: the test above can fail
    naive = df.assign(train_error=0.0).fillna({"test_error": P + 0.3})
    wrong = window_slopes(naive, "d", THR, min_points=5, sliding_points=9, n_boot=5)
    assert wrong["slope"].iloc[0] < 0.25 - 0.03
    table = boundary_table(df, "d", THR)
    assert table.set_index("value").loc[25600, "runs_excluded"] == n_bad


def test_axis_values_whose_grid_misses_the_crossing_are_left_out():
    df = synthetic("d", [100, 400, 1600, 6400], 0.25)
    above = synthetic("d", [25600], 0.25)
    above = above[above["signal_strength"] > 0.7 * 25600**0.25 * 1.05]  # every cell already benign
    out = window_slopes(pd.concat([df, above]), "d", THR, min_points=3, sliding_points=5, n_boot=10)
    last = out[(out["window"] == "expanding") & (out["window_hi"] == 25600)].iloc[0]
    assert last["points_used"] == 4 and abs(last["slope"] - 0.25) < 0.02


def test_windows():
    w = windows([1, 2, 4, 8, 16], 3, 4)
    assert w == [("expanding", [1, 2, 4]), ("expanding", [1, 2, 4, 8]), ("expanding", [1, 2, 4, 8, 16]),
                 ("sliding", [1, 2, 4, 8]), ("sliding", [2, 4, 8, 16])]
    assert windows([1, 2], 3, 4) == []


def test_small_preset_end_to_end(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--preset", "small"]) == 0
    slopes = pd.read_csv(tmp_path / "slopes.csv")
    assert list(slopes.columns) == list(SLOPE_COLUMNS)
    assert set(slopes["axis"]) == {"d", "n"}
    assert len(slopes) == (2 + 2) + (1 + 1)  # d: 4 values, n: 3 values; min 3 points, sliding 3
    assert (slopes["cells_excluded"] >= 0).all()
    bounds = pd.read_csv(tmp_path / "boundaries.csv")
    assert len(bounds) == 4 + 3 and (bounds["runs"] > 0).all()
    assert (tmp_path / "slope_windows.png").stat().st_size > 0 and (tmp_path / "slope_windows.pdf").exists()
    assert "wall" in capsys.readouterr().out
    # a second call resumes from the cache: no new simulations, same table
    main(["--out", str(tmp_path), "--preset", "small", "--no-figure"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "slopes.csv"), slopes)
