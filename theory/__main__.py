"""Command line: ``python -m theory check [--json]`` and ``python -m theory statements [--json]``.

    python -m theory check           # readable report, one block per check; exit status 1 if any check fails
    python -m theory check --json    # JSON list: name, statement, passed, tag, reconstruction, steps, counterexample
    python -m theory statements      # the statements of spec §6 with their tags and sympy relations
    python -m theory validate --preset smoke --out DIR   # simulate spec §7 predictions 2-11: DIR/validation.{csv,md}

Items tagged [med]/[lo], and sympy forms written here from a summary, are printed as "reconstruction": they are not
the papers' exact statements (spec/theory.md, confidence tags).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("check", "run the symbolic checks"), ("statements", "list the statements")):
        sub.add_parser(name, help=help_text).add_argument("--json", action="store_true", help="print JSON")
    val = sub.add_parser("validate", help="check spec §7 predictions against the simulator")
    val.add_argument("--preset", default="smoke", choices=["smoke", "quick", "paper", "tiny"],
                     help="sweep sizes (tiny: a few seconds, for tests)")
    val.add_argument("--out", default="results/validation", help="output folder (sweeps cached in OUT/sweeps)")
    val.add_argument("--only", action="append", help="run only these predictions (2..11; repeatable)")
    val.add_argument("--executor", default="inprocess", choices=["inprocess", "pool"])
    val.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    if args.command == "validate":
        from pathlib import Path

        from simulations.config import ConfigError
        from simulations.provenance import ensure_writable_dir

        from .validation import PRESETS, TINY, validate

        preset = TINY if args.preset == "tiny" else PRESETS[args.preset]
        try:
            ensure_writable_dir(Path(args.out))
            table = validate(preset, args.out, only=args.only, executor=args.executor, workers=args.workers)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
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
