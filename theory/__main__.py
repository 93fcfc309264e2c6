"""Command line: ``python -m theory check [--json]`` and ``python -m theory statements [--json]``.

    python -m theory check           # readable report, one block per check; exit status 1 if any check fails
    python -m theory check --json    # JSON list: name, statement, passed, tag, reconstruction, steps, counterexample
    python -m theory statements      # the statements (docs/model.md#theory-statements), tags, sympy relations
    python -m theory mutations [--json]  # deliberately wrong statements; exit 1 if one passes every check
    python -m theory validate --preset smoke --out DIR   # simulate predictions 2-11: DIR/validation.{csv,md}
                                                         # (docs/model.md#checkable-predictions)
    python -m theory controls [--json]   # every verdict rule on a world built to satisfy / to violate it
    python -m theory claims --validation DIR   # docs/claims-theory.md from DIR/validation.csv

Items tagged [med]/[lo], and sympy forms written here from a summary, are printed as "reconstruction": they are not
the papers' exact statements (docs/model.md#confidence-tags).
"""

from __future__ import annotations

import argparse
import json
import sys

import sympy as sp

from .checks import CheckResult, run_checks
from .statements import Statement, all_statements

RECONSTRUCTION_LABEL = "reconstruction, not the paper's exact statement"


def _tag_line(tag: str, reconstruction: bool) -> str:
    return f"[{tag}]" + (f" — {RECONSTRUCTION_LABEL}" if reconstruction else "")


def format_check(result: CheckResult) -> str:
    lines = [f"{'PASS' if result.passed else 'FAIL'}  {result.name}  {_tag_line(result.tag, result.reconstruction)}",
             f"  statement: {result.statement}"]
    lines += [f"  {i}. {step}" for i, step in enumerate(result.steps, 1)]
    if result.counterexample:
        lines.append(f"  counterexample: {result.counterexample}")
    return "\n".join(lines)


def format_report(results: list[CheckResult]) -> str:
    failed = [r.name for r in results if not r.passed]
    header = f"theory checks: {len(results) - len(failed)} passed, {len(failed)} failed (of {len(results)})"
    footer = "all checks passed" if not failed else "FAILED: " + ", ".join(failed)
    return "\n\n".join([header, *map(format_check, results), footer])


def format_statement(statement: Statement) -> str:
    lines = [f"{statement.name}  {_tag_line(statement.tag, statement.is_reconstruction)}",
             f"  source: {statement.source}", f"  {statement.description}"]
    lines += [f"  {key}: {sp.sstr(value)}" for key, value in statement.relations.items()]
    return "\n".join(lines)


def statement_dict(statement: Statement) -> dict:
    return {"name": statement.name, "source": statement.source, "tag": statement.tag,
            "reconstruction": statement.is_reconstruction, "description": statement.description,
            "relations": {key: sp.sstr(value) for key, value in statement.relations.items()}}


def format_presets() -> str:
    """``python -m theory presets``: every validation preset (``validate --preset``), its base settings and axes."""
    import dataclasses

    from .validation import PRESETS, TINY

    def short(value):
        if isinstance(value, list) and len(value) > 6:
            return f"{len(value)} values {value[0]}..{value[-1]}"
        return value

    blocks = []
    for preset in (*PRESETS.values(), TINY):
        lines = [preset.name + ("  (a few seconds, for tests)" if preset is TINY else "")]
        for f in dataclasses.fields(preset):
            if f.name != "name" and not (f.name == "extra" and not preset.extra):
                lines.append(f"  {f.name:14s} {short(getattr(preset, f.name))}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _mutations(as_json: bool, all_checks: bool) -> int:
    """``python -m theory mutations``: exit 1 if a mutation fails no check or the unmutated statements fail one."""
    from .mutations import format_table, run_mutations

    report = run_mutations(all_checks=all_checks)
    if as_json:
        print(json.dumps([r.to_dict() for r in report.results], indent=2))
    else:
        print(format_table(report))
    if report.baseline_failures:
        print("unmutated statements fail: " + ", ".join(report.baseline_failures), file=sys.stderr)
    if report.missed:
        print("mutations no check catches: " + ", ".join(report.missed), file=sys.stderr)
    return 0 if report.ok else 1


def _controls(as_json: bool, rules: list[str] | None) -> int:
    """``python -m theory controls``: exit 1 unless every positive control agrees and every negative disagrees."""
    from .controls import run_controls

    try:
        results = run_controls(rules)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'rule':6} {'positive':13} {'negative':13} passed")
        for r in results:
            print(f"{r['rule']:6} {r['positive']:13} {r['negative']:13} {'yes' if r['passed'] else 'NO'}")
    failed = [r["rule"] for r in results if not r["passed"]]
    if failed:
        print("rules whose controls fail: " + ", ".join(failed), file=sys.stderr)
    return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    from simulations.arguments import OneLineParser, VersionAction, positive_int

    parser = OneLineParser(prog="python -m theory", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("check", "run the symbolic checks"), ("statements", "list the statements")):
        sub.add_parser(name, help=help_text).add_argument("--json", action="store_true", help="print JSON")
    val = sub.add_parser("validate", help="check predictions 2-11 against the simulator (premise-gated)")
    val.add_argument("--preset", default="smoke", choices=["smoke", "quick", "paper", "tiny"],
                     help="sweep sizes (tiny: a few seconds, for tests)")
    val.add_argument("--out", default="results/validation", help="output folder (sweeps cached in OUT/sweeps)")
    val.add_argument("--only", action="append", help="run only these predictions (2..11; repeatable)")
    val.add_argument("--executor", default="inprocess", choices=["inprocess", "pool"])
    val.add_argument("--workers", type=positive_int, default=2)
    val.add_argument("--force", action="store_true",
                     help="take over an --out folder holding a validation of another preset")
    mut = sub.add_parser("mutations", help="apply deliberately wrong statements; every one must fail a check")
    mut.add_argument("--json", action="store_true", help="print JSON")
    mut.add_argument("--all-checks", action="store_true", help="run every check, not only those reading the statement")
    ctl = sub.add_parser("controls", help="run every verdict rule on tables built to satisfy and to violate it")
    ctl.add_argument("--json", action="store_true", help="print JSON")
    ctl.add_argument("--rule", action="append", help="only these rules (e.g. 2a, 8; repeatable)")
    clm = sub.add_parser("claims", help="write docs/claims-theory.md from a validation folder")
    clm.add_argument("--validation", default="results/validation", help="folder holding validation.csv")
    clm.add_argument("--out", default="docs/claims-theory.md", help="Markdown file to write")
    sub.add_parser("presets", help="list the validation presets (validate --preset): base settings and sweep axes")
    args = parser.parse_args(argv)

    if args.command == "presets":
        print(format_presets())
        return 0

    if args.command == "controls":
        return _controls(args.json, args.rule)

    if args.command == "claims":
        from .claims import write_claims

        try:
            path = write_claims(args.validation, args.out)
        except (FileNotFoundError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0

    if args.command == "mutations":
        return _mutations(args.json, args.all_checks)

    if args.command == "validate":
        from pathlib import Path

        from simulations.errors import ConfigError
        from simulations.provenance import recorded_command
        from simulations.runfolder import RunFolder

        from .validation import PRESETS, TINY, validate

        preset = TINY if args.preset == "tiny" else PRESETS[args.preset]
        try:  # the run-folder contract (simulations.runfolder): one writer, a folder of one preset
            with RunFolder(Path(args.out), "validation", {"preset": args.preset}, force=args.force,
                           outputs=("validation.csv", "validation.md")) as folder, \
                    recorded_command("theory", argv):
                folder.begin()
                table = validate(preset, args.out, only=args.only, executor=args.executor, workers=args.workers)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return 2

        print(Path(args.out, "validation.md").read_text())
        print(f"wrote {Path(args.out, 'validation.csv')} ({len(table)} rows)")
        return 0

    if args.command == "statements":
        statements = all_statements()
        if args.json:
            print(json.dumps([statement_dict(s) for s in statements], indent=2))
        else:
            print("\n\n".join(map(format_statement, statements)))
        return 0

    results = run_checks()
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_report(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
