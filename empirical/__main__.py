"""Command line: ``python -m empirical pretrain|retrain --preset smoke|quick|paper [--set key=value ...] --out DIR``.

    python -m empirical pretrain --preset smoke --out results/pre            # seconds on a CPU
    python -m empirical pretrain --preset paper --set optimizer=sam --set rho=0.1 --out results/sam01
    python -m empirical retrain --preset paper --set forget_size=3000 --out results/retrain
    python -m empirical download --dataset cifar10 --dest ~/data          # checksummed; then --data-root ~/data
    python -m empirical unlearn --from results/pre --method neggrad --set alpha=0.99 --out results/neggrad
    python -m empirical evaluate --run results/neggrad --retrain results/retrain --out results/neggrad/metrics.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulations.arguments import OneLineParser, VersionAction, fraction_open, non_negative_int, positive_int
from simulations.errors import ConfigError

from .config import PRESETS, make_config, parse_overrides
from .fields import train_fields_table, unlearn_fields_table
from .metrics import MIA_FEATURES

FORCE_HELP = "take over an --out folder holding a run of other settings (its outputs are removed)"
PRINT_CONFIG_HELP = "print the resolved configuration as JSON and exit; nothing is run or written"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m empirical", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    train_epilog = "training config fields (--set KEY=VALUE):\n" + train_fields_table()
    unlearn_epilog = "unlearning config fields (--set KEY=VALUE):\n" + unlearn_fields_table()
    for name, text in (("pretrain", "train on the 45k training split"),
                       ("retrain", "train from scratch on the retain set R (same recipe)")):
        p = sub.add_parser(name, help=text, epilog=train_epilog, formatter_class=raw)
        p.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (python -m empirical presets)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (the fields, their defaults and meanings are listed below)")
        p.add_argument("--data-root", default=None, help="CIFAR folder or archive (default: shared data)")
        p.add_argument("--out", type=Path, help="output folder (required unless --print-config)")
        p.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)
        p.add_argument("--force", action="store_true", help=FORCE_HELP)
    un = sub.add_parser("unlearn", help="run an unlearning method on a pretrained model (its split, exactly)",
                        epilog=unlearn_epilog, formatter_class=raw)
    un.add_argument("--from", dest="source", required=True, type=Path, help="the --out folder of a pretrain run")
    un.add_argument("--method", default=None, help="ft, ga, rl, neggrad, l1_sparse, scrub, salun or sharp_minmax")
    un.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (shared ones and the method's own; listed below)")
    un.add_argument("--data-root", default=None, help="CIFAR folder or archive (default: the source run's)")
    un.add_argument("--out", type=Path, help="output folder (required unless --print-config)")
    un.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)
    un.add_argument("--force", action="store_true", help=FORCE_HELP)
    pr = sub.add_parser("protocol", help="pretrain, forget sets, retrain, unlearn, evaluate, tabulate "
                                                  "(docs/protocol.md)",
                        epilog=f"{train_epilog}\n\nunlearning fields (--unlearn-set [METHOD.]KEY=VALUE):\n"
                               f"{unlearn_fields_table()}", formatter_class=raw)
    pr.add_argument("--preset", default="smoke", help=f"training recipe: one of {', '.join(PRESETS)}")
    pr.add_argument("--pretrain", default="sgd,sam", help="pretraining optimizers, comma-separated")
    pr.add_argument("--forget", default="high,mid,low", help="forget sets: high, mid, low (memorization), random")
    pr.add_argument("--methods", default="neggrad", help="unlearning methods, comma-separated")
    pr.add_argument("--unlearn-optimizers", default="sgd,sam", help="unlearning optimizers, comma-separated")
    pr.add_argument("--set", action="append", default=[], metavar="[OPT.]KEY=VALUE",
                    help="override a training field: key=value for every training run, or sgd./sam./asam.key=value "
                         "for the pretraining with that optimizer only (sgd: the retrains too), e.g. sam.epochs=18")
    pr.add_argument("--retain-sample", type=non_negative_int, default=None,
                    help="retain accuracy, MIA shadow-in and entanglement on a seeded sample of this many retain "
                         "images (0: all of R; default: the preset's, 5000 for cpu, else 0)")
    pr.add_argument("--unlearn-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an unlearning setting: method.key=value (e.g. neggrad.alpha=0.99) for one "
                         "method, key=value for every chosen method that has the setting")
    pr.add_argument("--data-root", default=None)
    pr.add_argument("--out", type=Path, help="protocol folder (required unless --print-config)")
    pr.add_argument("--print-config", action="store_true",
                    help="print the pretraining, retraining and unlearning configurations and the stages as JSON and "
                         "exit; nothing is run or written")
    pr.add_argument("--force", action="store_true", help="redo the stages whose settings changed")
    pr.add_argument("--stages", default="all", choices=("all", "train"),
                    help="train: only the pretraining runs, the forget sets and the retrain references")
    pr.add_argument("--cluster", default=None, choices=("slurm", "local", "debug"),
                    help="run the stages as submitit job arrays (empirical/cluster.py); default: in this process")
    pr.add_argument("--workers", type=positive_int, default=2, help="--cluster local: jobs at a time")
    pr.add_argument("--cluster-folder", type=Path, default=None, help="submitit's logs (default OUT/submitit)")
    pr.add_argument("--slurm-partition", default=None)
    pr.add_argument("--timeout-min", type=positive_int, default=240, help="per job")
    me = sub.add_parser("memorization", help="estimate memorization scores by subset training "
                                                     "(docs/protocol.md#forget-sets)")
    me.add_argument("--preset", default="smoke", help=f"training recipe of each model: one of {', '.join(PRESETS)}")
    me.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training config field (python -m empirical fields)")
    me.add_argument("--models", type=positive_int, default=16)
    me.add_argument("--fraction", type=fraction_open, default=0.7, help="share of the training split each model sees")
    me.add_argument("--seed", type=non_negative_int, default=0, help="seed of the hold-out design")
    me.add_argument("--data-root", default=None)
    me.add_argument("--out", required=True, type=Path)
    me.add_argument("--force", action="store_true", help=FORCE_HELP)
    ev = sub.add_parser("evaluate", help="metrics of an unlearned model against the retrained one "
                                                 "(docs/protocol.md#metrics)")
    ev.add_argument("--run", required=True, type=Path, help="an unlearn (or pretrain/retrain) run folder")
    ev.add_argument("--retrain", required=True, type=Path, help="a retrain run on the same forget set")
    ev.add_argument("--out", type=Path, default=None, help="metrics JSON (default: RUN/metrics.json)")
    ev.add_argument("--seed", type=non_negative_int, default=0)
    ev.add_argument("--mia-features", default=",".join(MIA_FEATURES), help="comma-separated; confidence is needed")
    ev.add_argument("--wp-points", type=positive_int, default=1000, help="subsample size of E_Wp")
    ev.add_argument("--landscape-grid", type=non_negative_int, default=0,
                    help="odd grid size (25 in the paper); 0: skip")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--data-root", default="", help="CIFAR folder or archive (default: the runs' own)")
    sub.add_parser("presets", help="list the training presets and the protocol's unlearning presets")
    sub.add_parser("fields", help="list every training and unlearning config field: type, default, meaning")
    rp = sub.add_parser("report", help="the paper-shaped table, claims and figures of a protocol folder")
    rp.add_argument("--protocol", required=True, type=Path, help="a finished protocol folder")
    rp.add_argument("--out", required=True, type=Path, help="e.g. docs/results/cpu")
    rp.add_argument("--no-figures", action="store_true")
    dl = sub.add_parser("download", help="download and verify the standard CIFAR python archive")
    dl.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    dl.add_argument("--dest", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from simulations.provenance import recorded_command

    from .trainer import TrainingDiverged

    handlers = {"download": _download, "unlearn": _unlearn, "evaluate": _evaluate, "memorization": _memorization,
                "protocol": _protocol, "pretrain": _train, "retrain": _train, "report": _report,
                "presets": _presets, "fields": _fields}
    try:
        with recorded_command("empirical", argv):  # every record of this command names it
            return handlers[args.command](args)
    except (ConfigError, TrainingDiverged) as exc:  # every bad input: one line, exit status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file that cannot be read or written: one line naming it
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _presets(args) -> int:
    from .fields import presets_text

    print(presets_text())
    return 0


def _fields(args) -> int:
    print("training config fields (pretrain, retrain, memorization, protocol: --set KEY=VALUE):")
    print(train_fields_table())
    print("\nunlearning config fields (unlearn: --set KEY=VALUE; protocol: --unlearn-set [METHOD.]KEY=VALUE):")
    print(unlearn_fields_table())
    return 0


def _require_out(args) -> None:
    if args.out is None:
        raise ConfigError(f"{args.command} needs --out DIR (or --print-config to only show the configuration)")


def _print_json(value) -> int:
    import json

    print(json.dumps(value, indent=2, default=str))
    return 0


def _with_data_root(overrides: dict, args) -> dict:
    if args.data_root:
        overrides["data_root"] = args.data_root
    return overrides


def _download(args) -> int:
    from .download import download_cifar

    print(f"ready: {download_cifar(args.dataset, args.dest)}")
    return 0


def _train(args) -> int:
    from .trainer import train

    cfg = make_config(args.preset, _with_data_root(parse_overrides(args.set), args))
    if args.print_config:
        return _print_json({"stage": args.command, "preset": args.preset, "hash": cfg.hash, "config": cfg.to_dict()})
    _require_out(args)
    record = train(cfg, args.out, stage=args.command, force=args.force)
    # on screen in percent, as every other accuracy the pipeline shows (the record keeps fractions)
    print(f"{args.command}: accuracy % train_acc {100 * record['train_acc']:.2f}  val_acc {100 * record['val_acc']:.2f}"
          f"  test_acc {100 * record['test_acc']:.2f}  forget_acc {100 * record['forget_acc']:.2f}  "
          f"({sum(record['epoch_seconds']):.1f} s on {record['device']})")
    print(f"wrote {Path(args.out) / 'record.json'}")
    return 0


def _protocol(args) -> int:
    from .protocol import make_plan, parse_train_overrides, run_protocol, summary_lines
    from .unlearn import scoped_overrides

    if args.print_config:  # make_plan checks every setting and writes nothing
        plan = make_plan(args.out or Path("OUT"), args.preset, args.pretrain, args.forget, args.methods,
                         args.unlearn_optimizers, _with_data_root(parse_train_overrides(args.set), args),
                         scoped_overrides(args.unlearn_set), force=args.force,
                         retain_sample=args.retain_sample)
        return _print_json(plan.describe(args.stages))
    _require_out(args)
    if args.cluster:
        from .cluster import run_on_cluster

        plan = make_plan(args.out, args.preset, args.pretrain, args.forget, args.methods, args.unlearn_optimizers,
                         _with_data_root(parse_train_overrides(args.set), args), scoped_overrides(args.unlearn_set),
                         force=args.force, retain_sample=args.retain_sample)
        options = {"timeout_min": args.timeout_min,
                   **({"slurm_partition": args.slurm_partition} if args.slurm_partition else {})}
        with plan.folder():
            result = run_on_cluster(plan, args.cluster, args.cluster_folder or args.out / "submitit", args.workers,
                                    options, threads=1 if args.cluster == "local" else None)
        if args.cluster == "slurm":
            print(f"submitted {sum(len(w) for w in result['submitted'])} jobs in {len(result['submitted'])} "
                  f"dependent waves; logs in {result['folder']}")
            return 0
        summary = result
    else:
        summary = run_protocol(args.out, args.preset, args.pretrain, args.forget, args.methods,
                               args.unlearn_optimizers, _with_data_root(parse_train_overrides(args.set), args),
                               scoped_overrides(args.unlearn_set), force=args.force, stages=args.stages,
                               retain_sample=args.retain_sample)
    for line in summary_lines(summary):
        print(line)
    print(f"wrote {args.out / 'summary.json'} and summary.csv")
    return 0


def _report(args) -> int:
    from .report import write_report

    report = write_report(args.protocol, args.out, figures=not args.no_figures)
    print(f"{report['label']}: {len(report['rows'])} unlearning runs; wrote {args.out / 'summary.md'}, summary.json, "
          f"summary.csv" + (", figures" if report.get("figures") else ""))
    return 0


def _memorization(args) -> int:
    from .memorization import estimate

    cfg = make_config(args.preset, _with_data_root(parse_overrides(args.set), args))
    record = estimate(cfg, args.out, args.models, args.fraction, args.seed, force=args.force)
    print(f"memorization: {record['models']} models, mean score {record['mean_score']:.4f}; wrote {record['scores']}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, summary_lines

    out = args.out or args.run / "metrics.json"
    result = evaluate(args.run, args.retrain, out, seed=args.seed,
                      mia_features=tuple(f.strip() for f in args.mia_features.split(",") if f.strip()),
                      wp_points=args.wp_points, landscape_grid=args.landscape_grid, device=args.device,
                      data_root=args.data_root)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {out}")
    return 0


def _unlearn(args) -> int:
    from .unlearn import UnlearnConfig, parse_overrides, unlearn

    overrides = _with_data_root(parse_overrides(args.set), args)
    if args.method:
        overrides["method"] = args.method
    cfg = UnlearnConfig(**overrides)
    if args.print_config:  # lr and epochs as the run would use them (a placeholder resolved to the method's default)
        return _print_json({"method": cfg.method, "source": str(args.source), "config": cfg.resolved()})
    _require_out(args)
    record = unlearn(cfg, args.source, args.out, force=args.force)
    a, b = record["accuracy"], record["source_accuracy"]
    print(f"{record['method']}: accuracy % retain {b['retain']:.2f} -> {a['retain']:.2f}  forget {b['forget']:.2f} -> "
          f"{a['forget']:.2f}  test {b['test']:.2f} -> {a['test']:.2f}  ({sum(record['epoch_seconds']):.1f} s on "
          f"{record['device']})")
    print(f"wrote {Path(args.out) / 'record.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
