"""``python -m theory controls``: every verdict rule agrees on a world built to satisfy it and disagrees on one
built to violate it; a rule that cannot fail is caught."""

from __future__ import annotations

import json

import pytest

from theory import controls, validation
from theory.__main__ import main


@pytest.fixture(scope="module")
def report(capsys_module=None):
    return controls.run_controls()


def test_every_rule_passes_its_controls(report):
    assert {r["rule"] for r in report} == set(controls.NEGATIVE)
    failed = [r for r in report if not r["passed"]]
    assert not failed, failed
    assert all(r["positive"] == "agrees" and r["negative"] == "disagrees" for r in report)


def test_cli_json_and_exit_code(capsys):
    assert main(["controls", "--json", "--rule", "4a", "--rule", "9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in out] == ["4a", "9"] and all(r["passed"] for r in out)
    assert main(["controls", "--rule", "nope"]) == 2


def test_a_rule_that_cannot_fail_is_caught(monkeypatch, capsys):
    """A fraction rule that always agrees (the kind of rule the issue found) fails its negative control."""
    monkeypatch.setattr(validation, "fraction_rule", lambda frac, agree=0.8, disagree=0.5: "agrees")
    assert main(["controls", "--json", "--rule", "4a"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out[0]["negative"] == "agrees" and not out[0]["passed"]


def test_the_synthetic_world_has_the_simulators_columns():
    sw = controls.SyntheticSweeps(controls.World())
    heat = sw.get("heat_d")
    for col in ("optimizer", "d", "n", "signal_strength", "seed", "hash", "pretrain_test_error", "test_error",
                "forget_acc", "pre_train_error", "interpolated"):
        assert col in heat.columns, col
    assert heat["hash"].is_unique
