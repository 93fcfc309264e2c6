"""theory/: every symbolic check passes, can fail on a wrong statement, and the CLI and predictions agree with sympy."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from theory import predictions, statements
from theory import symbols as sym
from theory.__main__ import RECONSTRUCTION_LABEL, main
from theory.checks import CHECKS, run_checks

ROOT = Path(__file__).resolve().parents[1]


def test_at_least_twelve_checks():
    assert len(CHECKS) >= 12


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_passes(name):
    result = CHECKS[name]()
    assert result.passed, "\n".join(result.steps)
    assert result.name == name and result.steps and result.counterexample is None
    assert any(step.startswith("[ok]") for step in result.steps)
    assert result.tag in statements.TAGS


def test_statement_tags_and_reconstruction_flags():
    built = statements.all_statements()
    assert {s.name for s in built} == set(statements.STATEMENTS)
    for statement in built:
        assert statement.tag in statements.TAGS and statement.relations and statement.source
        if statement.tag in ("med", "lo"):
            assert statement.is_reconstruction, statement.name
    assert statements.get("chen_sam").is_reconstruction
    assert statements.get("alpha_threshold").is_reconstruction
    assert not statements.get("chen_sgd").is_reconstruction
    lemma_3_4 = statements.get("unlearning_lemma_3_4")  # the difference is the statement, the ratio a read-out
    assert lemma_3_4.is_reconstruction and {"signal_surplus", "rate_ratio_readout"} <= set(lemma_3_4.relations)
    with pytest.raises(KeyError, match="unknown statement"):
        statements.get("no_such_theorem")


def _replace_relation(name, key, transform):
    """A builder of statement ``name`` whose relation ``key`` is ``transform(old)``."""
    original = statements.STATEMENTS[name]

    def broken():
        statement = original()
        relations = dict(statement.relations)
        relations[key] = transform(relations[key])
        return dataclasses.replace(statement, relations=relations)

    return broken


BREAKAGES = {
    "SGD threshold grows in n": ("chen_sgd", "threshold", lambda t: t * sym.n ** sp.Rational(1, 2),
                                 ["sgd_threshold_decreases_in_n", "sgd_threshold_log_slopes",
                                  "sgd_boundary_solved_forms"]),
    "(K) bound grows in the SNR": ("kou_bounds", "benign_error_bound", lambda b: sym.p + 1 / (b - sym.p),
                                   ["kou_bound_tends_to_p", "kou_bound_monotone", "kou_log_excess_linear"]),
    "signal surplus cubic": ("unlearning_lemma_3_4", "signal_surplus", lambda r: r * sym.phi,
                             ["lemma_3_4_surplus_is_a_difference", "surplus_matches_alpha_gap"]),
    "(K) benign condition reversed": ("kou_bounds", "benign_condition", lambda c: sp.Le(c.lhs, c.rhs),
                                      ["kou_bounds_directions", "kou_constants_consistent"]),
    "retain threshold below full": ("unlearning_thm_3_2", "threshold_retain",
                                    lambda t: t * sym.n_R ** sp.Rational(1, 2),
                                    ["thm_3_2_retain_threshold_above_full"]),
}


@pytest.mark.parametrize("label", list(BREAKAGES))
def test_wrong_statement_fails_its_checks(label, monkeypatch, capsys):
    name, key, transform, expected_failures = BREAKAGES[label]
    monkeypatch.setitem(statements.STATEMENTS, name, _replace_relation(name, key, transform))
    for check_name in expected_failures:
        result = CHECKS[check_name]()
        assert not result.passed, (check_name, result.steps)
        assert any(step.startswith("[FAILED]") for step in result.steps)
    assert main(["check"]) == 1
    assert "FAILED: " in capsys.readouterr().out


def test_broken_monotonicity_has_a_counterexample(monkeypatch):
    name, key, transform, _ = BREAKAGES["SGD threshold grows in n"]
    monkeypatch.setitem(statements.STATEMENTS, name, _replace_relation(name, key, transform))
    result = CHECKS["sgd_threshold_decreases_in_n"]()
    assert not result.passed and "not negative" in result.counterexample


def test_cli_json_output_and_exit_code():
    done = subprocess.run([sys.executable, "-m", "theory", "check", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)
    assert len(items) == len(CHECKS)
    for item in items:
        assert {"name", "statement", "passed", "tag", "steps"} <= set(item)
        assert item["passed"] is True and isinstance(item["steps"], list)


def _blocks(text):
    return [block for block in text.split("\n\n") if block.strip()]


def test_report_labels_reconstructions(capsys):
    assert main(["check"]) == 0
    report = capsys.readouterr().out
    results = {r.name: r for r in run_checks()}
    for block in _blocks(report)[1:-1]:
        result = results[block.split()[1]]
        assert ("PASS" if result.passed else "FAIL") in block.splitlines()[0]
        assert (RECONSTRUCTION_LABEL in block) == result.reconstruction, block
    assert any(r.tag == "med" for r in results.values())
    assert all(r.reconstruction for r in results.values() if r.tag in ("med", "lo"))

    assert main(["statements"]) == 0
    listing = capsys.readouterr().out
    for block, statement in zip(_blocks(listing), statements.all_statements(), strict=True):
        assert block.startswith(statement.name) and f"[{statement.tag}]" in block
        assert (RECONSTRUCTION_LABEL in block) == statement.is_reconstruction, block


def test_statements_json(capsys):
    assert main(["statements", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in items] == list(statements.STATEMENTS)
    assert all(i["relations"] and "tag" in i for i in items)


def _random_values(rng, names):
    values = {}
    for name in names:
        low, high, log = sym.RANGES.get(name, sym.DEFAULT_RANGE)
        values[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))) if log else rng.uniform(low, high))
    return values


PREDICTED = {  # function, statement, relation (or a function of the statement), sympy symbols in argument order
    "sgd_boundary": (predictions.sgd_boundary, "chen_sgd", "threshold",
                     (sym.d, sym.n, sym.P, sym.sigma_p, sym.C1)),
    "sam_boundary": (predictions.sam_boundary, "chen_sam", lambda s: s.relations["benign_condition"].rhs,
                     (sym.C_sam,)),
    "cao_boundary": (predictions.cao_boundary, "cao_benign", "threshold", (sym.d, sym.n, sym.q, sym.sigma_p, sym.C1)),
    "neggrad_sgd_boundary": (predictions.neggrad_sgd_boundary, "unlearning_thm_3_2", "threshold",
                             (sym.d, sym.n, sym.P, sym.sigma_p, sym.C1_U)),
    "kou_benign_error": (predictions.kou_benign_error, "kou_bounds", "benign_error_bound",
                         (sym.n, sym.d, sym.mu, sym.p, sym.sigma_p, sym.C2)),
}


@pytest.mark.parametrize("name", list(PREDICTED))
def test_lambdified_predictions_match_sympy(name):
    function, statement_name, relation, symbols = PREDICTED[name]
    statement = statements.get(statement_name)
    expr = relation(statement) if callable(relation) else statement.relations[relation]
    rng = np.random.default_rng(7)
    points = [_random_values(rng, [str(s) for s in symbols]) for _ in range(20)]
    columns = [np.array([point[str(s)] for point in points]) for s in symbols]
    vectorised = function(*columns)
    assert vectorised.shape == (20,)
    for i, point in enumerate(points):
        exact = float(expr.subs({s: point[str(s)] for s in symbols}).evalf(30))
        assert vectorised[i] == pytest.approx(exact, rel=1e-10, abs=1e-300)
        assert float(function(*(point[str(s)] for s in symbols))) == pytest.approx(exact, rel=1e-10)


def test_prediction_shapes_on_log_axes():
    d = np.logspace(2, 6, 9)
    boundary = predictions.sgd_boundary(d, 20)
    np.testing.assert_allclose(np.diff(np.log(boundary)) / np.diff(np.log(d)), 0.25)
    np.testing.assert_allclose(predictions.sam_boundary(2.0), 2.0)
    assert predictions.kou_benign_error(1e6, 100.0, 3.0, 0.1) == pytest.approx(0.1)
