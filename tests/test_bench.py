"""``simulations.bench`` (the benchmark script): what each benchmark runs and how its numbers are derived.

The timings themselves are not asserted (speed lives in the benchmark's own table and JSON); what is pinned is
the work each benchmark does (which configurations, which grid, which device), the arithmetic that turns timings
into rates (FLOP counts, the matmul rate, the per-cell means and standard errors) and the record it writes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from simulations import bench
from simulations.config import Preset


# ------------------------------------------------------------------------------------------- arithmetic
def test_weights_flops_hand_computed():
    # 16 configurations x (10 + 2) passes x 2 matmuls x 2 (2m)(2n) d with n = 100, d = 4000, m = 50
    assert bench.weights_flops(16, 10, 100, 4000, 50) == 16 * 12 * 2 * (2 * 100 * 200 * 4000) == 6.144e10
    assert bench.weights_flops(1, 0, 1, 1, 1) == 2 * 2 * (2 * 2 * 2 * 1)
    assert bench.weights_flops(3, 5, 7, 11, 13) == 3 * 7 * 2 * 2 * 26 * 14 * 11


def test_grid_cells_mean_and_standard_error_per_cell_sorted():
    df = pd.DataFrame({"signal_strength": [2.0, 1.0, 1.0, 1.0, 2.0, 1.0],
                       "d": [10, 20, 20, 10, 10, 10],
                       "test_error": [0.5, 0.2, 0.4, 0.1, 0.3, 0.2],
                       "seed": [0, 0, 1, 0, 1, 1]})
    cells = bench.grid_cells(df)
    assert cells["signal_strength"] == [1.0, 1.0, 2.0]
    assert cells["d"] == [10, 20, 10]
    assert cells["test_error"] == [0.15, 0.3, 0.4]
    se = np.std([0.1, 0.2], ddof=1) / np.sqrt(2)  # the sample standard deviation over the seeds / sqrt(seeds)
    assert cells["test_error_se"] == [round(se, 5), round(np.std([0.2, 0.4], ddof=1) / np.sqrt(2), 5),
                                      round(np.std([0.5, 0.3], ddof=1) / np.sqrt(2), 5)]
    assert cells["test_error_se"][0] == 0.05
    # rounded to 5 decimals
    odd = bench.grid_cells(pd.DataFrame({"signal_strength": [1.0] * 3, "d": [5] * 3, "test_error": [0.1, 0.2, 0.2]}))
    assert odd["test_error"] == [0.16667] and odd["test_error_se"] == [0.03333]


class _Matrix:
    """Stands in for a square matrix: counts the products taken with it."""

    products = 0

    def __matmul__(self, other):
        _Matrix.products += 1
        return self


def test_matmul_rate_is_the_best_trial_of_reps_square_matmuls(monkeypatch):
    made, syncs = [], []
    monkeypatch.setattr(bench.torch, "randn", lambda *a, **kw: made.append((a, kw)) or _Matrix())
    monkeypatch.setattr(bench, "_sync", lambda device: syncs.append(device))
    _Matrix.products = 0
    ticks = iter([0.0, 0.5, 10.0, 10.25, 20.0, 21.0])  # trials of 0.5, 0.25 and 1 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    assert bench.matmul_rate(torch.float64, "cuda:1", size=4, reps=2, trials=3) == 2 * 4**3 * 2 / 0.25
    assert made == [((4, 4), {"dtype": torch.float64, "device": "cuda:1"})] * 2
    assert _Matrix.products == 1 + 3 * 2  # one warm-up product, then trials x reps
    assert syncs == ["cuda:1"] * 6  # before and after each trial
    # the defaults: 2048 x 2048, 10 products per trial, 3 trials; a rate below 1 FLOP/s is still the best one
    made.clear()
    syncs.clear()
    _Matrix.products = 0
    ticks = iter([0.0, 4e12, 0.0, 2e12, 0.0, 8e12])
    assert bench.matmul_rate(torch.float32, "cpu") == 2 * 2048**3 * 10 / 2e12
    assert made == [((2048, 2048), {"dtype": torch.float32, "device": "cpu"})] * 2
    assert _Matrix.products == 1 + 3 * 10 and syncs == ["cpu"] * 6


def test_sync_waits_for_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append(1))
    bench._sync("cpu")
    assert calls == []
    bench._sync("cuda:0")
    bench._sync(torch.device("cuda", 1))
    assert calls == [1, 1]


# --------------------------------------------------------------------------------------------- the grid
def _tiny_paper(monkeypatch):
    preset = Preset("paper", "a tiny stand-in", base=dict(n=8, P=2, m=3, sigma_p=1.0, label_flip=0.1,
                                                           noise_projected=False, lr=0.3, steps=5, n_test=300,
                                                           forget_size=2, unlearn_method="none",
                                                           precision="float64"),
                    grid={"signal_strength": [1.0, 3.0], "d": [20, 30, 40, 50, 60, 70], "optimizer": ["gd", "sam"],
                          "seed": [0, 1, 2]})
    monkeypatch.setattr(bench, "PRESETS", {**bench.PRESETS, "paper": preset})
    return preset


@pytest.mark.parametrize("quick", [True, False])
def test_bench_grid_runs_the_paper_grid_with_gd_in_float32_and_summarises_its_results(monkeypatch, quick):
    preset = _tiny_paper(monkeypatch)
    seen = {}
    real = bench.run_sweep

    def spy(base, grid, folder, **kw):
        seen.update(base=base, grid=grid, folder=Path(folder), kw=kw)
        summary = real(base, grid, folder, **{**kw, "executor": "inprocess"})
        seen["csv"] = pd.read_csv(Path(folder) / "results.csv")
        return summary

    monkeypatch.setattr(bench, "run_sweep", spy)
    before = set(Path(tempfile.gettempdir()).glob("sim-bench-*"))
    out = bench.bench_grid("cpu", quick, "pool", 3)
    assert seen["base"] == {**preset.base, "precision": "float32"}
    ds = [20, 30, 40, 50, 60] if quick else [20, 30, 40, 50, 60, 70]
    assert seen["grid"] == {"signal_strength": [1.0, 3.0], "d": ds, "optimizer": ["gd"], "seed": [0, 1, 2]}
    assert preset.grid["optimizer"] == ["gd", "sam"] and len(preset.grid["d"]) == 6  # the preset is not changed
    assert seen["kw"] == {"executor": "pool", "workers": 3, "device": "cpu", "progress": False}
    assert seen["folder"].name.startswith("sim-bench-") and not seen["folder"].exists()  # removed afterwards
    assert set(Path(tempfile.gettempdir()).glob("sim-bench-*")) == before
    df = seen["csv"]
    runs = 2 * len(ds) * 3
    assert len(df) == runs and set(df["optimizer"]) == {"gd"} and set(df["precision"]) == {"float32"}
    assert out["grid_runs"] == runs
    assert out["grid_executor"] == "pool" and out["grid_precision"] == "float32"
    assert out["grid_seconds"] > 0 and out["grid_seconds_per_run"] == out["grid_seconds"] / runs
    assert out["grid_cells"] == bench.grid_cells(df)
    assert len(out["grid_cells"]["d"]) == 2 * len(ds)
    assert out["grid_mean_run_test_error_se"] == float(df["test_error_se"].mean())
    np.testing.assert_allclose(df["test_error_se"], np.sqrt(df["test_error"] * (1 - df["test_error"]) / 300))


def test_bench_grid_removes_its_folder_when_the_sweep_fails(monkeypatch):
    _tiny_paper(monkeypatch)
    seen = []

    def failing(base, grid, folder, **kw):
        seen.append(Path(folder))
        (Path(folder) / "partial.txt").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(bench, "run_sweep", failing)
    with pytest.raises(RuntimeError, match="boom"):
        bench.bench_grid("cpu", True, "inprocess", 1)
    assert not seen[0].exists()

    def gone(base, grid, folder, **kw):  # the folder is already gone: the cleanup does not mask the sweep's error
        Path(folder).rmdir()
        raise RuntimeError("boom too")

    monkeypatch.setattr(bench, "run_sweep", gone)
    with pytest.raises(RuntimeError, match="boom too"):
        bench.bench_grid("cpu", True, "inprocess", 1)


def test_bench_timings_are_end_minus_start(monkeypatch):
    _tiny_paper(monkeypatch)

    def sweep(base, grid, folder, **kw):
        pd.DataFrame({"signal_strength": [1.0], "d": [20], "test_error": [0.2], "test_error_se": [0.01]}).to_csv(
            Path(folder) / "results.csv", index=False)
        return {"runs": 4}

    monkeypatch.setattr(bench, "run_sweep", sweep)
    monkeypatch.setattr(bench, "simulate", lambda configs, device: [_Result(0.5)])
    monkeypatch.setattr(bench, "matmul_rate", lambda dtype, device: 1e9)
    ticks = iter([100.0, 103.5, 200.0, 202.0, 300.0, 301.25])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    grid = bench.bench_grid("cpu", True, "inprocess", 1)
    assert grid["grid_seconds"] == 3.5 and grid["grid_seconds_per_run"] == 3.5 / 4
    weights = bench.bench_weights("cpu", True)
    assert weights["weights_seconds"] == 2.0
    assert weights["weights_flops_per_s"] == bench.weights_flops(16, 10, 100, 4000, 50) / 2.0
    assert bench.bench_large("cpu", True)["large_run_seconds"] == 1.25


def test_bench_grid_per_run_time_of_an_empty_sweep_is_not_a_division_by_zero(monkeypatch):
    _tiny_paper(monkeypatch)

    def empty(base, grid, folder, **kw):
        pd.DataFrame({"signal_strength": [], "d": [], "test_error": [], "test_error_se": []}).to_csv(
            Path(folder) / "results.csv", index=False)
        return {"runs": 0}

    monkeypatch.setattr(bench, "run_sweep", empty)
    out = bench.bench_grid("cpu", True, "inprocess", 1)
    assert out["grid_runs"] == 0 and out["grid_seconds_per_run"] == out["grid_seconds"]


# -------------------------------------------------------------------------------- weights and large run
class _Result:
    def __init__(self, test_error):
        self.metrics = {"test_error": test_error}


@pytest.mark.parametrize("quick,steps", [(True, 10), (False, 40)])
def test_bench_weights_configurations_flops_and_fraction(monkeypatch, quick, steps):
    calls = []
    monkeypatch.setattr(bench, "simulate", lambda configs, device: calls.append((list(configs), device)))
    monkeypatch.setattr(bench, "matmul_rate", lambda dtype, device: calls.append((dtype, device)) or 4e9)
    monkeypatch.setattr(bench, "_sync", lambda device: calls.append(("sync", device)))
    out = bench.bench_weights("cuda:2", quick)
    (warm, dev0), (dtype, dev1), sync0, (configs, dev2), sync1 = calls  # the timed run between two syncs
    assert dev0 == dev1 == dev2 == "cuda:2" and dtype == torch.float32
    assert sync0 == sync1 == ("sync", "cuda:2")
    assert warm == configs[:1] and len(configs) == 16
    assert [(c.signal_strength, c.seed) for c in configs] == [(1.0 + 0.25 * k, s) for k in range(4)
                                                               for s in range(4)]
    for c in configs:
        assert (c.backend, c.n, c.d, c.m, c.steps, c.n_test, c.precision, c.unlearn_method, c.optimizer,
                c.log_points) == ("weights", 100, 4000, 50, steps, 64, "float32", "none", "gd", 2)
        assert c.shared_noise  # the FLOP count assumes one stored noise patch per sample
    flops = bench.weights_flops(16, steps, 100, 4000, 50)
    assert out["weights_configs"] == 16
    assert out["weights_shape"] == {"n": 100, "d": 4000, "m": 50, "steps": steps}
    assert out["weights_seconds"] > 0
    assert out["weights_flops_per_s"] == flops / out["weights_seconds"]
    assert out["matmul_peak_flops_per_s"] == 4e9
    assert out["weights_fraction_of_matmul_peak"] == flops / out["weights_seconds"] / 4e9


@pytest.mark.parametrize("quick,steps", [(True, 100), (False, 1000)])
def test_bench_large_runs_one_sam_configuration(monkeypatch, quick, steps):
    calls = []
    monkeypatch.setattr(bench, "simulate", lambda configs, device: calls.append((configs, device)) or [_Result(0.25)])
    out = bench.bench_large("cuda", quick)
    (configs, device), = calls
    assert device == "cuda" and len(configs) == 1
    c = configs[0]
    assert (c.n, c.d, c.m, c.optimizer, c.rho, c.lr, c.steps, c.unlearn_method, c.n_test) == \
        (1000, 1_000_000, 10, "sam", 0.3, 0.1, steps, "none", 10_000)
    assert c.backend == "gram"
    assert out["large_run_steps"] == steps and out["large_run_config"] == c.to_dict()
    assert out["large_run_test_error"] == 0.25 and out["large_run_seconds"] > 0


# ------------------------------------------------------------------------------------------------- main
FAKE = {"grid": {"grid_runs": 30, "grid_seconds": 12.345, "x_grid": 1},
        "weights": {"weights_fraction_of_matmul_peak": 0.1234, "weights_flops_per_s": 2.35e9,
                    "matmul_peak_flops_per_s": 2.005e10},
        "large": {"large_run_seconds": 3.21, "large_run_steps": 100}}


def _fake_benches(monkeypatch, calls):
    monkeypatch.setattr(bench, "bench_grid", lambda *a: calls.append(("grid", a)) or dict(FAKE["grid"]))
    monkeypatch.setattr(bench, "bench_weights", lambda *a: calls.append(("weights", a)) or dict(FAKE["weights"]))
    monkeypatch.setattr(bench, "bench_large", lambda *a: calls.append(("large", a)) or dict(FAKE["large"]))


def test_main_prints_the_table_and_writes_the_record(monkeypatch, capsys, tmp_path):
    from simulations.provenance import provenance

    calls = []
    _fake_benches(monkeypatch, calls)
    out = tmp_path / "two" / "levels" / "bench.json"
    assert bench.main(["--out", str(out), "--quick", "--executor", "inprocess", "--workers", "5"]) == 0
    assert calls == [("grid", ("cpu", True, "inprocess", 5)), ("weights", ("cpu", True)), ("large", ("cpu", True))]
    lines = capsys.readouterr().out.splitlines()
    device = provenance("cpu")["device"]
    assert lines == [
        f"device: {device}",
        f"{'benchmark':34s} {'measured':>12s} {'target':>10s}",
        f"{'grid_seconds (30 runs)':34s} {'12.3':>12s} {'<= 60':>10s}",
        f"{'weights_fraction_of_matmul_peak':34s} {'0.123':>12s} {'>= 0.25':>10s}   (2.4 of 20.1 GFLOP/s)",
        f"{'large_run_seconds (100 steps)':34s} {'3.2':>12s} {'<= 10':>10s}",
        f"wrote {out}",
    ]
    record = json.loads(out.read_text())
    assert record["device"] == device and record["provenance"]["device"] == device
    assert record["quick"] is True and record["torch_threads"] == torch.get_num_threads()
    for part in FAKE.values():
        for k, v in part.items():
            assert record[k] == v, k
    assert record["targets"] == {"grid_seconds": 60.0, "weights_fraction_of_matmul_peak": 0.25,
                                 "large_run_seconds": 10.0}


def test_main_records_the_provenance_of_the_chosen_device_and_writes_into_an_existing_folder(monkeypatch, capsys,
                                                                                             tmp_path):
    calls = []
    _fake_benches(monkeypatch, calls)
    monkeypatch.setattr(bench, "provenance", lambda device: {"device": f"the {device} device", "seed": None})
    out = tmp_path / "bench.json"  # its folder exists already
    assert bench.main(["--device", "cuda:3", "--out", str(out), "--executor", "pool"]) == 0
    assert calls[0] == ("grid", ("cuda:3", False, "pool", 2))
    record = json.loads(out.read_text())
    assert record["device"] == "the cuda:3 device"
    assert record["provenance"] == {"device": "the cuda:3 device", "seed": None}
    assert capsys.readouterr().out.startswith("device: the cuda:3 device\n")


def test_main_defaults_and_no_file_without_out(monkeypatch, capsys, tmp_path):
    calls = []
    _fake_benches(monkeypatch, calls)
    monkeypatch.chdir(tmp_path)
    assert bench.main([]) == 0
    assert calls == [("grid", ("cpu", False, "pool", 2)), ("weights", ("cpu", False)), ("large", ("cpu", False))]
    printed = capsys.readouterr().out
    assert "wrote" not in printed and list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        bench.main(["--executor", "threads"])  # not one of inprocess / pool
    with pytest.raises(SystemExit):
        bench.main(["--workers", "two"])
    assert len(calls) == 3


def test_help_is_the_module_docstring_with_its_line_breaks(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: python -m simulations.bench")
    for line in bench.__doc__.strip().splitlines():
        assert line in printed.splitlines(), line
    flat = " ".join(printed.split())
    assert "--out OUT write the JSON here" in flat
    assert "--quick a small fraction of each benchmark (smoke check)" in flat
    assert "--executor {inprocess,pool}" in flat
