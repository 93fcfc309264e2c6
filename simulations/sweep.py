"""Grids of configurations: expansion, memory check, cached and resumable execution, ``results.csv``.

    run_sweep(base, grid, out)  →  out/results.csv, out/cache/chunk-*.{npz,json}, out/manifest.json

Cells already in the cache (same config hash, same numerics) are skipped; a sweep interrupted at any point resumes
where it stopped; a run whose loss turns NaN/inf is a row with ``diverged = True`` and the sweep goes on. A cell the
grid names twice is computed and listed once. The folder follows the run-folder contract
(:mod:`simulations.runfolder`): one writer at a time, and a folder holding a sweep of another base or grid is
refused (``on_other_grid="refuse"``, what ``python -m simulations sweep`` does without ``--force``) or taken over as
a cache (``"replace"``, the default of this function: the figures' and the validation's managed folders).
Cached cells of other numerics are recomputed (a code change never reuses old numbers), and so are corrupt chunks;
with ``save_coefficients``, so are cached cells stored without their coefficients.

Stopping a sweep loses nothing but the units in flight: SIGKILL leaves complete chunks (written atomically) that the
next run reuses; Ctrl-C and SIGTERM (exit status 143) also stop the pool's workers, write ``results.csv`` of the
cells done and release the folder's lock.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, SimConfig, coerce_values
from .engine import bytes_per_config, check_device, human_bytes, memory_refusal, plan_chunks
from .executors import make_executor
from .provenance import atomic_write_json, provenance
from .runfolder import RunFolder, ensure_writable_dir
from .store import ResultStore, remove_stale_temporaries, write_csv

ROW_BYTES = 4096  # a results row, its config and cache entry in memory (measured order of magnitude)


def expand_grid(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[SimConfig]:
    """Cartesian product of the grid axes (in their order) over the base overrides; validates every cell."""
    axes = list(grid.items())
    base = coerce_values(base)
    configs = []
    for values in itertools.product(*(v for _, v in axes)):
        cell = dict(base)
        for key, value in zip((k for k, _ in axes), values):
            names = key.split("+")
            cell.update(coerce_values(dict(zip(names, value if len(names) > 1 else (value,)))))
        try:
            configs.append(SimConfig(**cell))
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for (k, _), v in zip(axes, values))
            raise ConfigError(f"grid cell ({where}): {exc}") from None
    return configs


def grid_size(grid: dict[str, list[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def available_memory() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def check_memory(grid: dict[str, list[Any]], sample: SimConfig, budget: float) -> None:
    """Refuse, before anything runs or is written, a grid whose bookkeeping alone exceeds the memory budget."""
    runs = grid_size(grid)
    per_run = ROW_BYTES + 8 * 12 * sample.log_points
    need = runs * per_run
    if need > budget:
        raise ConfigError(
            f"the grid has {runs:,} runs and needs about {human_bytes(need)} of memory just for their results "
            f"(budget {human_bytes(budget)}): split it into several sweeps (fewer values on one --grid axis), "
            f"lower log_points, or raise --max-memory-gb")
    compute = bytes_per_config(sample, sample.backend)
    if compute > budget:
        raise ConfigError(memory_refusal(sample, compute, budget))


def run_sweep(base: dict[str, Any], grid: dict[str, list[Any]], out: Path, *, executor: str = "inprocess",
              workers: int = 2, device: str = "cpu", save_coefficients: bool = False,
              max_memory_gb: float | None = None, chunk_runs: int = 2000, cache: Path | None = None,
              executor_options: dict[str, Any] | None = None, progress: bool | None = None,
              on_other_grid: str = "replace") -> dict[str, Any]:
    """Run every cell of ``grid`` over ``base`` that is not cached yet; write ``out/results.csv``.

    Returns a summary dict (runs, skipped, computed, recomputed, seconds, paths)."""
    started = time.perf_counter()
    check_device(device)
    if max_memory_gb is not None and not (math.isfinite(max_memory_gb) and max_memory_gb > 0):
        raise ConfigError(f"--max-memory-gb {max_memory_gb}: must be a positive number of GiB")
    if isinstance(chunk_runs, bool) or not isinstance(chunk_runs, int) or chunk_runs < 1:
        raise ConfigError(f"--chunk-runs {chunk_runs}: must be a positive integer")
    budget = (max_memory_gb * 2**30) if max_memory_gb else 0.5 * available_memory()
    first = expand_grid(base, {k: v[:1] for k, v in grid.items()})[0]
    check_memory(grid, first, budget)
    configs = list({c.hash: c for c in expand_grid(base, grid)}.values())  # a cell named twice runs once
    out = Path(out)
    cache_dir = Path(cache) if cache else out / "cache"
    plain_grid = {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in grid.items()}
    identity = {"base": {k: coerce_values({k: v})[k] for k, v in sorted(base.items())}, "grid": plain_grid}
    folder = RunFolder(out, "sweep", identity, on_mismatch=on_other_grid, fix="add --force to make it this sweep's "
                       "folder (cached cells of the same configuration and numerics are reused)")
    with _sigterm_ends_the_sweep(), folder:
        store = ResultStore(cache_dir)
        done = store.done()
        stale = len(store.stale & {c.hash for c in configs})
        bare = store.without_coefficients({c.hash for c in configs} & done) if save_coefficients else set()
        todo = [c for c in configs if c.hash not in done or c.hash in bare]  # in grid order
        units = _units(todo, chunk_runs, budget)  # refuses any cell that cannot fit, before anything is written
        runner = make_executor(executor, workers=workers, folder=out / "submitit", options=executor_options or {})
        folder.begin()
        ensure_writable_dir(cache_dir)
        remove_stale_temporaries(cache_dir)
        removed = store.remove_corrupt()
        if removed:
            print(f"sweep: {len(removed)} corrupt or truncated cache chunk(s) removed and recomputed: "
                  f"{', '.join(p.name for p in removed[:3])}", file=sys.stderr)
        if stale:
            print(f"sweep: {stale} cached cell(s) were computed by other numerics (code changed since): recomputed",
                  file=sys.stderr)
        if bare:
            print(f"sweep: --save-coefficients: {len(bare)} cached cell(s) were stored without their coefficients: "
                  "recomputed with them", file=sys.stderr)
        atomic_write_json(out / "manifest.json", {
            "base": base, "grid": plain_grid, "runs": len(configs), "executor": executor, "device": device,
            "provenance": provenance(device)})
        _execute(configs, todo, units, store, out, cache_dir, runner, device, save_coefficients, budget, progress,
                 tidy=executor != "submitit")
    return {"runs": len(configs), "computed": len(todo), "skipped": len(configs) - len(todo),
            "recomputed": stale + len(bare), "seconds": time.perf_counter() - started,
            "results": str(out / "results.csv")}


class Terminated(SystemExit):
    """SIGTERM ended the sweep: exit status 143 (128 + 15, what a shell reports for a process SIGTERM ended)."""


@contextlib.contextmanager
def _sigterm_ends_the_sweep():
    """While a sweep runs, SIGTERM stops it as Ctrl-C does (pool workers stopped, ``results.csv`` of the cells done,
    lock released) instead of ending the process on the spot. Only in the main thread, and only where nobody else
    handles SIGTERM; a second SIGTERM ends the process at once."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _execute(configs, todo, units, store, out, cache_dir, runner, device, save_coefficients, budget,
             progress, tidy=True) -> None:
    """Run the pending units, adding each unit's rows to the store as it finishes; results.csv at the end (also
    after an interruption: it then lists what is done). ``tidy``: once the executor has stopped, no unit of this
    sweep can still be writing (not so for Slurm jobs), so the temporaries of units cut short are removed."""
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="run", desc="sweep", dynamic_ncols=True)
    stopped = None
    completed = False
    try:
        with contextlib.closing(runner.run(units, device=device, save_coefficients=save_coefficients,
                                           memory_bytes=budget, store=str(cache_dir.resolve()))) as finished:
            for rows in finished:
                store.add_rows(rows)
                if bar is not None:
                    bar.update(len(rows))
        completed = True
    except Terminated:
        stopped = "stopped by SIGTERM"
        raise
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        if bar is not None:
            bar.close()
        if tidy:
            remove_stale_temporaries(cache_dir)
        if not completed:  # list what is on disk, also the chunks whose rows a stopped worker never sent back
            store = ResultStore(cache_dir)
        rows = [r for c in configs if (r := store.row(c.hash)) is not None]
        write_csv(out / "results.csv", rows)
        if stopped:
            print(f"sweep: {stopped}: {out / 'results.csv'} lists the {len(rows)} of {len(configs)} runs done; run "
                  "the same command again to resume", file=sys.stderr)


def _units(configs: list[SimConfig], chunk_runs: int, budget: float) -> list[list[SimConfig]]:
    """Split pending runs into work units of compatible configurations (one tensor batch or a few)."""
    units = []
    for chunk in plan_chunks(configs, budget):
        for s in range(0, len(chunk), chunk_runs):
            units.append([configs[i] for i in chunk[s:s + chunk_runs]])
    return units


def compose_grid(preset_grid: dict[str, list[Any]], overrides: dict[str, Any],
                 axes: list[tuple[str, list[Any]]]) -> dict[str, list[Any]]:
    """The grid of a sweep from a preset's axes, ``--set`` overrides and ``--grid`` axes (in this order).

    A ``--grid`` axis replaces the preset's axis of the same fields, and a ``--set`` of a field fixes it. Refused,
    with one line naming the conflict: a field on two ``--grid`` axes, a field both ``--set`` and ``--grid``, and an
    override of only some fields of one of the preset's linked axes (``optimizer+unlearn_optimizer``)."""
    owner: dict[str, str] = {}
    for key, _ in axes:
        for name in key.split("+"):
            if name in owner:
                raise ConfigError(f"--grid {name} appears on two axes ({owner[name]} and {key}): give each field one "
                                  f"--grid with all its values")
            if name in overrides:
                raise ConfigError(f"{name} is both --set and --grid: drop one (--set fixes it, --grid varies it)")
            owner[name] = key
    covered = set(owner) | set(overrides)
    grid: dict[str, list[Any]] = {}
    for key, values in preset_grid.items():
        names = set(key.split("+"))
        if names & covered:
            if not names <= covered:
                given = ", ".join(sorted(names & covered))
                missing = ", ".join(sorted(names - covered))
                raise ConfigError(f"{given} is one field of the preset's linked grid axis {key}: set or grid "
                                  f"{missing} too, give the whole axis (--grid {key}=...), or use --no-preset-grid")
            continue  # fixed by --set or replaced by a --grid axis
        grid[key] = values
    for key, values in axes:
        grid[key] = list(dict.fromkeys(values))  # a value named twice is one cell
    return grid
