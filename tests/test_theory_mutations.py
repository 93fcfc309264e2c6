"""theory.mutations: every deliberately wrong statement fails a check, and the harness itself can fail."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from theory import mutations, statements
from theory.__main__ import main
from theory.checks import CHECKS


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_run():
    """One run of ``python -m theory mutations --json`` for the whole module (it runs the checks ~40 times)."""
    code, out, _ = _cli(["mutations", "--json"])
    return code, json.loads(out)


def test_every_mutation_is_caught(cli_run):
    code, items = cli_run
    assert code == 0
    assert [i["mutation"] for i in items] == [m.name for m in mutations.MUTATIONS]
    assert len(items) >= 20
    for item in items:
        assert item["changed"], f"{item['mutation']} does not change its statement"
        assert item["caught"] and item["failed_checks"], item
        assert set(item["failed_checks"]) <= set(CHECKS)


REQUIRED = {  # the kinds of wrong statement the issue lists, each must be among the mutations
    "cao_benign_reversed", "cao_harmful_reversed", "kou_benign_reversed", "kou_harmful_reversed",
    "chen_sgd_benign_reversed", "chen_sgd_harmful_reversed", "chen_sam_benign_reversed", "thm_3_2_benign_reversed",
    "thm_3_3_benign_reversed", "chen_sgd_threshold_square_root", "kou_exponent_mu_squared", "cao_threshold_q_to_2",
    "thm_3_3_grows_with_d", "alpha_ordering_reversed", "sharp_minmax_constant_reversed",
    "sharp_minmax_ordering_reversed", "lemma_3_1_perturbation_signs_swapped", "lemma_3_1_sam_denoises_forget",
    "lemma_3_1_retain_denoised_negated", "surplus_as_ratio", "kou_bound_tends_to_2p", "kou_harmful_excess_negative",
}


def test_required_mutations_present(cli_run):
    _, items = cli_run
    assert REQUIRED <= {i["mutation"] for i in items}


def test_identity_is_not_caught_and_originals_pass(monkeypatch):
    """The harness can fail: a 'mutation' that changes nothing is reported as not caught, with exit status 1; the
    unmutated statements pass every check."""
    monkeypatch.setattr(mutations, "MUTATIONS", [mutations.IDENTITY])
    code, out, err = _cli(["mutations", "--json"])
    assert code == 1
    (item,) = json.loads(out)
    assert item["mutation"] == "identity" and not item["caught"] and not item["changed"]
    assert item["failed_checks"] == []
    assert "mutations no check catches: identity" in err and "unmutated statements fail" not in err


def test_table_names_the_blind_spot():
    result = mutations.MutationResult("identity", "chen_sgd", "changes nothing", [], changed=False, checks_run=3)
    table = mutations.format_table(mutations.MutationReport([], [result]))
    assert "0 of 1 mutations caught; NOT caught: identity" in table and "changes nothing" in table
    failing = mutations.format_table(mutations.MutationReport(["sgd_threshold_log_slopes"], []))
    assert "unmutated statements FAIL: sgd_threshold_log_slopes" in failing


def test_check_selection_matches_running_every_check(cli_run):
    """Running only the checks that read the mutated statement finds what running all of them finds."""
    _, items = cli_run
    square_root = next(m for m in mutations.MUTATIONS if m.name == "chen_sgd_threshold_square_root")
    with mutations.applied(square_root):
        failed = [name for name, run in CHECKS.items() if not run().passed]
    assert failed == next(i for i in items if i["mutation"] == square_root.name)["failed_checks"]
    assert statements.STATEMENTS["chen_sgd"] is statements.chen_sgd


def test_registry_restored_even_on_error():
    original = statements.STATEMENTS["chen_sgd"]

    def broken(statement):
        raise RuntimeError("boom")

    mutation = mutations.Mutation("broken", "chen_sgd", "raises when built", broken)
    with pytest.raises(RuntimeError, match="boom"), mutations.applied(mutation):
        statements.get("chen_sgd")
    assert statements.STATEMENTS["chen_sgd"] is original


def test_reads_are_recorded_through_nested_builds():
    with statements.recording_reads() as outer:
        with statements.recording_reads() as inner:
            statements.get("chen_sam")
        statements.get("kou_bounds")
    assert inner == {"chen_sam", "chen_sgd"}  # the SAM window is built on the SGD threshold
    assert outer == {"chen_sam", "chen_sgd", "kou_bounds"}
