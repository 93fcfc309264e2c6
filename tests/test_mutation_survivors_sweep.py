"""Exact behaviour of :mod:`simulations.sweep` and :mod:`simulations.executors`, for mutation testing.

Pins, with hand-computed values: ``expand_grid`` (axis order, linked ``a+b`` axes, coercion, the refusal naming the
cell), ``grid_size``, ``available_memory`` (``MemAvailable`` in kB, the 8 GiB fallback), ``check_memory`` (both
refusals, exact messages, both sides of each threshold), ``run_sweep`` (argument refusals, the budget handed to the
executor, what ``make_executor`` and the runner receive, summary, ``run.json``/``manifest.json`` contents, the
refusal of another grid, tuple grids, cache folder, corrupt/stale/coefficient-less chunks and their stderr lines,
stale temporaries), ``_execute`` (progress bar, interruption by Ctrl-C and SIGTERM, the rows listed after a stop,
``tidy``), ``_units`` (chunk splitting), ``compose_grid`` (every refusal message, order, dedup), and in executors
``run_unit``, ``InProcess``, ``process_start``, ``watch_owner``, ``watch_parent``, ``ProcessPool``,
``stop_workers``, ``Submitit``, ``_SubmititCall`` and ``make_executor`` — with fakes for threads, processes,
``/proc`` and submitit, so nothing here spawns a process or sleeps.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import math
import os
import re
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TINY

import simulations.executors as executors
import simulations.store as store_module
import simulations.sweep as sweep
from simulations import SimConfig
from simulations.backends import bytes_per_config
from simulations.config import ConfigError
from simulations.provenance import device_name, numerics_version
from simulations.sweep import (Terminated, _units, check_memory, compose_grid, expand_grid, grid_size,
                               run_sweep)

BASE = {**TINY, "steps": 10, "n_test": 100, "log_points": 4}


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def _hashes(path) -> list[str]:
    with open(path, newline="") as fh:
        return [r["hash"] for r in csv.DictReader(fh)]


def _cfg(**kw) -> SimConfig:
    return SimConfig(**{**BASE, **kw})


# ---------------------------------------------------------------------------------------------------- expand_grid


def test_expand_grid_order_linked_axes_coercion_and_refusal():
    base = {**BASE, "lr": "0.25"}
    grid = {"optimizer+unlearn_optimizer": [("sam", "gd"), ("gd", "sam")], "seed": [3, "4"],
            "activation": ["polyrelu"]}
    configs = expand_grid(base, grid)
    got = [(c.optimizer, c.unlearn_optimizer, c.seed, c.activation) for c in configs]
    assert got == [("sam", "gd", 3, "polyrelu"), ("sam", "gd", 4, "polyrelu"),
                   ("gd", "sam", 3, "polyrelu"), ("gd", "sam", 4, "polyrelu")]
    for c in configs:
        assert c.lr == 0.25 and isinstance(c.lr, float) and isinstance(c.seed, int)
        assert c.n == 10 and c.d == 30 and c.steps == 10
    assert base["lr"] == "0.25"  # the caller's dict is untouched
    # no axis: the base alone
    assert [c.hash for c in expand_grid(BASE, {})] == [_cfg().hash]
    # a single-field axis whose value is a string is one value (not its characters)
    assert [c.optimizer for c in expand_grid(BASE, {"optimizer": ["sam", "gd"]})] == ["sam", "gd"]
    # an invalid cell is refused, naming every axis value of that cell
    with pytest.raises(ConfigError) as direct:
        SimConfig(**{**BASE, "seed": 1, "lr": -1.0})
    with pytest.raises(ConfigError) as exc:
        expand_grid(BASE, {"seed": [1], "lr": [0.5, -1.0]})
    assert str(exc.value) == f"grid cell (seed=1, lr=-1.0): {direct.value}"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_grid_size():
    assert grid_size({}) == 1
    assert grid_size({"a": [1, 2, 3]}) == 3
    size = grid_size({"a": [1, 2, 3], "b": [1, 2], "c": [7]})
    assert size == 6 and isinstance(size, int)


# ----------------------------------------------------------------------------------------------- available_memory


class _FakeFile:
    text: str | Exception = ""
    opened: list[str] = []

    def __init__(self, path):
        self.path = str(path)

    def read_text(self):
        type(self).opened.append(self.path)
        if isinstance(self.text, Exception):
            raise self.text
        return self.text


def test_available_memory_reads_memavailable_in_kib_else_8_gib(monkeypatch):
    real = sweep.available_memory()
    assert isinstance(real, float) and real > 0

    class F(_FakeFile):
        opened = []

    monkeypatch.setattr(sweep, "Path", F)
    F.text = "MemTotal:       16 kB\nMemFree:  3 kB\nMemAvailable:    2048 kB\nMemAvailable: 7 kB\n"
    value = sweep.available_memory()
    assert value == 2048.0 * 1024 and isinstance(value, float)
    assert F.opened == ["/proc/meminfo"]
    F.text = "MemTotal:       16 kB\nMemFree:  3 kB\n"
    assert sweep.available_memory() == 8 * 2**30
    F.text = PermissionError("no")
    assert sweep.available_memory() == 8 * 2**30
    F.text = FileNotFoundError("none")
    assert sweep.available_memory() == 8589934592


# -------------------------------------------------------------------------------------------------- check_memory


def test_check_memory_bookkeeping_threshold_and_message():
    sample = _cfg()  # log_points 4: a run needs 4096 + 8 * 12 * 4 = 4480 bytes of bookkeeping
    grid = {"seed": list(range(1000))}  # 1000 runs: 4,480,000 bytes
    check_memory(grid, sample, 4480000.0)  # exactly enough
    check_memory(grid, sample, 4480001.0)
    message = ("the grid has 1,000 runs and needs about 4.27 MiB of memory just for their results (budget 4.27 MiB): "
               "split it into several sweeps (fewer values on one --grid axis), lower log_points, or raise "
               "--max-memory-gb")
    with pytest.raises(ConfigError, match=_exact(message)):
        check_memory(grid, sample, 4479999.0)
    # log_points scales the bookkeeping: 4096 + 96 * 10 = 5056 bytes a run, 2 runs = 10112 bytes
    wide = _cfg(log_points=10)
    assert bytes_per_config(wide, "gram") <= 200000
    with pytest.raises(ConfigError, match=_exact(
            "the grid has 2 runs and needs about 9.88 KiB of memory just for their results (budget 9.87 KiB): "
            "split it into several sweeps (fewer values on one --grid axis), lower log_points, or raise "
            "--max-memory-gb")):
        check_memory({"a": [1, 2], "b": [0]}, wide, 10111.0)
    # 10112 bytes are not enough for the configuration itself: the second refusal
    with pytest.raises(ConfigError, match="^one configuration"):
        check_memory({"a": [1, 2], "b": [0]}, wide, 10112.0)


def test_check_memory_refuses_a_configuration_larger_than_the_budget():
    sample = _cfg()  # gram backend
    compute = bytes_per_config(sample, "gram")
    assert compute == 127464.0 and bytes_per_config(sample, "weights") > compute
    check_memory({}, sample, 127464.0)  # exactly enough
    message = ("one configuration (backend=gram, n=10, d=30, m=3, n_test=100) needs about 124 KiB but the memory "
               "budget is 124 KiB: lower n_test or n, or raise --max-memory-gb")
    with pytest.raises(ConfigError, match=_exact(message)):
        check_memory({}, sample, 127463.0)
    with pytest.raises(ConfigError, match=_exact(message)):
        check_memory({"seed": [0, 1]}, sample, 127463.0)


# ------------------------------------------------------------------------------------------------------ run_sweep


def test_run_sweep_refuses_bad_arguments_before_writing(tmp_path):
    out = tmp_path / "out"
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=_exact(f"--max-memory-gb {bad}: must be a positive number of GiB")):
            run_sweep(BASE, {"seed": [0]}, out, max_memory_gb=bad)
    for bad in (0, -3, 2.0, "2", None, True, False):  # a bool is an int to Python, not a count
        with pytest.raises(ConfigError, match=_exact(f"--chunk-runs {bad}: must be a positive integer")):
            run_sweep(BASE, {"seed": [0]}, out, chunk_runs=bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=_exact("--device cuda:0: no CUDA GPU is visible here; use --device cpu")):
            run_sweep(BASE, {"seed": [0]}, out, device="cuda:0")
    # the memory check uses the first cell's log_points: 2 runs of 4096 + 96 * 1000 bytes do not fit 150,000 bytes
    # (budget in GiB: 150000 / 2**30)
    with pytest.raises(ConfigError, match=r"^the grid has 2 runs and needs about 196 KiB .*\(budget 146 KiB\)"):
        run_sweep(BASE, {"log_points": [1000, 2]}, out, max_memory_gb=150000 / 2**30)
    assert not out.exists()


class _Runner:
    """Runs each unit with the real ``run_unit`` and records what it was given."""

    def __init__(self, log):
        self.log = log

    def run(self, units, **kw):
        self.log.append(("run", [[c.hash for c in u] for u in units], kw))
        for unit in units:
            yield executors.run_unit([c.to_dict() for c in unit], **kw)


def _fake_executors(monkeypatch, log, runner_cls=_Runner):
    def make(name, **kw):
        log.append(("make", name, kw))
        return runner_cls(log)

    monkeypatch.setattr(sweep, "make_executor", make)


def test_run_sweep_hands_its_arguments_on_and_records_the_run(tmp_path, monkeypatch):
    log = []
    _fake_executors(monkeypatch, log)
    out = tmp_path / "out"
    base = {**BASE, "lr": "0.25"}
    grid = {"seed": [0, 1, 0], "optimizer+unlearn_optimizer": [("gd", "gd"), ("sam", "gd")]}
    before = time.perf_counter()
    summary = run_sweep(base, grid, out, executor="pool", workers=3, max_memory_gb=0.25, chunk_runs=1)
    elapsed = time.perf_counter() - before
    configs = [_cfg(lr=0.25, seed=s, optimizer=o, unlearn_optimizer="gd") for s, o in
               ((0, "gd"), (0, "sam"), (1, "gd"), (1, "sam"))]
    h = [c.hash for c in configs]
    assert log[0] == ("make", "pool", {"workers": 3, "folder": out / "submitit", "options": {}})
    assert log[1] == ("run", [[h[0]], [h[2]], [h[1]], [h[3]]],
                      {"device": "cpu", "save_coefficients": False, "memory_bytes": 0.25 * 2**30,
                       "store": str((out / "cache").resolve())})
    assert len(log) == 2
    seconds = summary.pop("seconds")
    assert 0 <= seconds <= elapsed
    assert summary == {"runs": 4, "computed": 4, "skipped": 0, "recomputed": 0, "results": str(out / "results.csv")}
    assert _hashes(out / "results.csv") == h
    assert len(list((out / "cache").glob("chunk-*.json"))) == 4
    identity = {"base": {k: (0.25 if k == "lr" else v) for k, v in sorted(base.items())},
                "grid": {"seed": [0, 1, 0], "optimizer+unlearn_optimizer": [["gd", "gd"], ["sam", "gd"]]}}
    run_json = json.loads((out / "run.json").read_text())
    assert run_json == {"kind": "sweep", "identity": identity}
    assert list(run_json["identity"]["base"]) == sorted(base)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest) == ["base", "device", "executor", "grid", "provenance", "runs"]
    assert manifest["base"] == base and manifest["grid"] == identity["grid"]
    assert (manifest["runs"], manifest["executor"], manifest["device"]) == (4, "pool", "cpu")
    assert manifest["provenance"]["device"] == device_name("cpu")
    assert manifest["provenance"]["numerics_version"] == numerics_version()
    # the same sweep (tuples in its grid) is the same identity: not refused as another grid, all cached
    log.clear()
    again = run_sweep(base, grid, out, on_other_grid="refuse", executor="pool", workers=3)
    assert (again["runs"], again["computed"], again["skipped"], again["recomputed"]) == (4, 0, 4, 0)
    assert log[1][1] == []
    assert _hashes(out / "results.csv") == h


def test_run_sweep_refuses_or_replaces_a_folder_of_another_grid(tmp_path):
    out = tmp_path / "out"
    run_sweep(BASE, {"seed": [0, 1]}, out)
    message = (f"--out {out} holds another run (sweep, other settings: grid: seed [0, 1] -> [1]): add --force to "
               "make it this sweep's folder (cached cells of the same configuration and numerics are reused), or "
               "choose a new --out")
    with pytest.raises(ConfigError, match=_exact(message)):
        run_sweep(BASE, {"seed": [1]}, out, on_other_grid="refuse")
    replaced = run_sweep(BASE, {"seed": [1]}, out)  # default: replace, the cached cell is reused
    assert (replaced["runs"], replaced["computed"], replaced["skipped"]) == (1, 0, 1)
    assert json.loads((out / "run.json").read_text())["identity"]["grid"] == {"seed": [1]}
    assert _hashes(out / "results.csv") == [_cfg(seed=1).hash]


def test_run_sweep_default_budget_executor_and_separate_cache(tmp_path, monkeypatch):
    log = []
    _fake_executors(monkeypatch, log)
    monkeypatch.setattr(sweep, "available_memory", lambda: float(2**33))
    out, cache = tmp_path / "out", tmp_path / "elsewhere"
    summary = run_sweep(BASE, {"seed": [0, 1, 1]}, out, cache=cache, executor_options={"cluster": "x"})
    assert log[0] == ("make", "inprocess", {"workers": 2, "folder": out / "submitit", "options": {"cluster": "x"}})
    assert log[1][2] == {"device": "cpu", "save_coefficients": False, "memory_bytes": 2.0**32,
                         "store": str(cache.resolve())}
    assert log[1][1] == [[_cfg(seed=0).hash, _cfg(seed=1).hash]]  # one unit: chunk_runs 2000 by default
    assert (summary["runs"], summary["computed"]) == (2, 2)
    assert len(list(cache.glob("chunk-*.json"))) == 1 and not (out / "cache").exists()
    assert json.loads((out / "manifest.json").read_text())["executor"] == "inprocess"


def test_run_sweep_recomputes_corrupt_stale_and_coefficient_less_cells(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    grid = {"seed": [0, 1]}
    run_sweep(BASE, grid, out)
    cache = out / "cache"
    for name in ("chunk-zz1.json", "chunk-zz2.json", "chunk-zz3.json", "chunk-zz4.json"):
        (cache / name).write_text("not a chunk")
    (cache / ".left.tmp").write_text("x")
    (cache / "chunk-zz9.npz").write_bytes(b"orphan")
    capsys.readouterr()
    summary = run_sweep(BASE, grid, out, save_coefficients=True)
    assert (summary["computed"], summary["skipped"], summary["recomputed"]) == (2, 0, 2)
    assert capsys.readouterr().err == (
        "sweep: 4 corrupt or truncated cache chunk(s) removed and recomputed: chunk-zz1.json, chunk-zz2.json, "
        "chunk-zz3.json\n"
        "sweep: --save-coefficients: 2 cached cell(s) were stored without their coefficients: recomputed with "
        "them\n")
    assert not list(cache.glob("chunk-zz*")) and not (cache / ".left.tmp").exists()
    again = run_sweep(BASE, grid, out, save_coefficients=True)
    assert (again["computed"], again["skipped"], again["recomputed"]) == (0, 2, 0)
    without = run_sweep(BASE, grid, out)  # coefficients not asked for: cached cells are fine as they are
    assert (without["computed"], without["recomputed"]) == (0, 0)
    assert capsys.readouterr().err == ""
    # cells computed by other numerics: recomputed (only those of this grid are counted)
    other = tmp_path / "other"
    monkeypatch.setattr(store_module, "numerics_version", lambda: "old-numerics")
    run_sweep(BASE, {"seed": [0, 1, 2]}, other)
    monkeypatch.undo()
    capsys.readouterr()
    stale = run_sweep(BASE, grid, other)
    assert (stale["computed"], stale["skipped"], stale["recomputed"]) == (2, 0, 2)
    assert capsys.readouterr().err == ("sweep: 2 cached cell(s) were computed by other numerics (code changed "
                                       "since): recomputed\n")


def test_execute_progress_bar(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    run_sweep(BASE, {"seed": [0, 1]}, out)  # progress None, stderr not a terminal: no bar
    assert capsys.readouterr().err == ""
    run_sweep(BASE, {"seed": [2, 3]}, out, progress=True)
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "| 2/2 [" in err and "run/s]" in err
    run_sweep(BASE, {"seed": [2, 3]}, out, progress=True)  # nothing to do: no bar
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run_sweep(BASE, {"seed": [4]}, out)  # progress None on a terminal: a bar
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "| 1/1 [" in err
    run_sweep(BASE, {"seed": [5]}, out, progress=False)
    assert capsys.readouterr().err == ""


def _stopping_runner(exc):
    class Stopping:
        def __init__(self, log):
            self.log = log

        def run(self, units, **kw):
            first, second, *_ = units
            yield executors.run_unit([c.to_dict() for c in first], **kw)
            executors.run_unit([c.to_dict() for c in second], **kw)  # written, but never sent back
            Path(kw["store"], ".cut.tmp").write_text("x")
            raise exc

    return Stopping


def test_execute_after_ctrl_c_lists_the_chunks_on_disk_and_tidies(tmp_path, monkeypatch, capsys):
    log = []
    _fake_executors(monkeypatch, log, _stopping_runner(KeyboardInterrupt()))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(BASE, {"seed": [0, 1, 2]}, out, chunk_runs=1)
    assert capsys.readouterr().err == (f"sweep: interrupted: {out / 'results.csv'} lists the 2 of 3 runs done; run "
                                       "the same command again to resume\n")
    assert _hashes(out / "results.csv") == [_cfg(seed=0).hash, _cfg(seed=1).hash]
    assert not (out / "cache" / ".cut.tmp").exists()
    assert not (out / ".lock").exists()


def test_execute_after_sigterm_exits_143_and_leaves_slurm_temporaries(tmp_path, monkeypatch, capsys):
    log = []
    _fake_executors(monkeypatch, log, _stopping_runner(Terminated(143)))
    out = tmp_path / "out"
    with pytest.raises(Terminated) as exc:
        run_sweep(BASE, {"seed": [2, 1, 0]}, out, chunk_runs=1, executor="submitit")
    assert exc.value.code == 143
    assert capsys.readouterr().err == (f"sweep: stopped by SIGTERM: {out / 'results.csv'} lists the 2 of 3 runs "
                                       "done; run the same command again to resume\n")
    assert _hashes(out / "results.csv") == [_cfg(seed=1).hash, _cfg(seed=0).hash]  # grid order
    assert (out / "cache" / ".cut.tmp").exists()  # a Slurm job may still be writing: not tidied


def test_execute_tidies_only_when_no_job_can_still_write(tmp_path, monkeypatch):
    class Leaving(_Runner):
        def run(self, units, **kw):
            yield from super().run(units, **kw)
            Path(kw["store"], ".late.tmp").write_text("x")

    for executor, left in (("pool", False), ("submitit", True)):
        out = tmp_path / executor
        _fake_executors(monkeypatch, [], Leaving)
        run_sweep(BASE, {"seed": [0]}, out, executor=executor)
        assert (out / "cache" / ".late.tmp").exists() is left, executor


# ---------------------------------------------------------------------------------------------------------- _units


def test_units_split_each_memory_chunk_into_runs():
    configs = expand_grid(BASE, {"seed": [4, 3, 2, 1, 0]})
    by_seed = {c.seed: c for c in configs}
    need = bytes_per_config(configs[0], "gram")

    def seeds(units):
        return [[c.seed for c in u] for u in units]

    assert seeds(_units(configs, 2, 1e12)) == [[0, 1], [2, 3], [4]]
    assert seeds(_units(configs, 5, 1e12)) == [[0, 1, 2, 3, 4]]
    assert seeds(_units(configs, 1, 1e12)) == [[0], [1], [2], [3], [4]]
    assert seeds(_units(configs, 2, 3 * need)) == [[0, 1], [2], [3, 4]]
    assert seeds(_units(configs, 10, 2 * need)) == [[0, 1], [2, 3], [4]]
    assert _units(configs, 2, 1e12)[0][0] is by_seed[0]
    assert _units([], 3, 1e12) == []
    mixed = expand_grid(BASE, {"seed": [1, 0], "optimizer": ["sam", "gd"]})
    assert [[(c.optimizer, c.seed) for c in u] for u in _units(mixed, 1, 1e12)] == \
        [[("sam", 0)], [("sam", 1)], [("gd", 0)], [("gd", 1)]]


# ---------------------------------------------------------------------------------------------------- compose_grid


def test_compose_grid_order_replacement_and_dedup():
    preset = {"a+b": [(1, 2)], "c": [1, 2], "e": [5], "f": [6]}
    grid = compose_grid(preset, {"c": 9}, [("a+b", [(3, 4), (3, 4), (5, 6)]), ("d", [1, 1, 2])])
    assert grid == {"e": [5], "f": [6], "a+b": [(3, 4), (5, 6)], "d": [1, 2]}
    assert list(grid) == ["e", "f", "a+b", "d"]
    assert compose_grid({"a+b": [(1, 2)]}, {}, [("a+b", [(3, 4)])]) == {"a+b": [(3, 4)]}
    assert compose_grid({"a+b": [(1, 2)]}, {"a": 1, "b": 2}, []) == {}
    assert compose_grid({"a+b": [(1, 2)], "z": [0]}, {}, []) == {"a+b": [(1, 2)], "z": [0]}
    assert compose_grid({}, {}, []) == {}


def test_compose_grid_refusals():
    with pytest.raises(ConfigError, match=_exact(
            "--grid a appears on two axes (a+b and c+a): give each field one --grid with all its values")):
        compose_grid({}, {}, [("a+b", [(1, 2)]), ("c+a", [(3, 4)])])
    with pytest.raises(ConfigError, match=_exact(
            "--grid x appears on two axes (x and x): give each field one --grid with all its values")):
        compose_grid({}, {}, [("x", [1]), ("x", [2])])
    with pytest.raises(ConfigError, match=_exact(
            "b is both --set and --grid: drop one (--set fixes it, --grid varies it)")):
        compose_grid({}, {"b": 1}, [("a+b", [(1, 2)])])
    with pytest.raises(ConfigError, match=_exact(
            "y is one field of the preset's linked grid axis x+y+z: set or grid x, z too, give the whole axis "
            "(--grid x+y+z=...), or use --no-preset-grid")):
        compose_grid({"q": [1], "x+y+z": [(1, 2, 3)]}, {"y": 1}, [])
    with pytest.raises(ConfigError, match=_exact(
            "x, z is one field of the preset's linked grid axis x+y+z: set or grid y too, give the whole axis "
            "(--grid x+y+z=...), or use --no-preset-grid")):
        compose_grid({"x+y+z": [(1, 2, 3)]}, {"z": 1}, [("x", [1])])


# ------------------------------------------------------------------------------------------------------- executors


def test_run_unit_hands_its_arguments_to_simulate_and_the_store(tmp_path, monkeypatch):
    import simulations.engine as engine

    calls = []

    def fake_simulate(configs, **kw):
        calls.append((configs, kw))
        return ["result"]

    class FakeStore:
        def __init__(self, folder):
            calls.append(("store", folder))

        def write(self, results):
            calls.append(("write", results))
            return ["row"]

    monkeypatch.setattr(engine, "simulate", fake_simulate)
    monkeypatch.setattr(store_module, "ResultStore", FakeStore)
    a, b = _cfg(seed=0), _cfg(seed=1, lr=0.125)
    torch.set_num_threads(1)
    try:
        assert executors.run_unit([a.to_dict(), b.to_dict()]) == ["result"]
        assert torch.get_num_threads() == 1
        assert calls == [([a, b], {"device": "cpu", "save_coefficients": False, "memory_bytes": 2 * 2**30})]
        assert type(calls[0][1]["memory_bytes"]) is int
        calls.clear()
        got = executors.run_unit([b.to_dict()], device="meta", save_coefficients=True, memory_bytes=123.0, threads=2,
                                 store=str(tmp_path))
        assert got == ["row"] and torch.get_num_threads() == 2
        assert calls == [([b], {"device": "meta", "save_coefficients": True, "memory_bytes": 123.0}),
                         ("store", tmp_path), ("write", ["result"])]
        assert isinstance(calls[1][1], Path)
    finally:
        torch.set_num_threads(1)


def test_run_unit_with_a_store_writes_its_chunk(tmp_path):
    cfg = _cfg(seed=7)
    rows = executors.run_unit([cfg.to_dict()], store=str(tmp_path))
    assert [r["hash"] for r in rows] == [cfg.hash]
    (chunk,) = tmp_path.glob("chunk-*.json")
    assert json.loads(chunk.read_text())["rows"][0]["hash"] == cfg.hash
    results = executors.run_unit([cfg.to_dict()])
    assert [r.config for r in results] == [cfg] and len(list(tmp_path.glob("chunk-*.json"))) == 1


def test_inprocess_runs_each_unit_in_order(monkeypatch):
    calls = []
    monkeypatch.setattr(executors, "run_unit", lambda configs, **kw: calls.append((configs, kw)) or len(calls))
    a, b, c = _cfg(seed=0), _cfg(seed=1), _cfg(seed=2)
    assert list(executors.InProcess().run([[a, b], [c]], device="x", store="s")) == [1, 2]
    assert calls == [([a.to_dict(), b.to_dict()], {"device": "x", "store": "s"}), ([c.to_dict()], {"device": "x",
                                                                                                   "store": "s"})]
    assert list(executors.InProcess().run([])) == []


def test_process_start_is_field_22_of_proc_stat(monkeypatch):
    real = Path(f"/proc/{os.getpid()}/stat")
    if real.exists():
        text = real.read_text()
        assert executors.process_start() == text[text.rindex(")") + 2:].split(" ")[19]
        assert executors.process_start(os.getpid()) == executors.process_start()
    assert executors.process_start(2**31 - 1) is None

    class F(_FakeFile):
        opened = []
        text = "4242 (a) b) S " + " ".join(f"f{i}" for i in range(4, 53))

    monkeypatch.setattr(executors, "Path", F)
    assert executors.process_start(4242) == "f22"
    assert executors.process_start() == "f22"
    assert F.opened == ["/proc/4242/stat", f"/proc/{os.getpid()}/stat"]
    F.text = FileNotFoundError("gone")
    assert executors.process_start(4242) is None


class _Exited(Exception):
    pass


class _FakeThread:
    made: list[dict] = []

    def __init__(self, target, name, daemon):
        self.info = {"target": target, "name": name, "daemon": daemon, "started": False}
        _FakeThread.made.append(self.info)

    def start(self):
        self.info["started"] = True


@pytest.fixture
def fake_thread_and_exit(monkeypatch):
    """threading.Thread records its target (run by the test itself), os._exit raises, time.sleep records."""
    _FakeThread.made = []
    slept = []
    monkeypatch.setattr(threading, "Thread", _FakeThread)
    monkeypatch.setattr(time, "sleep", slept.append)

    def fake_exit(code):
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    return _FakeThread.made, slept


def test_watch_owner_exits_when_the_owner_is_gone(monkeypatch, fake_thread_and_exit):
    made, slept = fake_thread_and_exit
    executors.watch_owner(4242, None)
    assert made == []  # no /proc: nothing to watch
    polls = []
    answers = iter(["100", "100", "101"])
    monkeypatch.setattr(executors, "process_start", lambda pid: polls.append(pid) or next(answers))
    executors.watch_owner(4242, "100")
    (info,) = made
    assert (info["name"], info["daemon"], info["started"]) == ("watch-owner", True, True)
    assert polls == []
    with pytest.raises(_Exited) as exc:
        info["target"]()
    assert exc.value.args == (1,)
    assert polls == [4242, 4242, 4242] and slept == [0.5, 0.5]
    answers = iter(["7", "8"])
    slept.clear()
    executors.watch_owner(9, "7", interval_s=0.03)
    with pytest.raises(_Exited):
        made[1]["target"]()
    assert slept == [0.03]


def test_watch_parent_exits_when_the_parent_is_gone(monkeypatch, fake_thread_and_exit):
    made, slept = fake_thread_and_exit
    parents = iter([55, 55, 55, 1])
    monkeypatch.setattr(os, "getppid", lambda: next(parents))
    executors.watch_parent(55)
    (info,) = made
    assert (info["name"], info["daemon"], info["started"]) == ("watch-parent", True, True)
    with pytest.raises(_Exited) as exc:
        info["target"]()
    assert exc.value.args == (1,) and slept == [0.5, 0.5, 0.5]
    parents = iter([3, 4])
    slept.clear()
    executors.watch_parent(3, interval_s=0.01)
    with pytest.raises(_Exited):
        made[1]["target"]()
    assert slept == [0.01]


class _FakePool:
    made: list = []

    def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
        self.info = {"workers": workers, "method": mp_context.get_start_method(), "initializer": initializer,
                     "initargs": initargs, "submitted": [], "shutdown": None}
        _FakePool.made.append(self.info)

    def submit(self, fn, *args, **kw):
        self.info["submitted"].append((args, kw))
        fut = cf.Future()
        try:
            fut.set_result(fn(*args, **kw))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait=True, cancel_futures=False):
        self.info["shutdown"] = (wait, cancel_futures)


def test_process_pool(monkeypatch):
    assert [executors.ProcessPool(w).workers for w in (-2, 0, 1, 3)] == [1, 1, 1, 3]
    _FakePool.made = []
    monkeypatch.setattr(executors, "cf", types.SimpleNamespace(ProcessPoolExecutor=_FakePool,
                                                               as_completed=cf.as_completed))
    stopped = []
    monkeypatch.setattr(executors, "stop_workers", stopped.append)

    def fake_run_unit(configs, **kw):
        if configs[0]["seed"] == 9:
            raise ValueError("unit failed")
        return [c["seed"] for c in configs]

    monkeypatch.setattr(executors, "run_unit", fake_run_unit)
    a, b, c = _cfg(seed=0), _cfg(seed=1), _cfg(seed=2)
    got = list(executors.ProcessPool(3).run([[a, b], [c]], device="cpu", threads=4, store="s"))
    assert sorted(got) == [[0, 1], [2]]
    (info,) = _FakePool.made
    assert (info["workers"], info["method"], info["initargs"]) == (3, "spawn", (os.getpid(),))
    assert info["initializer"] is executors.watch_parent
    assert info["submitted"] == [(([a.to_dict(), b.to_dict()],), {"device": "cpu", "threads": 1, "store": "s"}),
                                 (([c.to_dict()],), {"device": "cpu", "threads": 1, "store": "s"})]
    assert info["shutdown"] == (True, True) and stopped == []
    # a failing unit stops the workers and is raised
    with pytest.raises(ValueError, match="^unit failed$"):
        list(executors.ProcessPool(1).run([[_cfg(seed=9)]]))
    assert len(stopped) == 1 and stopped[0] is not None and _FakePool.made[1]["shutdown"] == (True, True)
    assert _FakePool.made[1]["submitted"][0][1] == {"threads": 1}
    # the caller stopping early stops the workers too
    gen = executors.ProcessPool(2).run([[a], [b]])
    next(gen)
    gen.close()
    assert len(stopped) == 2 and _FakePool.made[2]["shutdown"] == (True, True)


class _FakeProc:
    def __init__(self, name, alive, stubborn, log):
        self.name, self.alive, self.stubborn, self.log = name, alive, stubborn, log

    def is_alive(self):
        self.log.append((self.name, "is_alive"))
        return self.alive

    def terminate(self):
        self.log.append((self.name, "terminate"))
        if not self.stubborn:
            self.alive = False

    def kill(self):
        self.log.append((self.name, "kill"))
        self.alive = False

    def join(self, timeout):
        self.log.append((self.name, "join", timeout))


def test_stop_workers_terminates_then_kills(monkeypatch):
    log = []
    pool = types.SimpleNamespace(_processes={1: _FakeProc("A", True, False, log), 2: _FakeProc("B", False, False, log),
                                             3: _FakeProc("C", True, True, log)})
    executors.stop_workers(pool)
    assert log == [("A", "is_alive"), ("A", "terminate"), ("B", "is_alive"), ("C", "is_alive"), ("C", "terminate"),
                   ("A", "join", 5.0), ("A", "is_alive"), ("B", "join", 5.0), ("B", "is_alive"),
                   ("C", "join", 5.0), ("C", "is_alive"), ("C", "kill"), ("C", "join", 5.0)]
    log.clear()
    executors.stop_workers(types.SimpleNamespace(_processes={1: _FakeProc("D", True, True, log)}), timeout_s=0.25)
    assert log == [("D", "is_alive"), ("D", "terminate"), ("D", "join", 0.25), ("D", "is_alive"), ("D", "kill"),
                   ("D", "join", 0.25)]
    executors.stop_workers(types.SimpleNamespace())  # no processes yet
    executors.stop_workers(types.SimpleNamespace(_processes=None))


class _Job:
    def __init__(self, name, done_after, log):
        self.name, self.polls, self.done_after, self.log = name, 0, done_after, log

    def done(self):
        self.polls += 1
        return self.polls > self.done_after

    def result(self):
        self.log.append(("result", self.name))
        return self.name


def _fake_submitit(monkeypatch, log, jobs=()):
    class AutoExecutor:
        def __init__(self, folder, cluster):
            log.append(("executor", folder, cluster))

        def update_parameters(self, **params):
            log.append(("parameters", params))

        def map_array(self, fn, args):
            log.append(("map_array", fn, args))
            return list(jobs)

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=AutoExecutor))


def test_submitit_parameters_and_polling(tmp_path, monkeypatch):
    log = []
    jobs = [_Job("slow", 1, log), _Job("fast", 0, log)]
    _fake_submitit(monkeypatch, log, jobs)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    options = {"cluster": "local", "slurm_partition": "p"}
    ex = executors.Submitit(tmp_path, options)
    assert options == {"cluster": "local", "slurm_partition": "p"}  # the caller's dict is untouched
    assert log == [("executor", str(tmp_path), "local"), ("parameters", {"timeout_min": 60, "slurm_partition": "p"})]
    log.clear()
    executors.Submitit(tmp_path, {"timeout_min": 5})
    assert log == [("executor", str(tmp_path), None), ("parameters", {"timeout_min": 5})]
    log.clear()
    assert list(ex.run([], device="cpu")) == [] and log == []
    a, b, c = _cfg(seed=0), _cfg(seed=1), _cfg(seed=2)
    got = list(ex.run([[a, b], [c]], device="cpu", store="s"))
    assert got == ["fast", "slow"]
    call = log[0][1]
    assert log[0][0] == "map_array" and log[0][2] == [[a.to_dict(), b.to_dict()], [c.to_dict()]]
    assert isinstance(call, executors._SubmititCall) and call.kw == {"device": "cpu", "store": "s"}
    assert log[1:] == [("result", "fast"), ("result", "slow")]
    assert slept == []  # the slow job was done at its second poll, after the fast one's result
    jobs[:] = [_Job("late", 2, log)]
    log.clear()
    assert list(ex.run([[a]])) == ["late"] and slept == [0.2, 0.2]


def test_submitit_call_and_missing_package(monkeypatch):
    calls = []
    monkeypatch.setattr(executors, "run_unit", lambda configs, **kw: calls.append((configs, kw)) or "rows")
    call = executors._SubmititCall({"device": "cpu", "store": "s"})
    assert call.kw == {"device": "cpu", "store": "s"}
    assert call([{"seed": 1}]) == "rows" and calls == [([{"seed": 1}], {"device": "cpu", "store": "s"})]
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=_exact("--executor submitit needs the submitit package: pip install "
                                                 "submitit")) as exc:
        executors.Submitit(Path("x"), {})
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_make_executor(tmp_path, monkeypatch):
    assert type(executors.make_executor("inprocess")) is executors.InProcess
    pool = executors.make_executor("pool")
    assert type(pool) is executors.ProcessPool and pool.workers == 2
    assert executors.make_executor("pool", workers=5).workers == 5
    log = []
    _fake_submitit(monkeypatch, log)
    assert type(executors.make_executor("submitit")) is executors.Submitit
    assert log == [("executor", "submitit", None), ("parameters", {"timeout_min": 60})]
    log.clear()
    executors.make_executor("submitit", folder=tmp_path, options={"cluster": "debug", "timeout_min": 2})
    assert log == [("executor", str(tmp_path), "debug"), ("parameters", {"timeout_min": 2})]
    assert executors.EXECUTORS == ("inprocess", "pool", "submitit")
    with pytest.raises(ConfigError, match=_exact("unknown executor 'slurm'; choose one of inprocess, pool, submitit")):
        executors.make_executor("slurm")


def test_run_sweep_default_chunk_runs_is_2000(tmp_path, monkeypatch):
    class Idle:
        def __init__(self, log):
            self.log = log

        def run(self, units, **kw):
            self.log.append([len(u) for u in units])
            yield from ()

    log = []
    _fake_executors(monkeypatch, log, Idle)
    summary = run_sweep(BASE, {"seed": list(range(2001))}, tmp_path / "out", max_memory_gb=64.0)
    assert log[1] == [2000, 1]
    assert (summary["runs"], summary["computed"], summary["skipped"]) == (2001, 2001, 0)


# ------------------------------------------------------------------- survivors of the mutation run of 2026-12-02
def test_coefficient_less_cells_of_another_grid_in_the_cache_are_not_recomputed(tmp_path, capsys):
    """--save-coefficients recomputes this grid's cached cells stored without coefficients, never the other cells the
    shared cache holds: a grid of seed 0 next to cached seeds 0..2 recomputes one cell and says 1."""
    out = tmp_path / "out"
    run_sweep(BASE, {"seed": [0, 1, 2]}, out)
    capsys.readouterr()
    summary = run_sweep(BASE, {"seed": [0]}, out, on_other_grid="replace", save_coefficients=True)
    assert (summary["computed"], summary["skipped"], summary["recomputed"]) == (1, 0, 1)
    assert capsys.readouterr().err == ("sweep: --save-coefficients: 1 cached cell(s) were stored without their "
                                       "coefficients: recomputed with them\n")


def test_the_manifest_records_the_provenance_of_the_sweep_device(tmp_path, monkeypatch):
    seen = []
    real = sweep.provenance
    monkeypatch.setattr(sweep, "provenance", lambda device="cpu": seen.append(device) or real(device))
    run_sweep(BASE, {"seed": [0]}, tmp_path / "out", device="cpu")
    assert seen == ["cpu"]
