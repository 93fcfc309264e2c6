"""Grids of configurations: expansion, memory check, cached and resumable execution, ``results.csv``.

    run_sweep(base, grid, out)  →  out/results.csv, out/cache/chunk-*.{npz,json}, out/manifest.json

Cells already in the cache (same config hash) are skipped; a sweep interrupted at any point resumes where it
stopped; a run whose loss turns NaN/inf is a row with ``diverged = True`` and the sweep goes on.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, SimConfig, coerce_values
from .engine import bytes_per_config, check_device, human_bytes, memory_refusal, plan_chunks
from .executors import make_executor
from .provenance import atomic_write_json, ensure_writable_dir, provenance
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
              executor_options: dict[str, Any] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Run every cell of ``grid`` over ``base`` that is not cached yet; write ``out/results.csv``.

    Returns a summary dict (runs, skipped, computed, seconds, paths)."""
    started = time.perf_counter()
    check_device(device)
    budget = (max_memory_gb * 2**30) if max_memory_gb else 0.5 * available_memory()
    first = expand_grid(base, {k: v[:1] for k, v in grid.items()})[0]
    check_memory(grid, first, budget)
    configs = expand_grid(base, grid)
    out = Path(out)
    cache_dir = Path(cache) if cache else out / "cache"
    store = ResultStore(cache_dir)
    done = store.done()
    seen: set[str] = set()
    todo = []
    for c in configs:
        h = c.hash
        if h not in done and h not in seen:
            todo.append(c)
            seen.add(h)
    units = _units(todo, chunk_runs, budget)  # refuses any cell that cannot fit, before anything is written
    ensure_writable_dir(out)
    ensure_writable_dir(cache_dir)
    remove_stale_temporaries(cache_dir)
    atomic_write_json(out / "manifest.json", {
        "base": base, "grid": {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in grid.items()},
        "runs": len(configs), "executor": executor, "device": device, "provenance": provenance(device)})
    if progress is None:
        progress = sys.stderr.isatty()
    runner = make_executor(executor, workers=workers, folder=out / "submitit", options=executor_options or {})
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="run", desc="sweep", dynamic_ncols=True)
    try:
        for rows in runner.run(units, device=device, save_coefficients=save_coefficients, memory_bytes=budget,
                               store=str(cache_dir.resolve())):
            store.add_rows(rows)
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
        rows = [store.row(c.hash) for c in configs]
        write_csv(out / "results.csv", [r for r in rows if r is not None])
    return {"runs": len(configs), "computed": len(todo), "skipped": len(configs) - len(todo),
            "seconds": time.perf_counter() - started, "results": str(out / "results.csv")}


def _units(configs: list[SimConfig], chunk_runs: int, budget: float) -> list[list[SimConfig]]:
    """Split pending runs into work units of compatible configurations (one tensor batch or a few)."""
    units = []
    for chunk in plan_chunks(configs, budget):
        for s in range(0, len(chunk), chunk_runs):
            units.append([configs[i] for i in chunk[s:s + chunk_runs]])
    return units
