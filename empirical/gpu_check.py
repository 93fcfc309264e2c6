"""One-command GPU check that fits a single 10-minute device call on an H100 (a script, not a test).

    python -m empirical.gpu_check [--data-root DIR] [--out $OUT] [--budget-s 540]

1. load CIFAR-10 from the JPEG archive (decoded once, cached) and time it;
2. the CUDA-graph check (a graphed narrow ResNet-18 trained beside an eager one, SGD and SAM: the difference must be
   rounding) and a short run of the epoch-time benchmark: ours (eager, and with CUDA graphs) vs the DataLoader/fp32
   baseline;
3. the ``quick`` preset: pretrain ResNet-18 with SGD and with SAM (target >= 93 % test accuracy each) and one retrain
   on R (the SGD run's split), with CUDA graphs when the benchmark captured them; then NegGrad with SAM from the SGD
   model and its metrics against the retrained one (ToW, ToW-MIA, MIA efficacy, E_Var);
4. print a table and write ``gpu_check.json`` under ``--out`` (default ``$OUT`` or the current folder).

Built for a machine one cannot log in to: every stage runs on its own (a failure is recorded with its message and
the next stage still runs), ``gpu_check.json`` is rewritten after every stage (a timeout keeps what finished), and a
run that would not finish within ``--budget-s`` by the benchmark's epoch times is skipped with that reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from simulations.provenance import atomic_write_json, provenance

RUNS = (("sgd", "pretrain", "sgd"), ("sam", "pretrain", "sam"), ("retrain", "retrain", "sgd"))
TARGET_TEST_ACC = 0.93
UNLEARN_RESERVE_S = 90  # what NegGrad (5 epochs) and its evaluation need at the least on an H100 (a guess)
GRAPH_TOLERANCE = 0.05  # eager vs graphed parameters after 8 steps, relative to the update: rounding is far below


def _say(text: str) -> None:
    print(f"[gpu_check] {text}", flush=True)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empirical.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--epochs", type=int, default=None, help="override the quick preset's epochs")
    parser.add_argument("--bench-steps", type=int, default=None,
                        help="timed steps per benchmark variant (0: skip the benchmark)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="skip a run that would end after this many seconds from the start")
    parser.add_argument("--graphs", choices=("auto", "on", "off"), default="auto",
                        help="CUDA graphs for the preset runs (auto: when the benchmark captured them)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to rehearse the script on a CPU")
    args = parser.parse_args(argv)
    from .bench import check_graphs, table_rows
    from .bench import run as run_bench
    from .config import make_config
    from .data import load_cifar
    from .trainer import train

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    preset = "smoke" if args.smoke else "quick"
    result: dict = {"preset": preset, "budget_s": args.budget_s, "argv": sys.argv[1:] if argv is None else argv,
                    "errors": {}, "runs": {}, "skipped": {}}

    def save() -> None:
        result["wall_s"] = time.perf_counter() - began
        atomic_write_json(out / "gpu_check.json", result)

    def stage(name: str, fn):
        _say(f"{name} ... ({time.perf_counter() - began:.0f} s)")
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next stage
            result["errors"][name] = _error(exc)
            traceback.print_exc()
            _say(f"{name} FAILED: {_error(exc)}")
            value = None
        save()
        return value

    t0 = time.perf_counter()
    arrays = stage("data", lambda: load_cifar("cifar10", args.data_root,
                                               limit_per_class=40 if args.smoke else None))
    if arrays is not None:
        result["data"] = {"source": arrays.source, "train": len(arrays.train_y), "test": len(arrays.test_y),
                          "load_s": time.perf_counter() - t0}
    from .trainer import resolve_device

    device = resolve_device(make_config(preset))
    result["device"] = provenance(str(device))["device"]
    _say(f"device: {result['device']}")
    size = dict(batch_size=16, width=4) if args.smoke else {}
    checks = stage("graphs_check", lambda: [check_graphs(device, opt, capture=device.type == "cuda", **size)
                                            for opt in ("sgd", "sam")])
    graphs_ok = False
    if checks is not None:
        result["graphs_check"] = checks
        graphs_ok = all(c["status"] in ("captured", "rehearsed") and c["diff_over_update"] < GRAPH_TOLERANCE
                        for c in checks)
        for c in checks:
            _say(f"graphs check {c['optimizer']}: {c['status']}, |eager - graphed| / |update| = "
                 f"{c['diff_over_update']:.2e}, max loss diff {c['max_loss_abs_diff']:.2e}")
    result["graphs_check_ok"] = graphs_ok
    steps = args.bench_steps if args.bench_steps is not None else (5 if args.smoke else 30)
    bench = None
    if steps > 0:
        bench = stage("bench", lambda: run_bench(steps=steps, quick=args.smoke, data_root=args.data_root))
    if bench is not None:
        result["bench"] = bench
        for line in table_rows(bench):
            _say(line)
    captured = bench is not None and all(f"{o}_graphs_epoch_s_b512" in bench for o in ("sgd", "sam"))
    graphs = args.graphs == "on" or (args.graphs == "auto" and captured and graphs_ok)
    result["preset_cuda_graphs"] = graphs

    extra = {"data_root": args.data_root} if args.data_root else {}
    if args.epochs:
        extra["epochs"] = args.epochs
    for name, kind, opt in RUNS:
        cfg = make_config(preset, {**extra, "optimizer": opt, "rho": 0.1, "cuda_graphs": graphs})
        if kind == "retrain" and (out / "sgd" / "split.npz").is_file():  # the same forget set as the SGD model
            cfg = cfg.replace(split_file=str(out / "sgd" / "split.npz"))
        estimate = _estimate_s(bench, cfg)
        left = args.budget_s - (time.perf_counter() - began)
        if estimate is not None and estimate > left:
            result["skipped"][name] = f"needs about {estimate:.0f} s by the benchmark, {left:.0f} s left"
            _say(f"{name} skipped: {result['skipped'][name]}")
            save()
            continue
        rec = stage(name, lambda cfg=cfg, name=name, kind=kind: train(cfg, out / name, stage=kind, progress=False))
        if rec is not None:
            runs = result["runs"][name] = {k: rec[k] for k in
                                           ("train_acc", "val_acc", "test_acc", "retain_acc", "forget_acc")}
            runs.update(seconds=sum(rec["epoch_seconds"]), epochs=rec["epochs"], step_mode=rec["step_mode"],
                        epoch_s_median=sorted(rec["epoch_seconds"])[len(rec["epoch_seconds"]) // 2],
                        estimate_s=estimate)
            save()
    left = args.budget_s - (time.perf_counter() - began)
    if "sgd" in result["runs"] and "retrain" in result["runs"] and left > UNLEARN_RESERVE_S:
        unlearned = stage("unlearn", lambda: _unlearn_and_evaluate(out, args.smoke))
        if unlearned is not None:
            result["unlearn"] = unlearned
            save()
    elif "sgd" in result["runs"] and "retrain" in result["runs"]:
        result["skipped"]["unlearn"] = f"{left:.0f} s left, {UNLEARN_RESERVE_S} s reserved for it"
        save()
    _print_table(result, out)
    return 0 if not result["errors"] else 1


def _unlearn_and_evaluate(out: Path, smoke: bool) -> dict:
    """NegGrad with SAM from the SGD model, then its metrics against the retrained model (MIA: confidence only)."""
    from .evaluate import evaluate
    from .unlearn import UnlearnConfig, unlearn

    cfg = UnlearnConfig(method="neggrad", optimizer="sam", rho=0.1, alpha=0.99, epochs=1 if smoke else 5,
                        batch_size=64 if smoke else 256)
    rec = unlearn(cfg, out / "sgd", out / "neggrad", progress=False)
    metrics = evaluate(out / "neggrad", out / "retrain", out / "neggrad" / "metrics.json",
                       mia_features=("confidence",))
    return {"seconds": sum(rec["epoch_seconds"]), "accuracy": rec["accuracy"], "tow": metrics["tow"],
            "tow_mia": metrics["tow_mia"], "avg_gap": metrics["avg_gap"],
            "mia": metrics["unlearned"]["mia_efficacy"]["confidence"],
            "mia_retrain": metrics["retrained"]["mia_efficacy"]["confidence"],
            "e_var": metrics["unlearned"]["entanglement"]["e_var"],
            "e_var_retrain": metrics["retrained"]["entanglement"]["e_var"]}


def _estimate_s(bench: dict | None, cfg) -> float | None:
    """Seconds for a run by the benchmark's epoch time at the run's batch (eager or graphed), plus 20 % for the
    per-epoch validation and the partial batch; None when the benchmark has no matching number."""
    if not bench:
        return None
    suffix = "" if cfg.batch_size == 256 else f"_b{cfg.batch_size}"
    opt = "sam" if cfg.optimizer in ("sam", "asam") else "sgd"
    key = f"{opt}_graphs_epoch_s{suffix}" if cfg.cuda_graphs else f"{opt}_epoch_s{suffix}"
    if key not in bench:
        return None
    return 1.2 * cfg.epochs * bench[key] + 10.0


def _print_table(result: dict, out: Path) -> None:
    bench = result.get("bench")
    print()
    print(f"device: {result['device']}")
    for c in result.get("graphs_check", []):
        print(f"graphs check {c['optimizer']}: {c['status']}, |eager - graphed| / |update| {c['diff_over_update']:.2e} "
              f"(ok below {GRAPH_TOLERANCE})")
    if bench:
        print(f"{'':10s} {'batch':>6s} {'ours s/epoch':>13s} {'baseline':>9s} {'speedup':>8s} {'TFLOP/s':>8s}")
        from .bench import table_rows

        for line in table_rows(bench):
            print(line)
    print(f"{result['preset']} preset, cuda_graphs={result['preset_cuda_graphs']}, "
          f"target test_acc >= {TARGET_TEST_ACC}")
    print(f"{'run':8s} {'train':>7s} {'val':>7s} {'test':>7s} {'retain':>7s} {'forget':>7s} {'s/epoch':>8s} {'s':>7s}")
    for name, r in result["runs"].items():
        print(f"{name:8s} {r['train_acc']:7.4f} {r['val_acc']:7.4f} {r['test_acc']:7.4f} {r['retain_acc']:7.4f} "
              f"{r['forget_acc']:7.4f} {r['epoch_s_median']:8.2f} {r['seconds']:7.1f}  {r['step_mode']}")
    u = result.get("unlearn")
    if u:
        print(f"neggrad+SAM from the SGD model: RA {u['accuracy']['retain']:.2f} FA {u['accuracy']['forget']:.2f} "
              f"TA {u['accuracy']['test']:.2f}  ToW {100 * u['tow']:.2f}  ToW-MIA {100 * u['tow_mia']:.2f}  "
              f"MIA {u['mia']:.3f} (retrain {u['mia_retrain']:.3f})  {u['seconds']:.1f} s")
    for name, why in result["skipped"].items():
        print(f"{name:8s} skipped: {why}")
    for name, why in result["errors"].items():
        print(f"{name:8s} FAILED: {why}")
    print(f"wrote {out / 'gpu_check.json'} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
