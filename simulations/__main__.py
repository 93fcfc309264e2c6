"""Command line: ``python -m simulations run|sweep|presets|fields``.

    python -m simulations run --preset smoke --set signal_strength=2 --out results/one
    python -m simulations sweep --preset smoke --grid d=100,200,400 --grid signal_strength=0.5:4:0.5 --out DIR
    python -m simulations sweep --preset smoke --print-config      # the resolved base and grid; nothing is run
    python -m simulations fields                                   # every --set field: type, default, meaning
    python -m simulations --version
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from .arguments import OneLineParser, positive_float, positive_int
from .config import PRESETS, parse_assignments, parse_grid_axis, preset
from .errors import ConfigError
from .executors import EXECUTORS


def _fields_table() -> str:
    from .config import FIELD_TYPES, SimConfig
    from .fields import describe_fields

    return describe_fields(SimConfig().to_dict(), FIELD_TYPES)


def version_text() -> str:
    from .provenance import code_version, numerics_version

    return f"sam-unlearning {code_version()} (numerics {numerics_version()})"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (the fields, their defaults and meanings are listed below)")
    p.add_argument("--out", type=Path, help="output folder (required unless --print-config)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (and grid) and exit; nothing is run or written")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--max-memory-gb", type=positive_float, default=None, help="memory budget (default: half of free)")
    p.add_argument("--force", action="store_true",
                   help="take over an --out folder that holds a run of other settings (its results are replaced)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m simulations", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    fields_epilog = "config fields (--set KEY=VALUE):\n" + _fields_table()
    run = sub.add_parser("run", help="one configuration → DIR/result.json and DIR/trajectory.npz",
                         epilog=fields_epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(run)
    sweep = sub.add_parser("sweep", help="a grid of configurations → DIR/results.csv (cached, resumable)",
                           epilog=fields_epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2|KEY=START:STOP:STEP",
                       help="a grid axis; replaces the preset's axis of the same key")
    sweep.add_argument("--no-preset-grid", action="store_true", help="ignore the preset's own grid axes")
    sweep.add_argument("--executor", default="inprocess", choices=EXECUTORS)
    sweep.add_argument("--workers", type=positive_int, default=2, help="processes for --executor pool")
    sweep.add_argument("--cluster", default=None, help="submitit cluster: slurm (default), local or debug")
    sweep.add_argument("--slurm-partition", default=None)
    sweep.add_argument("--timeout-min", type=positive_int, default=60, help="per job, for submitit")
    sweep.add_argument("--chunk-runs", type=positive_int, default=2000, help="runs per work unit / cache chunk")
    sweep.add_argument("--save-coefficients", action="store_true",
                       help="store full kappa/zeta trajectories per run (large), not only their summaries")
    sub.add_parser("presets", help="list the presets")
    sub.add_parser("fields", help="list every config field with its type, default and meaning")
    return parser


def cmd_run(args) -> int:
    from .atomic import atomic_write_bytes, atomic_write_json
    from .engine import bytes_per_config, check_device, memory_refusal, simulate
    from .provenance import numerics_version, provenance
    from .runfolder import RunFolder
    from .sweep import available_memory

    cfg = preset(args.preset).config(parse_assignments(args.set))
    if args.print_config:
        print(json.dumps({"preset": args.preset, "hash": cfg.hash, "config": cfg.to_dict()}, indent=2))
        return 0
    _require_out(args)
    check_device(args.device)
    budget = args.max_memory_gb * 2**30 if args.max_memory_gb else 0.5 * available_memory()
    if (need := bytes_per_config(cfg, cfg.backend)) > budget:
        raise ConfigError(memory_refusal(cfg, need, budget))
    out = args.out
    with RunFolder(out, "run", {"config": cfg.hash, "numerics_version": numerics_version()}, force=args.force,
                   outputs=("result.json", "trajectory.npz"), compare=("config",)) as folder:
        folder.begin()
        start = time.perf_counter()
        result = simulate([cfg], device=args.device, save_coefficients=True, memory_bytes=budget)[0]
        record = {"config": cfg.to_dict(), "hash": cfg.hash, "seed": cfg.seed, "metrics": result.metrics,
                  "wall_s": time.perf_counter() - start, "provenance": provenance(args.device),
                  "trajectory_file": "trajectory.npz"}
        buf = io.BytesIO()
        np.savez_compressed(buf, **result.trajectory, **result.coefficients)
        atomic_write_bytes(out / "trajectory.npz", buf.getvalue())
        atomic_write_json(out / "result.json", record)
    m = result.metrics
    print(f"{cfg.hash}  test_error {m['test_error']:.4f} ± {m['test_error_se']:.4f}  train_error "
          f"{m['train_error']:.3f}  forget_acc {m['forget_acc']:.3f}  diverged {m['diverged']}")
    print(f"wrote {out / 'result.json'}")
    return 0


def _require_out(args) -> None:
    if args.out is None:
        raise ConfigError(f"{args.command} needs --out DIR (or --print-config to only show the configuration)")


def cmd_sweep(args) -> int:
    from .sweep import compose_grid, grid_size, run_sweep

    p = preset(args.preset)
    overrides = parse_assignments(args.set)
    base = {**p.base, **overrides}
    grid = compose_grid({} if args.no_preset_grid else dict(p.grid), overrides,
                        [parse_grid_axis(item) for item in args.grid])
    options = {"timeout_min": args.timeout_min}
    if args.cluster:
        options["cluster"] = args.cluster
    if args.slurm_partition:
        options["slurm_partition"] = args.slurm_partition
    if args.print_config:
        from .config import SimConfig

        SimConfig().replace(**{k: v for k, v in base.items()})  # the base alone must be a valid configuration
        print(json.dumps({"preset": args.preset, "runs": grid_size(grid), "base": base,
                          "grid": {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in grid.items()}},
                         indent=2))
        return 0
    _require_out(args)
    print(f"sweep: {grid_size(grid):,} runs over {', '.join(f'{k}[{len(v)}]' for k, v in grid.items()) or 'base'}",
          file=sys.stderr)
    summary = run_sweep(base, grid, args.out, executor=args.executor, workers=args.workers, device=args.device,
                        save_coefficients=args.save_coefficients, max_memory_gb=args.max_memory_gb,
                        chunk_runs=args.chunk_runs, executor_options=options,
                        on_other_grid="replace" if args.force else "refuse")
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fields":
            print(_fields_table())
            return 0
        if args.command == "presets":
            for p in PRESETS.values():
                print(f"{p.name:8s} {p.description}\n         base {p.base}\n         grid "
                      f"{ {k: (v if len(v) <= 6 else f'{len(v)} values {v[0]}..{v[-1]}') for k, v in p.grid.items()} }")
            return 0
        from .provenance import recorded_command

        with recorded_command("simulations", argv):  # every record of this command names it
            return cmd_run(args) if args.command == "run" else cmd_sweep(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file that cannot be read or written: one line naming it
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
