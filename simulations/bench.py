"""Benchmark of the simulator (a script, not a test): prints a table and writes JSON.

    python -m simulations.bench [--out FILE.json] [--device cpu|cuda] [--quick]

* ``grid_seconds`` — the (K) authors' published grid (n=20, P=2, m=10, sigma_p=1, p=0.1, unprojected N(0, I) noise,
  lr 0.1, 100 GD steps, 1,000 test samples; signal strength 0..9.9 step 0.1 x d = 100..1090 step 10 x 10 seeds
  = 100,000 runs) through :func:`simulations.sweep.run_sweep` with the gram backend, into a fresh cache, test error
  and its standard error per cell. Their script takes 0.2-0.45 s per configuration (about 6-7 hours for the grid).
* ``weights_fraction_of_matmul_peak`` — the batched weights backend's achieved FLOP/s (its two matmuls per GD step,
  counted over the whole timed run) over the rate of one large matmul measured in the same run.
* ``large_run_seconds`` — one SAM run with n = 1000, d = 10^6, m = 10, 1,000 steps (gram backend).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .config import PRESETS
from .engine import simulate
from .provenance import atomic_write_json, provenance
from .sweep import run_sweep


def matmul_rate(dtype: torch.dtype, device: str, size: int = 2048, reps: int = 10, trials: int = 3) -> float:
    """The best of ``trials`` timings of ``reps`` square matmuls: the machine's achievable matmul rate."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    best = 0.0
    for _ in range(trials):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start))
    return best


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_grid(device: str, quick: bool, executor: str, workers: int) -> dict:
    p = PRESETS["paper"]
    grid = {k: v for k, v in p.grid.items()}
    grid["optimizer"] = ["gd"]
    if quick:
        grid["d"] = grid["d"][:5]
    base = {**p.base, "precision": "float32"}
    folder = Path(tempfile.mkdtemp(prefix="sim-bench-"))
    try:
        start = time.perf_counter()
        summary = run_sweep(base, grid, folder, executor=executor, workers=workers, device=device,
                            progress=False)
        seconds = time.perf_counter() - start
        import pandas as pd

        df = pd.read_csv(folder / "results.csv")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"grid_runs": int(summary["runs"]), "grid_seconds": seconds, "grid_executor": executor,
            "grid_precision": "float32", "grid_seconds_per_run": seconds / max(1, summary["runs"]),
            "grid_cells": grid_cells(df), "grid_mean_run_test_error_se": float(df["test_error_se"].mean())}


def grid_cells(df) -> dict:
    """Per (signal strength, d) cell, sorted: the mean test error over its seeds and the standard error of that
    mean (sample standard deviation / sqrt(seeds)), both rounded to 5 decimals."""
    cells = df.groupby(["signal_strength", "d"])["test_error"].agg(["mean", "std", "count"]).reset_index()
    cells["se"] = cells["std"] / np.sqrt(cells["count"])
    return {"signal_strength": cells["signal_strength"].tolist(), "d": cells["d"].tolist(),
            "test_error": cells["mean"].round(5).tolist(), "test_error_se": cells["se"].round(5).tolist()}


def weights_flops(configs: int, steps: int, n: int, d: int, m: int) -> float:
    """FLOPs of the weights backend's two matmuls per step (forward pre-activations and the gradient), each
    2 (2m) (2n) d for the 2m filters against the 2n stored patches (signal + one shared noise patch per sample),
    counted over ``steps + 2`` passes (the steps, the final read-out step and the evaluation; an upper count, as
    the evaluation only runs the forward matmul), for ``configs`` configurations."""
    patches = 2 * n
    return float(configs * (steps + 2) * 2 * (2 * (2 * m) * patches * d))


def bench_weights(device: str, quick: bool) -> dict:
    n, d, m, steps = 100, 4000, 50, (10 if quick else 40)
    configs = [PRESETS["smoke"].config({"backend": "weights", "n": n, "d": d, "m": m, "steps": steps, "n_test": 64,
                                        "signal_strength": 1.0 + 0.25 * k, "seed": s, "precision": "float32",
                                        "unlearn_method": "none", "optimizer": "gd", "log_points": 2})
               for k in range(4) for s in range(4)]
    simulate(configs[:1], device=device)  # warm up
    rate = matmul_rate(torch.float32, device)
    _sync(device)
    start = time.perf_counter()
    simulate(configs, device=device)
    _sync(device)
    seconds = time.perf_counter() - start
    flops = weights_flops(len(configs), steps, n, d, m)
    return {"weights_configs": len(configs), "weights_shape": {"n": n, "d": d, "m": m, "steps": steps},
            "weights_seconds": seconds, "weights_flops_per_s": flops / seconds, "matmul_peak_flops_per_s": rate,
            "weights_fraction_of_matmul_peak": flops / seconds / rate}


def bench_large(device: str, quick: bool) -> dict:
    steps = 100 if quick else 1000
    cfg = PRESETS["smoke"].config({"n": 1000, "d": 1_000_000, "m": 10, "optimizer": "sam", "rho": 0.3, "lr": 0.1,
                                   "steps": steps, "unlearn_method": "none", "n_test": 10_000})
    start = time.perf_counter()
    result = simulate([cfg], device=device)[0]
    return {"large_run_seconds": time.perf_counter() - start, "large_run_steps": steps,
            "large_run_config": cfg.to_dict(), "large_run_test_error": result.metrics["test_error"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a small fraction of each benchmark (smoke check)")
    parser.add_argument("--executor", default="pool", choices=("inprocess", "pool"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    record = {"device": provenance(args.device)["device"], "provenance": provenance(args.device),
              "quick": args.quick, "torch_threads": torch.get_num_threads()}
    record.update(bench_grid(args.device, args.quick, args.executor, args.workers))
    record.update(bench_weights(args.device, args.quick))
    record.update(bench_large(args.device, args.quick))
    targets = {"grid_seconds": 60.0, "weights_fraction_of_matmul_peak": 0.25, "large_run_seconds": 10.0}
    print(f"device: {record['device']}")
    print(f"{'benchmark':34s} {'measured':>12s} {'target':>10s}")
    print(f"{'grid_seconds (' + str(record['grid_runs']) + ' runs)':34s} {record['grid_seconds']:12.1f} "
          f"{'<= 60':>10s}")
    print(f"{'weights_fraction_of_matmul_peak':34s} {record['weights_fraction_of_matmul_peak']:12.3f} "
          f"{'>= 0.25':>10s}   ({record['weights_flops_per_s'] / 1e9:.1f} of "
          f"{record['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s)")
    print(f"{'large_run_seconds (' + str(record['large_run_steps']) + ' steps)':34s} "
          f"{record['large_run_seconds']:12.1f} {'<= 10':>10s}")
    record["targets"] = targets
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
