"""One-command GPU check that fits a single 10-minute device call on an H100 (a script, not a test).

    python -m empirical.gpu_check [--data-root DIR] [--out $OUT]

1. load CIFAR-10 from the JPEG archive (decoded once, cached);
2. a short run of the epoch-time benchmark (ours vs the DataLoader/fp32 baseline);
3. the ``quick`` preset: pretrain ResNet-18 with SGD and with SAM (target >= 93 % test accuracy each) and one retrain
   on R; print a table and write ``gpu_check.json`` under ``--out`` (default ``$OUT`` or the current folder).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from simulations.provenance import atomic_write_json

from .bench import run as run_bench
from .config import make_config
from .trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empirical.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--epochs", type=int, default=None, help="override the quick preset's epochs")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to rehearse the script on a CPU")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    bench = run_bench(steps=5 if args.smoke else 30, quick=args.smoke, data_root=args.data_root)
    runs = {}
    preset = "smoke" if args.smoke else "quick"
    extra = {"data_root": args.data_root} if args.data_root else {}
    if args.epochs:
        extra["epochs"] = args.epochs
    for name, stage, opt in (("sgd", "pretrain", "sgd"), ("sam", "pretrain", "sam"), ("retrain", "retrain", "sgd")):
        cfg = make_config(preset, {**extra, "optimizer": opt, "rho": 0.1})
        rec = train(cfg, out / name, stage=stage, progress=False)
        runs[name] = {k: rec[k] for k in ("train_acc", "val_acc", "test_acc", "retain_acc", "forget_acc")}
        runs[name]["seconds"] = sum(rec["epoch_seconds"])
        runs[name]["epoch_s_median"] = sorted(rec["epoch_seconds"])[len(rec["epoch_seconds"]) // 2]
    result = {"bench": bench, "runs": runs, "wall_s": time.perf_counter() - began, "preset": preset}
    atomic_write_json(out / "gpu_check.json", result)
    print(f"device: {bench['device']}")
    print(f"epoch s (batch 256): SGD {bench['sgd_epoch_s']:.2f} (baseline {bench['baseline_sgd_epoch_s']:.2f}), "
          f"SAM {bench['sam_epoch_s']:.2f} (baseline {bench['baseline_sam_epoch_s']:.2f})")
    print(f"{'run':8s} {'train':>7s} {'val':>7s} {'test':>7s} {'retain':>7s} {'forget':>7s} {'s/epoch':>8s} {'s':>7s}")
    for name, r in runs.items():
        print(f"{name:8s} {r['train_acc']:7.4f} {r['val_acc']:7.4f} {r['test_acc']:7.4f} {r['retain_acc']:7.4f} "
              f"{r['forget_acc']:7.4f} {r['epoch_s_median']:8.2f} {r['seconds']:7.1f}")
    print(f"wrote {out / 'gpu_check.json'} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
