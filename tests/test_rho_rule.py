"""``rho_rule``: the SAM radius as given (``fixed``) or on (C)'s scale ``rho m sqrt(B) / (P sigma_p sqrt d)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import tiny

from simulations import SimConfig, simulate
from simulations.config import ConfigError, parse_assignments
from simulations.engine import sam_radius


def _chen(c: float, cfg: SimConfig) -> float:
    batch = cfg.n if cfg.batch_size == 0 or cfg.batch_size >= cfg.n else cfg.batch_size
    return c * cfg.m * math.sqrt(batch) / (cfg.P * cfg.sigma_p * math.sqrt(cfg.d))


def _same(a, b) -> None:
    assert a.metrics.keys() == b.metrics.keys()
    for k, v in a.metrics.items():
        if k == "wall_s":
            continue
        assert v == b.metrics[k] or (v != v and b.metrics[k] != b.metrics[k]), k
    for k, v in a.trajectory.items():
        np.testing.assert_array_equal(v, b.trajectory[k], err_msg=k)


CASES = [
    dict(d=30, batch_size=0),       # full batch: B = n
    dict(d=240, batch_size=0),
    dict(d=30, batch_size=4),       # stochastic SAM: B = batch_size
    dict(d=240, batch_size=4),
]


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_chen_rule_equals_fixed_run_with_the_scaled_radius(backend):
    c = 0.7
    chen = [tiny(backend=backend, optimizer="sam", rho=c, rho_rule="chen", unlearn_method="neggrad",
                 unlearn_optimizer="sam", **case) for case in CASES]
    fixed = [cfg.replace(rho_rule="fixed", rho=_chen(c, cfg)) for cfg in chen]
    radii = [f.rho for f in fixed]
    assert len(set(radii)) == 4 and all(r != c for r in radii)  # d and B both enter the radius
    assert [sam_radius(cfg) for cfg in chen] == radii
    ran_chen, ran_fixed = simulate(chen), simulate(fixed)  # the gram configs of different d share one batch
    for a, b in zip(ran_chen, ran_fixed):
        _same(a, b)
    # the rule acts (a fixed run with rho = c differs) -- on training and on the unlearning SAM
    plain = simulate([cfg.replace(rho_rule="fixed") for cfg in chen])
    for a, b in zip(ran_chen, plain):
        assert a.metrics["pretrain_train_loss"] != b.metrics["pretrain_train_loss"]
        assert a.metrics["train_loss"] != b.metrics["train_loss"]


def test_chen_rule_reaches_the_unlearning_optimizer_alone():
    base = tiny(optimizer="gd", unlearn_optimizer="sam", unlearn_method="neggrad", rho=0.5, rho_rule="chen")
    a = simulate([base])[0]
    b = simulate([base.replace(rho_rule="fixed", rho=_chen(0.5, base))])[0]
    _same(a, b)
    c = simulate([base.replace(rho_rule="fixed")])[0]
    assert a.metrics["pretrain_train_loss"] == c.metrics["pretrain_train_loss"]  # GD pretraining: no radius
    assert a.metrics["train_loss"] != c.metrics["train_loss"]


def test_fixed_is_the_default_and_leaves_rho_alone():
    cfg = tiny(optimizer="sam", rho=0.3)
    assert cfg.rho_rule == "fixed" and sam_radius(cfg) == 0.3
    assert tiny(optimizer="sam", rho=0.0, rho_rule="chen").replace().rho_rule == "chen"
    assert sam_radius(tiny(optimizer="sam", rho=0.0, rho_rule="chen")) == 0.0


def test_rho_rule_validation_and_parsing():
    with pytest.raises(ConfigError, match="rho_rule"):
        tiny(rho_rule="kou")
    with pytest.raises(ConfigError, match="rho_rule=chen"):
        tiny(backend="weights", optimizer="sam", rho=0.1, sam_adaptive=True, rho_rule="chen")
    with pytest.raises(ConfigError, match="rho="):
        tiny(rho=-1.0, rho_rule="chen")
    assert parse_assignments(["rho_rule=chen"]) == {"rho_rule": "chen"}
    assert tiny(rho_rule="chen").hash != tiny().hash


def test_sam_steps_runs_sam_early_then_the_base_step():
    """sam_steps = k: the first k pretraining steps are SAM steps (the trajectory equals full SAM's up to step k),
    the later ones plain GD steps (after k it leaves full SAM's trajectory); k = steps is full SAM exactly."""
    import numpy as np
    import pytest

    from simulations.config import ConfigError, SimConfig
    from simulations.engine import simulate

    base = SimConfig(d=300, signal_strength=1.5, optimizer="sam", rho=0.3, lr=0.5, steps=20, n_test=200,
                     log_points=21)
    early, full, last = simulate([base.replace(sam_steps=8), base, base.replace(sam_steps=20)])
    steps = early.trajectory["step"]
    upto = steps <= 8  # the state logged at step t is the one after t steps
    for key in ("train_loss", "signal_coef_max", "noise_coef_max"):
        np.testing.assert_array_equal(early.trajectory[key][upto], full.trajectory[key][upto])
        assert not np.allclose(early.trajectory[key][~upto], full.trajectory[key][~upto]), key
        np.testing.assert_array_equal(last.trajectory[key], full.trajectory[key])
    with pytest.raises(ConfigError, match="sam_steps=30 exceeds steps=20"):
        base.replace(sam_steps=30)
    with pytest.raises(ConfigError, match="sam_steps"):
        base.replace(sam_steps=-1)
