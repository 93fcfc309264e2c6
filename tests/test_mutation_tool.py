"""The bookkeeping of tests/mutation.py: what counts as an equivalent survivor, what is stale, what the report says.

The verdicts in tests/mutation_equivalent.json lower the denominator of the score the issue's target is about, so a
verdict must stop counting the moment it no longer describes the mutant it names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("mutation_tool", Path(__file__).with_name("mutation.py"))
mutation = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mutation)

DIFF = """# m.x_f__mutmut_3: survived
--- pkg/m.py
+++ pkg/m.py
@@ -1,3 +1,3 @@
 def f(x):
-    return x > 0
+    return x >= 0
"""


def test_mutated_lines_are_the_added_lines_without_the_file_header():
    assert mutation.mutated_lines(DIFF) == "return x >= 0"
    assert mutation.mutated_lines("+++ a\n+  a = 1\n+b = 2\n-c = 3\n") == "a = 1\nb = 2"


def report(survived, diffs):
    return {"module": "pkg/m.py", "tests": [], "survived": survived, "diffs": diffs}


def test_a_verdict_counts_only_for_a_survivor_whose_mutated_line_it_describes():
    other = DIFF.replace("x >= 0", "x > 1")
    registry = {"pkg/m.py": {"m.x_f__mutmut_3": {"mutated": "return x >= 0", "why": "w"},
                             "m.x_f__mutmut_4": {"mutated": "return x >= 0", "why": "w"},
                             "m.x_f__mutmut_9": {"mutated": "anything", "why": "w"}}}
    r = report(["m.x_f__mutmut_3", "m.x_f__mutmut_4", "m.x_f__mutmut_5"],
               {"m.x_f__mutmut_3": DIFF, "m.x_f__mutmut_4": other, "m.x_f__mutmut_5": DIFF})
    equivalent, open_, stale = mutation.classify(r, registry)
    # _4 has a verdict but now names another mutation (renumbered): open and its verdict stale; _9 was killed
    assert equivalent == ["m.x_f__mutmut_3"]
    assert open_ == ["m.x_f__mutmut_4", "m.x_f__mutmut_5"]
    assert stale == ["m.x_f__mutmut_4", "m.x_f__mutmut_9"]
    # verdicts of another module never count here
    assert mutation.classify(r, {"pkg/other.py": registry["pkg/m.py"]})[0] == []


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "m.py").write_text("def f(x):\n    return x > 0\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_m.py").write_text("# tests\n")
    work = root / "mutants-work" / "pkg_m"
    for name in ("pkg/m.py", "tests/test_m.py"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes((root / name).read_bytes())
    score = {"module": "pkg/m.py", "tests": ["tests/test_m.py"],
             "counts": {"killed": 6, "survived": 2, "not checked": 1}, "score": 0.75,
             "survived": ["m.x_f__mutmut_3", "m.x_f__mutmut_5"],
             "diffs": {"m.x_f__mutmut_3": DIFF, "m.x_f__mutmut_5": DIFF.replace("x >= 0", "x > -1")}}
    (work / "score.json").write_text(json.dumps(score))
    monkeypatch.setattr(mutation, "ROOT", root)
    monkeypatch.setattr(mutation, "EQUIVALENT", root / "tests" / "mutation_equivalent.json")
    return root


def test_record_equivalent_stores_the_mutated_line_and_refuses_non_survivors(workspace, capsys):
    registry = workspace / "tests" / "mutation_equivalent.json"
    assert mutation.record_equivalent("pkg/m.py", ["m.x_f__mutmut_4"], "killed one") == 2
    assert mutation.record_equivalent("pkg/m.py", ["m.x_f__mutmut_3"], "  ") == 2
    assert not registry.exists()  # nothing written by a refused call
    assert mutation.record_equivalent("pkg/m.py", ["m.x_f__mutmut_3"], "x = 0 never reaches f") == 0
    assert json.loads(registry.read_text()) == {
        "pkg/m.py": {"m.x_f__mutmut_3": {"mutated": "return x >= 0", "why": "x = 0 never reaches f"}}}


def test_report_row_counts_equivalents_out_of_the_score_and_flags_changed_code(workspace):
    dest = workspace / "docs" / "testing.md"
    dest.parent.mkdir()
    dest.write_text("old table\n\n## Notes kept\n\ntext\n")
    assert mutation.record_equivalent("pkg/m.py", ["m.x_f__mutmut_3"], "never reached") == 0
    text = mutation.write_report(dest).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `pkg/m.py`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # killed 6, survived 2 of which 1 equivalent, not run 1, 9 mutants; raw 6/8, non-equivalent 6/7
    assert cells[1:10] == ["6", "2", "1", "0", "0", "1", "9", "75.0%", "**85.7%**"]
    assert cells[10] == "—" and cells[11] == "yes"  # no --verify yet
    assert "`m.x_f__mutmut_3` — equivalent: never reached" in text
    assert "`m.x_f__mutmut_5` — **open**" in text
    assert text.endswith("## Notes kept\n\ntext\n") and "old table" not in text
    # the module changes after the run: the row says so
    (workspace / "pkg" / "m.py").write_text("def f(x):\n    return x > 1\n")
    row = next(line for line in mutation.write_report(dest).read_text().splitlines()
               if line.startswith("| `pkg/m.py`"))
    assert "**no: re-run**" in row


def test_resume_refuses_when_the_module_or_its_tests_changed(workspace):
    work = workspace / "mutants-work" / "pkg_m"
    (work / "mutants").mkdir()
    (work / "pyproject.toml").write_text('pytest_add_cli_args_test_selection = ["tests/test_m.py"]\n')
    mutation.check_resumable(work, "pkg/m.py", ["tests/test_m.py"])  # unchanged: allowed
    with pytest.raises(SystemExit, match="other tests"):
        mutation.check_resumable(work, "pkg/m.py", ["tests/test_other.py"])
    (workspace / "tests" / "test_m.py").write_text("# a new test\n")
    with pytest.raises(SystemExit, match="tests/test_m.py changed"):
        mutation.check_resumable(work, "pkg/m.py", ["tests/test_m.py"])


def test_recheck_refuses_a_changed_module_and_the_report_names_the_later_tests(workspace, monkeypatch, capsys):
    work = workspace / "mutants-work" / "pkg_m"
    (workspace / "pkg" / "m.py").write_text("def f(x):\n    return x > 1\n")
    calls = []
    monkeypatch.setattr(mutation.subprocess, "run", lambda *a, **k: calls.append(a))
    assert mutation.recheck("pkg/m.py") == 2 and calls == []  # refused before running anything
    assert "changed since its run" in capsys.readouterr().err
    (workspace / "pkg" / "m.py").write_bytes((work / "pkg" / "m.py").read_bytes())
    r = json.loads((work / "score.json").read_text())
    r["rechecked_with"] = ["tests/test_m.py"]
    (work / "score.json").write_text(json.dumps(r))
    dest = workspace / "testing.md"
    row = next(line for line in mutation.write_report(dest).read_text().splitlines()
               if line.startswith("| `pkg/m.py`"))
    assert "yes (survivors re-checked with later tests/test_m.py)" in row


def test_a_gpu_only_verdict_explains_a_survivor_without_excusing_it():
    registry = {"pkg/m.py": {"m.x_f__mutmut_3": {"mutated": "return x >= 0", "why": "cuda", "kind": "GPU-only"}}}
    r = report(["m.x_f__mutmut_3"], {"m.x_f__mutmut_3": DIFF})
    assert mutation.classify(r, registry) == ([], ["m.x_f__mutmut_3"], [])


def test_verify_reruns_a_seeded_sample_of_kills_and_counts_the_ones_that_do_not_reproduce(workspace, monkeypatch,
                                                                                          capsys):
    work = workspace / "mutants-work" / "pkg_m"
    killed = [f"m.x_f__mutmut_{i}" for i in (1, 2, 4, 6, 7, 8)]
    before = {"killed": killed, "survived": ["m.x_f__mutmut_3", "m.x_f__mutmut_5"], "not checked": ["m.x_f__mutmut_9"]}
    states = [before]
    runs = []

    def fake_run(cmd, **kw):
        runs.append(cmd)
        picked = cmd[4:]
        # the second picked kill does not reproduce: mutmut now records it as survived
        after = {"killed": [n for n in killed if n != picked[1]],
                 "survived": before["survived"] + [picked[1]], "not checked": before["not checked"]}
        states.append(after)

    monkeypatch.setattr(mutation, "mutant_statuses", lambda w: states[-1])
    monkeypatch.setattr(mutation.subprocess, "run", fake_run)
    monkeypatch.setattr(mutation, "survivor_diffs", lambda w, names: {n: DIFF for n in names})
    assert mutation.verify("pkg/m.py", sample=3, seed=7) == 0
    [cmd] = runs
    import random

    expected = sorted(random.Random(7).sample(sorted(killed), 3))
    assert cmd[:4] == ["mutmut", "run", "--max-children", "2"] and cmd[4:] == expected
    r = json.loads((work / "score.json").read_text())
    assert r["verified"] == {"sampled": 3, "seed": 7, "reproduced": 2, "not_reproduced": [expected[1]]}
    assert r["counts"] == {"killed": 5, "survived": 3, "not checked": 1} and r["score"] == 5 / 8
    assert expected[1] in r["survived"]
    assert "2 of 3 sampled kills reproduced" in capsys.readouterr().out
    dest = workspace / "testing.md"
    row = next(line for line in mutation.write_report(dest).read_text().splitlines()
               if line.startswith("| `pkg/m.py`"))
    assert [c.strip() for c in row.strip("|").split("|")][10] == "2/3"
    # a sample larger than the kills takes them all; a changed module is refused before anything runs
    runs.clear()
    states[:] = [before]
    assert mutation.verify("pkg/m.py", sample=100) == 0 and runs[0][4:] == sorted(killed)
    runs.clear()
    (workspace / "pkg" / "m.py").write_text("def f(x):\n    return x > 1\n")
    assert mutation.verify("pkg/m.py") == 2 and runs == []
    assert "changed since its run" in capsys.readouterr().err
    assert mutation.main(["--verify", "pkg/m.py", "ten"]) == 2 and runs == []


def test_recheck_copies_the_updated_tests_and_their_helpers_and_reruns_only_the_survivors(workspace, monkeypatch):
    work = workspace / "mutants-work" / "pkg_m"
    (workspace / "tests" / "test_m.py").write_text("from _helpers import h\n# a new test\n")
    (workspace / "tests" / "_helpers.py").write_text("def h(): ...\n")
    (workspace / "tests" / "test_other.py").write_text("# not in the selection\n")
    runs = []
    monkeypatch.setattr(mutation.subprocess, "run", lambda cmd, **kw: runs.append(cmd))
    monkeypatch.setattr(mutation, "mutant_statuses", lambda w: {"killed": ["a"], "survived": ["m.x_f__mutmut_5"]})
    monkeypatch.setattr(mutation, "survivor_diffs", lambda w, names: {n: DIFF for n in names})
    assert mutation.recheck("pkg/m.py") == 0
    assert runs == [["mutmut", "run", "--max-children", "2", "m.x_f__mutmut_3", "m.x_f__mutmut_5"]]
    assert (work / "tests" / "test_m.py").read_text() == "from _helpers import h\n# a new test\n"
    assert (work / "tests" / "_helpers.py").read_text() == "def h(): ...\n"
    assert not (work / "tests" / "test_other.py").exists()  # other test files are not part of this run
    r = json.loads((work / "score.json").read_text())
    assert r["rechecked_with"] == ["tests/_helpers.py", "tests/test_m.py"]
    assert r["counts"] == {"killed": 1, "survived": 1} and r["survived"] == ["m.x_f__mutmut_5"]


def test_prune_drops_only_the_verdicts_that_match_no_survivor(workspace, capsys):
    registry = workspace / "tests" / "mutation_equivalent.json"
    other = {"n.x_g__mutmut_1": {"mutated": "y", "why": "another module"}}
    registry.write_text(json.dumps({
        "pkg/m.py": {"m.x_f__mutmut_3": {"mutated": "return x >= 0", "why": "kept: still this survivor"},
                     "m.x_f__mutmut_5": {"mutated": "return x >= 0", "why": "renumbered: _5 now puts x > -1"},
                     "m.x_f__mutmut_7": {"mutated": "a", "why": "killed since", "kind": "GPU-only"}},
        "pkg/n.py": other}))
    assert mutation.prune("pkg/m.py") == 0
    assert "dropped 2 stale verdict(s) of pkg/m.py: m.x_f__mutmut_5 m.x_f__mutmut_7" in capsys.readouterr().out
    assert json.loads(registry.read_text()) == {
        "pkg/m.py": {"m.x_f__mutmut_3": {"mutated": "return x >= 0", "why": "kept: still this survivor"}},
        "pkg/n.py": other}
    assert mutation.prune("pkg/m.py") == 0 and "no stale verdicts" in capsys.readouterr().out
    assert mutation.prune("pkg/none.py") == 2
