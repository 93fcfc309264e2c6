"""Mutation testing of one module with mutmut, in a scratch copy of the repository (not part of CI: too slow).

    python tests/mutation.py theory/calibration.py tests/test_theory_validation.py tests/test_method_properties.py
    python tests/mutation.py simulations/unlearning.py tests/test_unlearning.py tests/test_method_properties.py
    python tests/mutation.py --resume theory/calibration.py tests/...   # go on with an interrupted run
    python tests/mutation.py --score theory/calibration.py tests/...   # counts of an interrupted run so far
    python tests/mutation.py --survivors simulations/optim.py   # each survivor's diff and verdict
    python tests/mutation.py --recheck simulations/optim.py     # survivors again, with tests added since the run
    python tests/mutation.py --verify simulations/optim.py [N]  # re-run N (40) sampled kills: do they reproduce?
    python tests/mutation.py --equivalent simulations/optim.py NAME... --why "reason"   # record a verdict
    python tests/mutation.py --gpu-only MODULE NAME... --why "reason"   # explained, still counted as surviving
    python tests/mutation.py --prune simulations/optim.py   # drop verdicts that match no survivor any more
    python tests/mutation.py --report    # docs/testing.md from every module's score.json

``MUTATION_TIMEOUT_MULTIPLIER`` (default 15, mutmut's own) scales each mutant's wall-clock limit: raise it on a busy
machine, where mutants otherwise time out (counted apart from killed and survived).

Copies the tracked and the new, not ignored files into ``mutants-work/<module>/`` (git-ignored), narrows
``[tool.mutmut]`` there to the one module (``only_mutate``) and the named tests
(``pytest_add_cli_args_test_selection``), runs ``mutmut run``, and prints and writes
``mutants-work/<module>/score.json``: killed, survived, timeouts, suspicious, skipped, no tests, the score
killed / (killed + survived), and each survivor's diff. Each survivor is then judged: a test still to write, or
equivalent — recorded in ``tests/mutation_equivalent.json`` with the mutated line and the reason, and counted out
of the score over non-equivalent mutants by ``--report`` only while that line is still what the mutant puts in.
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


def work_dir(module: str) -> Path:
    """The module's scratch copy: ``mutants-work/<module with / as _, without .py>``."""
    return ROOT / "mutants-work" / module.replace("/", "_").removesuffix(".py")


def finished_run(module: str) -> tuple[Path, dict] | None:
    """The scratch copy and ``score.json`` of the module's last finished run; None (with the error printed) if
    there is none."""
    work = work_dir(module)
    if not (work / "score.json").is_file():
        print(f"error: no finished run of {module} in {work}", file=sys.stderr)
        return None
    return work, json.loads((work / "score.json").read_text())


def scratch_copy(module: str) -> Path:
    work = work_dir(module)
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


def recheck(module: str) -> int:
    """Run the survivors of the module's last run again against the current versions of its test files.

    For tests written after a run to kill its survivors: the module must be unchanged, the test selection is the
    same list of files, and mutmut collects the new tests' coverage and re-runs only the named survivors. The kills
    of the run stand as they were obtained (valid as long as tests were only added, which is how survivors are
    killed here); ``score.json`` records which files were updated, and ``--report`` says so in the row."""
    run = finished_run(module)
    if run is None:
        return 2
    work, old = run
    if (ROOT / module).read_bytes() != (work / module).read_bytes():
        print(f"error: {module} changed since its run: run it again in full", file=sys.stderr)
        return 2
    updated = [t for t in old["tests"] if (ROOT / t).read_bytes() != (work / t).read_bytes()]
    # the helpers the tests import (tests/_helpers.py, conftest.py, ...) go along, or a new test would fail on import
    support = [f"tests/{p.name}" for p in sorted((ROOT / "tests").glob("*.py"))
               if f"tests/{p.name}" not in old["tests"] and not p.name.startswith(("test_", "mutation"))
               and not ((work / "tests" / p.name).is_file()
                        and p.read_bytes() == (work / "tests" / p.name).read_bytes())]
    for t in updated + support:
        shutil.copy2(ROOT / t, work / t)
    if not old["survived"]:
        print("no survivors to re-check")
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(["mutmut", "run", "--max-children", "2", *old["survived"]], cwd=work, env=env, check=False)
    report = write_score(work, module, old["tests"], **{k: old[k] for k in ("verified",) if k in old},
                         rechecked_with=sorted(set(old.get("rechecked_with", [])) | set(updated) | set(support)))
    print(json.dumps({k: v for k, v in report.items() if k not in ("survived", "diffs")}, indent=2))
    print("survived:", " ".join(report["survived"]) or "none")
    return 0


def verify(module: str, sample: int = 40, seed: int = 0) -> int:
    """Run a seeded random sample of the kills of the module's last run again, each in its own mutmut run.

    A kill is only worth counting if it reproduces (a test that fails for another reason — a flaky test, a
    worker that died — also reads as a kill). Kills that do not reproduce become survivors in the counts (mutmut
    keeps the latest verdict), so the score can only go down; ``score.json`` records the sample and the outcome,
    and ``--report`` shows it in the row."""
    run = finished_run(module)
    if run is None:
        return 2
    work, old = run
    if not unchanged_since_run(work, old):
        print(f"error: {module} or its tests changed since its run: its kills are not those of the current code; "
              "run it again (or --recheck after adding tests) first", file=sys.stderr)
        return 2
    import random

    killed = sorted(mutant_statuses(work).get("killed", []))
    picked = sorted(random.Random(seed).sample(killed, min(sample, len(killed))))
    if not picked:
        print("no kills to verify")
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(["mutmut", "run", "--max-children", "2", *picked], cwd=work, env=env, check=False)
    now = {n for n in mutant_statuses(work).get("killed", [])}
    lost = [n for n in picked if n not in now]
    extra = {k: old[k] for k in ("rechecked_with",) if k in old}
    report = write_score(work, module, old["tests"], **extra,
                         verified={"sampled": len(picked), "seed": seed, "reproduced": len(picked) - len(lost),
                                   "not_reproduced": lost})
    print(f"{len(picked) - len(lost)} of {len(picked)} sampled kills reproduced"
          + (": not reproduced (now counted as survivors): " + " ".join(lost) if lost else ""))
    print(json.dumps(report["counts"]))
    return 0


def write_score(work: Path, module: str, tests: list[str], **extra) -> dict:
    """``score.json`` of the scratch copy from mutmut's current results: counts, survivors and their diffs."""
    report = {"module": module, "tests": tests, **count(work), **extra}
    report["diffs"] = survivor_diffs(work, report["survived"])
    (work / "score.json").write_text(json.dumps(report, indent=2))
    return report


def mutant_statuses(work: Path) -> dict[str, list[str]]:
    """mutmut's current status of every mutant of the scratch copy: status → mutant names."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    statuses: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S+):\s*(\S.*)$", line)
        if match:
            statuses.setdefault(match.group(2).strip(), []).append(match.group(1))
    return statuses


def count(work: Path) -> dict:
    statuses = mutant_statuses(work)
    killed, survived = len(statuses.get("killed", [])), len(statuses.get("survived", []))
    return {"counts": {k: len(v) for k, v in statuses.items()},
            "score": killed / (killed + survived) if killed + survived else float("nan"),
            "survived": statuses.get("survived", [])}


EQUIVALENT = ROOT / "tests" / "mutation_equivalent.json"


def mutated_lines(diff: str) -> str:
    """The lines a mutant puts in (``+`` lines of its diff, stripped): what an equivalence verdict is about."""
    return "\n".join(line[1:].strip() for line in diff.splitlines()
                     if line.startswith("+") and not line.startswith("+++"))


def survivor_diffs(work: Path, names: list[str]) -> dict[str, str]:
    """``mutmut show NAME`` for each surviving mutant, run in the scratch copy that holds them."""
    return {name: subprocess.run(["mutmut", "show", name], cwd=work, capture_output=True, text=True).stdout
            for name in names}


def classify(report: dict, registry: dict) -> tuple[list[str], list[str], list[str]]:
    """Survivors judged equivalent, survivors still open, and stale verdicts.

    A verdict in ``tests/mutation_equivalent.json`` counts only for a mutant that survived this run and whose mutated
    lines are still the ones the verdict was written about (mutmut numbers mutants per function, so a changed
    function can give a name to another mutant). A verdict that matches no survivor is stale: listed, not counted."""
    verdicts = registry.get(report["module"], {})
    diffs = report.get("diffs", {})
    equivalent, open_, matched = [], [], set()
    for name in report["survived"]:
        v = verdicts.get(name)
        if v and name in diffs and mutated_lines(diffs[name]) == v["mutated"]:
            matched.add(name)
            if v.get("kind", "equivalent") == "equivalent":
                equivalent.append(name)
                continue
        open_.append(name)  # no verdict, or one saying why no CPU test can see it: still counted against the score
    stale = sorted(set(verdicts) - matched)
    return equivalent, open_, stale


def unchanged_since_run(work: Path, report: dict) -> bool:
    """The module and its tests are byte for byte those the run used (its scratch copy keeps them)."""
    return all((work / n).is_file() and (ROOT / n).is_file() and (work / n).read_bytes() == (ROOT / n).read_bytes()
               for n in [report["module"], *report["tests"]])


def write_report(dest: Path = ROOT / "docs" / "testing.md") -> Path:
    """docs/testing.md from every ``mutants-work/*/score.json`` (the tool's own counts), one row per module, and
    ``tests/mutation_equivalent.json`` (the survivors judged equivalent, each with its reason)."""
    registry = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    rows, lists = [], []
    for score in sorted((ROOT / "mutants-work").glob("*/score.json")):
        work = score.parent
        r = json.loads(score.read_text())
        if "diffs" not in r:  # a score written before diffs were kept: read them from the scratch copy
            r["diffs"] = survivor_diffs(work, r["survived"])
            score.write_text(json.dumps(r, indent=2))
        c = r["counts"]
        killed, survived = c.get("killed", 0), c.get("survived", 0)
        equivalent, open_, stale = classify(r, registry)
        non_eq = killed / (killed + len(open_)) if killed + len(open_) else float("nan")
        current = "yes" if unchanged_since_run(work, r) else "**no: re-run**"
        if current == "yes" and r.get("rechecked_with"):
            current = "yes (survivors re-checked with later " + ", ".join(r["rechecked_with"]) + ")"
        v = r.get("verified")
        verified = f"{v['reproduced']}/{v['sampled']}" if v else "—"
        rows.append(f"| `{r['module']}` | {killed} | {survived} | {len(equivalent)} | {c.get('timeout', 0)} | "
                    f"{c.get('no tests', 0)} | {c.get('not checked', 0)} | {sum(c.values())} | {r['score']:.1%} | "
                    f"**{non_eq:.1%}** | {verified} | {current} | {' '.join(r['tests'])} |")
        verdicts = registry.get(r["module"], {})
        items = [f"- `{n}` — equivalent: {verdicts[n]['why']}" for n in equivalent]
        items += [f"- `{n}` — **open, {verdicts[n]['kind']}**: {verdicts[n]['why']}" if n in verdicts
                  and verdicts[n].get("kind", "equivalent") != "equivalent" and n not in stale
                  else f"- `{n}` — **open**: no verdict (a test to write, or a reason to record)" for n in open_]
        items += [f"- `{n}` — stale verdict: not a survivor of this run, or its mutated line changed" for n in stale]
        if not current.startswith("yes"):
            items = ["- the module or its tests changed since this run: its survivors are not listed until it is "
                     "run again"]
        if items:
            lists.append(f"`{r['module']}`:\n" + "\n".join(items))
    header = ("# Mutation testing\n\nNeeds `pip install mutmut` (3.8; not in requirements.txt, CI does not run it). "
              "Command per module:\n`python tests/mutation.py MODULE.py TEST_FILE...` (`--resume` goes on with an "
              "interrupted run), then `python tests/mutation.py --report` to rewrite this table.\n\nGenerated by "
              "`python tests/mutation.py --report` from the counts that mutmut wrote for each module's last run "
              "(`mutants-work/<module>/score.json`) and the verdicts in `tests/mutation_equivalent.json`; not part "
              "of CI. Raw score = killed / (killed + survived). Score over non-equivalent mutants = killed / (killed "
              "+ survivors without an equivalence verdict); a verdict counts only while the survivor's mutated line "
              "is the one it was written about. Timeouts, mutants without a covering test and mutants not yet run "
              "are counted apart. \"Code unchanged\" says whether the module and its tests are still the bytes the "
              "run used; `--recheck` re-runs a run's survivors against tests added since (the run's kills stand), "
              "and the row names the files it used. \"Kills re-verified\" is `--verify`'s outcome: of a seeded "
              "random sample of the run's kills, how many were killed again when re-run (a kill that does not "
              "reproduce is counted as a survivor from then on).\n\n")
    table = ("| module | killed | survived | equivalent | timeout | no tests | not run | mutants | raw score | "
             "score over non-equivalent | kills re-verified | code unchanged | tests |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    survivors = ("\nEvery survivor of the runs above, with its verdict (`python tests/mutation.py --survivors "
                 "MODULE` prints their diffs):\n\n" + "\n\n".join(lists) + "\n") if lists else ""
    notes = ""  # the hand-written reading of the survivors, kept across rewrites
    if dest.is_file() and "\n## " in dest.read_text():
        notes = "\n## " + dest.read_text().split("\n## ", 1)[1]
    dest.write_text(header + table + survivors + notes)
    return dest


def write_registry(registry: dict) -> None:
    """``tests/mutation_equivalent.json``, modules and mutants sorted, replaced in one step (never half-written)."""
    registry = {m: dict(sorted(v.items())) for m, v in sorted(registry.items())}
    tmp = EQUIVALENT.with_suffix(".tmp")
    tmp.write_text(json.dumps(registry, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(EQUIVALENT)


def prune(module: str) -> int:
    """Drop the module's verdicts that match no survivor of its last run (killed since, or renumbered)."""
    run = finished_run(module)
    if run is None:
        return 2
    work, r = run
    if "diffs" not in r:
        r["diffs"] = survivor_diffs(work, r["survived"])
    registry = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    _, _, stale = classify(r, registry)
    if not stale:
        print(f"no stale verdicts for {module}")
        return 0
    kept = {n: v for n, v in registry[module].items() if n not in stale}
    registry = {m: v for m, v in registry.items() if m != module} | ({module: kept} if kept else {})
    write_registry(registry)
    print(f"dropped {len(stale)} stale verdict(s) of {module}: " + " ".join(stale))
    return 0


def record_equivalent(module: str, names: list[str], why: str, kind: str = "equivalent") -> int:
    """Record survivors of the module's last run as equivalent, with the reason and the lines they put in."""
    run = finished_run(module)
    if run is None:
        return 2
    work, r = run
    diffs = r.get("diffs") or survivor_diffs(work, r["survived"])
    unknown = [n for n in names if n not in r["survived"]]
    if unknown or not why.strip():
        print(f"error: {'not survivors of the last run: ' + ', '.join(unknown) if unknown else 'no reason given'}; "
              "nothing recorded", file=sys.stderr)
        return 2
    registry = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    for n in names:
        entry = {"mutated": mutated_lines(diffs[n]), "why": why.strip()}
        if kind != "equivalent":  # e.g. "GPU-only": explained, but not counted out of the score
            entry["kind"] = kind
        registry.setdefault(module, {})[n] = entry
    write_registry(registry)
    print(f"recorded {len(names)} verdict(s) for {module}")
    return 0


def show_survivors(module: str) -> int:
    """Print each survivor of the module's last run with its verdict and diff, for reading."""
    run = finished_run(module)
    if run is None:
        return 2
    work, r = run
    r.setdefault("diffs", survivor_diffs(work, r["survived"]))
    registry = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    equivalent, open_, stale = classify(r, registry)
    for name in r["survived"]:
        print(f"=== {name}: {'equivalent' if name in equivalent else 'OPEN'}")
        print(r["diffs"][name])
    for name in stale:
        print(f"=== stale verdict: {name}")
    print(f"{len(equivalent)} equivalent, {len(open_)} open, {len(stale)} stale")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--report"]:
        print(f"wrote {write_report()}")
        return 0
    if len(argv) >= 2 and argv[0] == "--score":  # the counts of an interrupted run, so far (--resume goes on)
        module, tests = argv[1], argv[2:]
        work = work_dir(module)
        check_resumable(work, module, tests)
        print(json.dumps(write_score(work, module, tests)["counts"]))
        return 0
    if len(argv) == 2 and argv[0] == "--recheck":
        return recheck(argv[1])
    if len(argv) in (2, 3) and argv[0] == "--verify":
        if len(argv) == 3 and not argv[2].isdigit():
            print(f"error: the sample size must be a whole number, not {argv[2]!r}", file=sys.stderr)
            return 2
        return verify(argv[1], int(argv[2]) if len(argv) == 3 else 40)
    if len(argv) == 2 and argv[0] == "--prune":
        return prune(argv[1])
    if len(argv) == 2 and argv[0] == "--survivors":
        return show_survivors(argv[1])
    if len(argv) >= 4 and argv[0] in ("--equivalent", "--gpu-only") and "--why" in argv:
        at = argv.index("--why")
        return record_equivalent(argv[1], argv[2:at], " ".join(argv[at + 1:]),
                                 "equivalent" if argv[0] == "--equivalent" else "GPU-only")
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
        work = work_dir(module)
        check_resumable(work, module, tests)
    else:
        work = scratch_copy(module)
        narrow_config(work, module, tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(["mutmut", "run", "--max-children", "2"], cwd=work, env=env, check=False)
    report = write_score(work, module, tests)
    print(json.dumps({k: v for k, v in report.items() if k != "survived"}, indent=2))
    print("survived:", " ".join(report["survived"]) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
