"""Mutation testing of one module with mutmut, in a scratch copy of the repository (not part of CI: too slow).

    python tests/mutation.py theory/calibration.py tests/test_theory_validation.py tests/test_method_properties.py
    python tests/mutation.py simulations/unlearning.py tests/test_unlearning.py tests/test_method_properties.py
    python tests/mutation.py --resume theory/calibration.py tests/...   # go on with an interrupted run
    python tests/mutation.py --report    # docs/testing.md from every module's score.json

``MUTATION_TIMEOUT_MULTIPLIER`` (default 15, mutmut's own) scales each mutant's wall-clock limit: raise it on a busy
machine, where mutants otherwise time out (counted apart from killed and survived).

Copies the tracked and the new, not ignored files into ``mutants-work/<module>/`` (git-ignored), narrows
``[tool.mutmut]`` there to the one module (``only_mutate``) and the named tests
(``pytest_add_cli_args_test_selection``), runs ``mutmut run``, and prints and writes
``mutants-work/<module>/score.json``: killed, survived, timeouts, suspicious, skipped, no tests, and the score
killed / (killed + survived). The surviving mutants are listed by name: ``mutmut show NAME`` in that folder prints
each diff, to be judged equivalent or a test still to write (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scratch_copy(module: str) -> Path:
    work = ROOT / "mutants-work" / module.replace("/", "_").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    # tracked files and new ones git does not ignore (a test file not yet committed), as they are in the working tree
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("docs/", "figures/out/")) or not (ROOT / name).is_file():
            continue
        dest = work / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    return work


def narrow_config(work: Path, module: str, tests: list[str]) -> None:
    package = module.split("/", 1)[0]
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    text = text[: text.index("[tool.mutmut]")]
    text += ("[tool.mutmut]\n"
             f"source_paths = [\"{package}\"]\n"
             f"only_mutate = [\"{module}\"]\n"
             f"also_copy = [\"simulations\", \"theory\", \"empirical\", \"figures\", \"tests\"]\n"
             f"pytest_add_cli_args = [\"-q\", \"-p\", \"no:cacheprovider\"]\n"
             # torch is not fork-safe once its threads have started: fork the workers from a clean server
             f"process_isolation = \"forkserver\"\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
             # on a loaded machine a mutant's wall-clock limit, (test time + 1 s) × multiplier, needs raising
             f"timeout_multiplier = {float(os.environ.get('MUTATION_TIMEOUT_MULTIPLIER', '15'))}\n")
    pyproject.write_text(text)


def check_resumable(work: Path, module: str, tests: list[str]) -> None:
    """Refuse to resume unless the scratch copy holds this module and these tests exactly as the working tree does:
    mutmut keeps each verdict it recorded, and a verdict is only true of the code and tests it was obtained with."""
    if not (work / "mutants").is_dir():
        raise SystemExit(f"error: nothing to resume in {work} (no mutants/ folder): run without --resume")
    text = (work / "pyproject.toml").read_text()
    selection = f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
    if selection not in text:
        raise SystemExit(f"error: {work} was run with other tests than {tests}: run without --resume")
    for name in [module, *tests]:
        mine, theirs = ROOT / name, work / name
        if not theirs.is_file() or mine.read_bytes() != theirs.read_bytes():
            raise SystemExit(f"error: {name} changed since the run in {work} began: its verdicts would not match "
                             "the code; run without --resume")


def count(work: Path) -> dict:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    statuses: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+):\s*(\S.*)$", line)
        if match:
            statuses.setdefault(match.group(2).strip(), []).append(match.group(1))
    killed, survived = len(statuses.get("killed", [])), len(statuses.get("survived", []))
    return {"counts": {k: len(v) for k, v in statuses.items()},
            "score": killed / (killed + survived) if killed + survived else float("nan"),
            "survived": statuses.get("survived", [])}


def write_report(dest: Path = ROOT / "docs" / "testing.md") -> Path:
    """docs/testing.md from every ``mutants-work/*/score.json`` (the tool's own counts), one row per module."""
    rows = []
    for score in sorted((ROOT / "mutants-work").glob("*/score.json")):
        r = json.loads(score.read_text())
        c = r["counts"]
        rows.append(f"| `{r['module']}` | {c.get('killed', 0)} | {c.get('survived', 0)} | {c.get('timeout', 0)} | "
                    f"{c.get('no tests', 0)} | {sum(c.values())} | {r['score']:.1%} | {' '.join(r['tests'])} |")
    header = ("# Mutation testing\n\nNeeds `pip install mutmut` (3.8; not in requirements.txt, CI does not run it). "
              "Command per module:\n`python tests/mutation.py MODULE.py TEST_FILE...`, then `python tests/mutation.py "
              "--report` to rewrite this table.\n\nGenerated by `python tests/mutation.py --report` from the scores "
              "that `python tests/mutation.py MODULE TESTS...` (mutmut) wrote; not part of CI. Score = killed / "
              "(killed + survived); mutants not yet run, timed out or without a covering test are counted "
              "separately.\n\n")
    table = ("| module | killed | survived | timeout | no tests | mutants seen | score | tests |\n"
             "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    notes = ""  # the hand-written reading of the survivors, kept across rewrites
    if dest.is_file() and "\n## " in dest.read_text():
        notes = "\n## " + dest.read_text().split("\n## ", 1)[1]
    text = header + table + notes
    dest.write_text(text)
    return dest


def main(argv: list[str]) -> int:
    if argv == ["--report"]:
        print(f"wrote {write_report()}")
        return 0
    resume = argv[:1] == ["--resume"]
    argv = argv[1:] if resume else argv
    if not argv or not argv[0].endswith(".py"):
        print(__doc__)
        return 2
    module, tests = argv[0], argv[1:] or ["tests"]
    if not (ROOT / module).is_file():
        print(f"error: {module} is not a file of this repository", file=sys.stderr)
        return 2
    if resume:
        work = ROOT / "mutants-work" / module.replace("/", "_").removesuffix(".py")
        check_resumable(work, module, tests)
    else:
        work = scratch_copy(module)
        narrow_config(work, module, tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(["mutmut", "run", "--max-children", "2"], cwd=work, env=env, check=False)
    report = {"module": module, "tests": tests, **count(work)}
    (work / "score.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "survived"}, indent=2))
    print("survived:", " ".join(report["survived"]) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
