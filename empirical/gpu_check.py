"""The GPU protocol in one device call (a script, not a test): ``docs/gpu-check.md`` has the exact call.

    python -m empirical.gpu_check [--out $OUT] [--budget-s 540] [--scratch DIR] [--smoke]

What the lent machine gets is the repository's tree plus carried ignored paths — no ``../shared`` — so the data are
found in the git-ignored ``.data/`` of the repository (after ``$SAM_UNLEARNING_DATA`` and ``../shared/data``):
``cifar10-jpg.tar.xz`` and ``cifar10-cscores.npz``. Everything heavy (checkpoints, models, masks) goes to a scratch
folder; only small files come back under ``--out`` (``$OUT``: at most 8 files): ``gpu_check.json`` (everything
below) and ``gpu_check_summary.csv`` (one row per unlearning run), rewritten after every stage so a timeout keeps
what finished.

1. data: CIFAR-10 from the JPEG archive (decoded once), timed;
2. precision: the cosine between the SAM correction g(W+ε) − g(W) under bf16 autocast and in fp32 (SAM ρ=0.02,
   ρ=0.1, ASAM ρ=0.1; ResNet-18 at init), so the fp32 default for SAM can be revisited with a number;
3. the CUDA-graph check and a short epoch benchmark: ours vs the DataLoader/NCHW/fp32 baseline;
4. the quick protocol (docs/protocol.md#presets): ResNet-18 pretrained with SGD and with SAM (test accuracy reported),
   F_high and F_low by the C-score proxy, a retrain per forget set, NegGrad and Sharp MinMax × {SGD, SAM} from both
   models, all metrics but the landscape (ToW, signed ToW, ToW-MIA, MIA, avg gap, E_Var in both units, E_Wp).

Budget guard: a training stage whose estimate (by the benchmark's epoch time) does not fit in what is left of
``--budget-s`` is skipped with that reason, and so is every stage that needs it; an unlearning job is skipped when
the last one of its method and optimizer took longer than what is left. Every stage's wall time is in the JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from simulations.atomic import atomic_write_bytes
from simulations.provenance import atomic_write_json, provenance

TARGET_TEST_ACC = 0.93
GRAPH_TOLERANCE = 0.05  # eager vs graphed parameters after 8 steps, relative to the update: rounding is far below
COSINE_CASES = (("sam", 0.02), ("sam", 0.1), ("asam", 0.1))
OUT_FILES = ("gpu_check.json", "gpu_check_summary.csv")


def _say(text: str) -> None:
    print(f"[gpu_check] {text}", flush=True)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m empirical.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")),
                        help="where the small result files go (default $OUT)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="where checkpoints and models go (default: a new temporary folder)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    parser.add_argument("--bench-steps", type=int, default=None,
                        help="timed steps per benchmark variant (0: skip the benchmark)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="skip a stage that would end after this many seconds from the start")
    parser.add_argument("--graphs", choices=("auto", "on", "off"), default="auto",
                        help="CUDA graphs for the training runs (auto: when the benchmark captured them)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to rehearse the script on a CPU")
    return parser


class Check:
    """The result JSON and its stages: each stage runs on its own (a failure is recorded and the next one runs)."""

    def __init__(self, out: Path, budget_s: float, result: dict):
        self.out, self.budget_s, self.result = out, budget_s, result
        self.began = time.perf_counter()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.began)

    def save(self, rows: list[dict] | None = None) -> None:
        self.result["wall_s"] = time.perf_counter() - self.began
        atomic_write_json(self.out / "gpu_check.json", self.result)
        if rows is not None:
            from .protocol import ROW_KEYS

            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=ROW_KEYS)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_bytes(self.out / "gpu_check_summary.csv", buf.getvalue().encode())

    def stage(self, name: str, fn, estimate_s: float | None = None):
        if estimate_s is not None and estimate_s > self.left():
            self.skip(name, f"needs about {estimate_s:.0f} s by the benchmark, {self.left():.0f} s left")
            return None
        _say(f"{name} ... ({time.perf_counter() - self.began:.0f} s)")
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next stage
            self.result["errors"][name] = _error(exc)
            traceback.print_exc()
            _say(f"{name} FAILED: {_error(exc)}")
            value = None
        self.result["stage_seconds"][name] = time.perf_counter() - t0
        self.save()
        return value

    def skip(self, name: str, why: str) -> None:
        self.result["skipped"][name] = why
        _say(f"{name} skipped: {why}")
        self.save()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import make_config
    from .data import load_cifar
    from .trainer import resolve_device

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    preset = "smoke" if args.smoke else "quick"
    check = Check(out, args.budget_s, {
        "preset": preset, "budget_s": args.budget_s, "argv": sys.argv[1:] if argv is None else argv,
        "scratch": str(scratch), "errors": {}, "skipped": {}, "stage_seconds": {}, "runs": {}})
    result = check.result
    device = resolve_device(make_config(preset))
    result["device"] = provenance(str(device))["device"]
    _say(f"device: {result['device']}; scratch {scratch}")

    t0 = time.perf_counter()
    arrays = check.stage("data", lambda: load_cifar("cifar10", args.data_root,
                                                     limit_per_class=40 if args.smoke else None))
    if arrays is not None:
        result["data"] = {"source": arrays.source, "train": len(arrays.train_y), "test": len(arrays.test_y),
                          "load_s": time.perf_counter() - t0}
    check.stage("precision", lambda: _precision(result, device, args.smoke))
    bench = _bench_and_graphs(check, device, args)
    graphs = args.graphs == "on" or (args.graphs == "auto" and bench is not None and result["graphs_check_ok"]
                                     and all(f"{o}_graphs_epoch_s_b512" in bench for o in ("sgd", "sam")))
    result["preset_cuda_graphs"] = graphs
    _protocol(check, scratch, preset, bench, graphs, args)
    _print_table(result, out)
    return 0 if not result["errors"] else 1


def _precision(result: dict, device, smoke: bool) -> None:
    from .bench import sam_correction_cosine

    size = dict(width=4, batch_size=16) if smoke else dict(width=64, batch_size=256)
    cosines = {f"{opt}_rho{rho}": sam_correction_cosine(device, rho=rho, adaptive=opt == "asam", **size)
               for opt, rho in COSINE_CASES}
    result["sam_bf16_correction_cosine"] = {
        **cosines, "model": f"resnet18 width {size['width']} at init, batch {size['batch_size']}",
        "note": "cosine of g(W+eps) - g(W) under bf16 autocast vs fp32; 1 = faithful (SAM runs in fp32/TF32 unless "
                "sam_bf16=true)"}
    _say("SAM correction cosine bf16 vs fp32: " + ", ".join(f"{k} {v:.3f}" for k, v in cosines.items()))


def _bench_and_graphs(check: Check, device, args) -> dict | None:
    from .bench import check_graphs, table_rows
    from .bench import run as run_bench

    result = check.result
    size = dict(batch_size=16, width=4) if args.smoke else {}
    checks = check.stage("graphs_check", lambda: [check_graphs(device, opt, capture=device.type == "cuda", **size)
                                                  for opt in ("sgd", "sam")])
    result["graphs_check"] = checks or []
    result["graphs_check_ok"] = bool(checks) and all(
        c["status"] in ("captured", "rehearsed") and c["diff_over_update"] < GRAPH_TOLERANCE for c in checks)
    steps = args.bench_steps if args.bench_steps is not None else (5 if args.smoke else 30)
    bench = None
    if steps > 0:
        bench = check.stage("bench", lambda: run_bench(steps=steps, quick=args.smoke, data_root=args.data_root))
    if bench is not None:
        result["bench"] = {k: v for k, v in bench.items() if k != "provenance"}
        for line in table_rows(bench):
            _say(line)
    return bench


def _protocol(check: Check, scratch: Path, preset: str, bench: dict | None, graphs: bool, args) -> None:
    """The quick protocol's stages in order of need, each under the budget guard (module docstring)."""
    from .protocol import make_plan

    result = check.result
    train = {"rho": 0.1, "cuda_graphs": graphs, **({"data_root": args.data_root} if args.data_root else {})}
    if args.epochs:
        train["epochs"] = args.epochs
    unlearn = {"rho": 0.1}
    if args.smoke:
        train.update(width=4, epochs=args.epochs or 1, forget_size=20)
        unlearn.update(epochs=1, batch_size=32)
    plan = make_plan(scratch / "protocol", preset, "sgd,sam", "high,low", "neggrad,sharp_minmax", "sgd,sam", train,
                     unlearn, progress=False)
    result["protocol"] = {"pretrain": plan.pre_opts, "forget": plan.forget_sets, "methods": plan.methods,
                          "unlearn_optimizers": plan.unlearn_opts, "train_overrides": train,
                          "unlearn_settings": plan.per_method}
    rows: list[dict] = []
    with plan.folder():
        done = set()
        for opt in plan.pre_opts:
            cfg = plan.pretrain_config(opt)
            if check.stage(f"pretrain_{opt}", lambda opt=opt: plan.pretrain(opt), _estimate_s(bench, cfg)):
                done.add(f"pretrain_{opt}")
                _record_run(result, f"pretrain_{opt}", plan.out / f"pretrain_{opt}", cfg.epochs)
        if f"pretrain_{plan.pre_opts[0]}" not in done:
            check.skip("protocol", f"pretrain_{plan.pre_opts[0]} did not run: no forget sets, retrains or unlearning")
            return
        if check.stage("splits", plan.splits) is None:
            return
        for name in plan.forget_sets:
            cfg = plan.retrain_config(name)
            if check.stage(f"retrain_{name}", lambda name=name: plan.retrain(name), _estimate_s(bench, cfg)):
                done.add(f"retrain_{name}")
                _record_run(result, f"retrain_{name}", plan.out / f"retrain_{name}", cfg.epochs)
        last: dict[tuple[str, str], float] = {}
        for job in plan.unlearn_jobs():
            pre, name, method, opt = job
            label = "_".join(job)
            if f"pretrain_{pre}" not in done or f"retrain_{name}" not in done:
                check.skip(label, f"needs pretrain_{pre} and retrain_{name}")
                continue
            if last.get((method, opt), 0.0) > check.left():
                check.skip(label, f"the last {method}+{opt} job took {last[(method, opt)]:.0f} s, "
                                  f"{check.left():.0f} s left")
                continue
            t0 = time.perf_counter()
            row = check.stage(label, lambda job=job: plan.unlearn(*job))
            last[(method, opt)] = time.perf_counter() - t0
            if row is not None:
                rows.append(row)
                check.save(rows)
        if rows:
            result["summary"] = plan.summary()["averages"]
            check.save(rows)


def _record_run(result: dict, name: str, folder: Path, epochs: int) -> None:
    from .trainer import load_record

    rec = load_record(folder)
    seconds = rec["epoch_seconds"]
    result["runs"][name] = {**{k: rec[k] for k in ("train_acc", "val_acc", "test_acc", "retain_acc", "forget_acc")},
                            "seconds": sum(seconds), "epochs": epochs, "step_mode": rec["step_mode"],
                            "epoch_s_median": sorted(seconds)[len(seconds) // 2] if seconds else None}


def _estimate_s(bench: dict | None, cfg) -> float | None:
    """Seconds for a run by the benchmark's epoch time at the run's batch (eager or graphed), scaled to the run's
    training-set size, plus 20 % for the per-epoch validation and the partial batch; None when the benchmark has no
    matching number."""
    if not bench:
        return None
    suffix = "" if cfg.batch_size == 256 else f"_b{cfg.batch_size}"
    opt = "sam" if cfg.optimizer in ("sam", "asam") else "sgd"
    key = f"{opt}_graphs_epoch_s{suffix}" if cfg.cuda_graphs else f"{opt}_epoch_s{suffix}"
    if key not in bench:
        return None
    return 1.2 * cfg.epochs * bench[key] + 10.0


def _print_table(result: dict, out: Path) -> None:
    print()
    print(f"device: {result['device']}")
    cos = result.get("sam_bf16_correction_cosine")
    if cos:
        print("SAM correction, bf16 vs fp32 cosine: " + ", ".join(
            f"{k} {v:.3f}" for k, v in cos.items() if isinstance(v, float)))
    for c in result.get("graphs_check", []):
        print(f"graphs check {c['optimizer']}: {c['status']}, |eager - graphed| / |update| {c['diff_over_update']:.2e} "
              f"(ok below {GRAPH_TOLERANCE})")
    if result.get("bench"):
        from .bench import table_rows

        print(f"{'':10s} {'batch':>6s} {'ours s/epoch':>13s} {'baseline':>9s} {'speedup':>8s} {'TFLOP/s':>8s}")
        for line in table_rows(result["bench"]):
            print(line)
    print(f"{result['preset']} preset, cuda_graphs={result.get('preset_cuda_graphs')}, "
          f"target test_acc >= {TARGET_TEST_ACC}")
    for name, r in result["runs"].items():
        print(f"{name:16s} test {r['test_acc']:.4f}  retain {r['retain_acc']:.4f}  forget {r['forget_acc']:.4f}  "
              f"{r['seconds']:.1f} s  {r['step_mode']}")
    from .protocol import summary_lines

    if result.get("summary"):
        for line in summary_lines({"averages": result["summary"]}):
            print(line)
    for name, why in result["skipped"].items():
        print(f"{name:16s} skipped: {why}")
    for name, why in result["errors"].items():
        print(f"{name:16s} FAILED: {why}")
    print(f"wrote {', '.join(str(out / f) for f in OUT_FILES if (out / f).exists())} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
