"""Cached, resumable sweeps: results.csv, the chunk cache, executors, divergence."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from _helpers import TINY

import simulations.executors as executors
from simulations import SimConfig, simulate
from simulations.config import FIELD_NAMES
from simulations.store import ResultStore
from simulations.sweep import expand_grid, run_sweep

BASE = {**TINY, "steps": 10, "n_test": 100, "log_points": 4}
GRID = {"signal_strength": [0.5, 2.0], "optimizer": ["gd", "sam"], "seed": [0, 1]}  # 8 runs
REQUIRED = ("hash", *FIELD_NAMES, "test_error", "test_error_se", "train_loss", "train_error", "retain_acc",
            "forget_acc", "forget_flip_acc", "signal_coef_max", "noise_coef_max", "diverged", "wall_s")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _chunks(out):
    return sorted((out / "cache").glob("chunk-*.json"))


def test_results_csv_has_one_complete_row_per_cell(tmp_path):
    summary = run_sweep(BASE, GRID, tmp_path, chunk_runs=3)
    assert summary["runs"] == 8 and summary["computed"] == 8 and summary["skipped"] == 0
    rows = _rows(tmp_path / "results.csv")
    configs = expand_grid(BASE, GRID)
    assert len(rows) == len(configs)
    assert [r["hash"] for r in rows] == [c.hash for c in configs]
    for col in REQUIRED:
        assert col in rows[0], col
    for row, cfg in zip(rows, configs):
        assert all(row[col] != "" for col in REQUIRED), row
        assert float(row["signal_strength"]) == cfg.signal_strength and row["optimizer"] == cfg.optimizer
        assert 0 <= float(row["test_error"]) <= 1 and row["diverged"] == "False"
    # the rows are the results of simulate itself
    direct = simulate(configs)
    for row, res in zip(rows, direct):
        assert float(row["test_error"]) == pytest.approx(res.metrics["test_error"], abs=1e-12)
        assert float(row["train_loss"]) == pytest.approx(res.metrics["train_loss"], rel=1e-9)
    sizes = [len(json.loads(p.read_text())["rows"]) for p in _chunks(tmp_path)]  # units of at most 3 compatible runs
    assert sum(sizes) == 8 and max(sizes) <= 3 and len(sizes) == 4  # gd and sam are separate batches of 4
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["runs"] == 8 and "provenance" in manifest


def test_rerun_is_cached_and_a_deleted_chunk_is_recomputed(tmp_path):
    run_sweep(BASE, GRID, tmp_path, chunk_runs=3)
    first = _rows(tmp_path / "results.csv")
    again = run_sweep(BASE, GRID, tmp_path, chunk_runs=3)
    assert again["computed"] == 0 and again["skipped"] == 8
    assert _rows(tmp_path / "results.csv") == first
    victim = _chunks(tmp_path)[0]
    lost = {row["hash"] for row in json.loads(victim.read_text())["rows"]}
    victim.unlink()
    third = run_sweep(BASE, GRID, tmp_path, chunk_runs=3)
    assert third["computed"] == len(lost) > 0
    rows = _rows(tmp_path / "results.csv")
    assert len(rows) == 8
    by_hash = {r["hash"]: r for r in first}
    for row in rows:  # recomputed cells give the same numbers
        assert row["test_error"] == by_hash[row["hash"]]["test_error"]
    # a larger grid reuses the cached cells
    bigger = run_sweep(BASE, {**GRID, "seed": [0, 1, 2]}, tmp_path, chunk_runs=3)
    assert bigger["computed"] == 4 and bigger["skipped"] == 8


def test_interrupted_sweep_keeps_finished_chunks_and_resumes(tmp_path, monkeypatch):
    real = executors.run_unit
    calls = []

    def flaky(configs, **kw):
        if calls:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(len(configs))
        return real(configs, **kw)

    monkeypatch.setattr(executors, "run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(BASE, GRID, tmp_path, chunk_runs=2)
    assert len(_chunks(tmp_path)) == 1
    partial = _rows(tmp_path / "results.csv")  # what finished is already in the table
    assert len(partial) == calls[0] == 2
    assert not list((tmp_path / "cache").glob(".*.tmp"))
    monkeypatch.setattr(executors, "run_unit", real)
    resumed = run_sweep(BASE, GRID, tmp_path, chunk_runs=2)
    assert resumed["computed"] == 6 and resumed["skipped"] == 2
    assert len(_rows(tmp_path / "results.csv")) == 8


def test_store_trajectory_returns_arrays(tmp_path):
    run_sweep(BASE, {"seed": [0, 1]}, tmp_path, save_coefficients=True)
    store = ResultStore(tmp_path / "cache")
    cfg = expand_grid(BASE, {"seed": [1]})[0]
    traj = store.trajectory(cfg.hash)
    direct = simulate([cfg], save_coefficients=True)[0]
    assert set(direct.trajectory) | set(direct.coefficients) <= set(traj)
    for key, value in {**direct.trajectory, **direct.coefficients}.items():
        assert isinstance(traj[key], np.ndarray)
        assert traj[key].shape == value.shape, key
        np.testing.assert_allclose(traj[key], value, rtol=1e-6, atol=1e-6, err_msg=key)  # stored as float32
    assert store.row(cfg.hash)["test_error"] == pytest.approx(direct.metrics["test_error"])
    with pytest.raises(KeyError):
        store.trajectory("0" * 16)


@pytest.mark.parametrize("executor,options", [("pool", {}), ("submitit", {"cluster": "debug"}),
                                              ("submitit", {"cluster": "local"})])
def test_executors_give_the_same_rows(tmp_path, executor, options):
    grid = {"seed": [0, 1], "optimizer": ["gd", "sam"]}
    ref = run_sweep(BASE, grid, tmp_path / "inprocess")
    chunk_runs = 1 if executor != "submitit" or options["cluster"] == "debug" else 4
    other = run_sweep(BASE, grid, tmp_path / executor, executor=executor, workers=2, executor_options=options,
                      chunk_runs=chunk_runs)
    assert other["computed"] == 4
    a, b = _rows(ref["results"]), _rows(other["results"])
    assert [r["hash"] for r in a] == [r["hash"] for r in b]
    for ra, rb in zip(a, b):
        for col in ("test_error", "train_loss", "forget_acc", "signal_coef_max", "noise_coef_max", "diverged"):
            assert ra[col] == rb[col], col


def test_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    base = {**BASE, "activation": "polyrelu", "q": 3.0, "sigma_0": 1.0}
    summary = run_sweep(base, {"lr": [0.01, 1e6], "seed": [0, 1]}, tmp_path)
    rows = {(float(r["lr"]), int(r["seed"])): r for r in _rows(tmp_path / "results.csv")}
    assert summary["computed"] == 4 and len(rows) == 4
    for seed in (0, 1):
        bad, good = rows[(1e6, seed)], rows[(0.01, seed)]
        assert bad["diverged"] == "True" and int(bad["diverged_step"]) >= 0
        assert math.isnan(float(bad["test_error"]))
        assert good["diverged"] == "False" and int(good["diverged_step"]) == -1
        assert math.isfinite(float(good["test_error"])) and math.isfinite(float(good["train_loss"]))


@pytest.mark.parametrize("backend", ["weights", "gram"])
def test_divergence_on_the_last_step_is_flagged(backend):
    """A run whose loss first turns non-finite exactly at its final state is a diverged run, not a result.

    (Regression: the divergence flag used to come only from the loss *before* each update, so such a run was
    reported diverged=False with a non-finite train_loss or a meaningless test error.)"""
    probe = SimConfig(**{**BASE, "backend": backend, "activation": "polyrelu", "q": 3.0, "sigma_0": 1.0,
                         "lr": 1e6, "steps": 8, "log_points": 9})
    losses = simulate([probe])[0].trajectory["train_loss"]
    assert math.isfinite(losses[0]) and not math.isfinite(losses[-1])
    last = int(np.argmax(~np.isfinite(losses)))  # first step whose state has a non-finite loss
    bad = probe.replace(steps=last, log_points=last + 1)
    res_bad, res_good = simulate([bad, bad.replace(lr=0.01)])
    assert np.all(np.isfinite(res_bad.trajectory["train_loss"][:-1]))  # nothing showed before the end
    assert res_bad.metrics["diverged"] is True and res_bad.metrics["diverged_step"] == last
    assert math.isnan(res_bad.metrics["test_error"]) and math.isnan(res_bad.metrics["train_loss"])
    assert res_good.metrics["diverged"] is False and math.isfinite(res_good.metrics["test_error"])


def test_huge_but_finite_weights_do_not_abort_the_batch():
    cfg = SimConfig(**{**BASE, "lr": 1e200, "steps": 3})
    huge, healthy = simulate([cfg, cfg.replace(lr=0.1)])
    assert math.isfinite(healthy.metrics["test_error"])
    assert huge.metrics["diverged"] or math.isfinite(huge.metrics["test_error"])
