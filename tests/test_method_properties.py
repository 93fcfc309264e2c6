"""Defining properties of the simulator's unlearning methods and read-outs, written so that a wrong set, sign or
scale fails: which samples each step passes over (with which sign and weight), which radius and SAM sign it uses,
what the retrain reference is trained on, that every config field changes the cache key, that test labels are
noisy, and the sign and level of the calibration read-outs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from _helpers import tiny

from simulations.config import FIELD_NAMES, SimConfig
from simulations.engine import GroupRun, simulate
from simulations.unlearning import METHODS
from theory.calibration import bootstrap_statistic, signal_rate


def _spy(cfg):
    """Run ``cfg``'s unlearning method on a GroupRun whose ``step`` records (labels, weights, lr, rho, mix, masks)."""
    run = GroupRun([cfg])
    calls = []
    real = run.step

    def step(state, labels, weights, lr, rho, mix=None, count=True, **masks):
        calls.append(dict(labels=labels.clone(), weights=weights.clone(), lr=lr.clone(), rho=rho.clone(),
                          mix=None if mix is None else mix.clone(), masks=masks))
        return real(state, labels, weights, lr, rho, mix, count, **masks)

    run.step = step
    state = run.backend.init_state()
    METHODS[cfg.unlearn_method].run(run, state)
    return run, calls


BASE = dict(n=12, forget_size=3, unlearn_steps=4, unlearn_lr=0.3, alpha=0.7, rho=0.2, label_flip=0.2)


def test_gradient_ascent_passes_over_the_forget_set_with_negative_weight():
    run, calls = _spy(tiny(unlearn_method="ga", **BASE))
    forget = run.forget[0]
    for c in calls:
        w = c["weights"][0]
        assert (w[~forget] == 0).all() and (w[forget] < 0).all()  # ascent: negative weights on F only
        np.testing.assert_allclose(float(w.sum()), -1.0)


def test_fine_tune_passes_over_the_retain_set_only():
    run, calls = _spy(tiny(unlearn_method="ft", **BASE))
    forget = run.forget[0]
    for c in calls:
        w = c["weights"][0]
        assert (w[forget] == 0).all() and (w[~forget] > 0).all()


def test_neggrad_weights_are_alpha_on_R_and_minus_one_minus_alpha_on_F():
    run, calls = _spy(tiny(unlearn_method="neggrad", **BASE))
    forget = run.forget[0]
    for c in calls:
        w = c["weights"][0].numpy()
        np.testing.assert_allclose(w[~forget.numpy()].sum(), 0.7)
        np.testing.assert_allclose(w[forget.numpy()].sum(), -0.3)


@pytest.mark.parametrize("target", ["flip", "uniform"])
def test_random_label_passes_over_R_and_F_with_F_relabelled(target):
    run, calls = _spy(tiny(unlearn_method="rl", forget_target=target, **BASE))
    forget = run.forget[0]
    for c in calls:
        assert (c["weights"][0] > 0).all()  # every sample, R and F
        assert torch.equal(c["labels"][0, ~forget], run.labels[0, ~forget])  # R keeps its labels
    if target == "flip":
        assert torch.equal(calls[0]["labels"][0, forget], -run.labels[0, forget])


def test_sharp_minmax_forget_step_is_sharpness_max_with_the_radius_whatever_the_unlearn_optimizer():
    """Retain part: SAM-min (mix +lambda) on alpha L(R); forget part: SAM-max (mix -lambda) on -(1-alpha) L(F), both
    at radius rho even when unlearn_optimizer is gd; the two masks split the filters."""
    run, calls = _spy(tiny(unlearn_method="sharp_minmax", unlearn_optimizer="gd", sam_lambda=1.0, **BASE))
    forget = run.forget[0]
    retain_steps, forget_steps = calls[0::2], calls[1::2]
    assert len(retain_steps) == len(forget_steps) == BASE["unlearn_steps"]
    for r, f in zip(retain_steps, forget_steps):
        assert float(r["rho"][0]) == pytest.approx(0.2) and float(f["rho"][0]) == pytest.approx(0.2)
        assert float(r["mix"][0]) == 1.0 and float(f["mix"][0]) == -1.0
        assert (r["weights"][0][forget] == 0).all() and (r["weights"][0][~forget] > 0).all()
        assert (f["weights"][0][~forget] == 0).all() and (f["weights"][0][forget] < 0).all()
        np.testing.assert_allclose(float(f["weights"][0].sum()), -0.3)
        total = r["masks"]["filter_mask"] + f["masks"]["filter_mask"]
        assert torch.equal(total, torch.ones_like(total))


def test_retrain_trains_on_the_retain_set_from_fresh_filters():
    """The retrain reference never sees F: every noise coefficient of a forget sample stays exactly 0."""
    cfg = tiny(unlearn_method="retrain", steps=15, **{k: v for k, v in BASE.items() if k != "unlearn_steps"})
    res = simulate([cfg], save_coefficients=True)[0]
    forget = np.zeros(cfg.n, bool)
    forget[res.trajectory["forget_indices"]] = True
    for key in ("zeta_bar", "zeta"):
        final = res.coefficients[key][-1]  # (2, m, N), one noise vector per sample
        assert np.all(final[..., forget] == 0), key
        assert np.abs(final[..., ~forget]).max() > 0, key
    run, calls = _spy(cfg)
    assert all((c["weights"][0][run.forget[0]] == 0).all() for c in calls)


def test_retrain_follows_the_pretraining_sam_schedule():
    """Retraining is the pretraining recipe on R: with ``sam_steps`` SAM's radius is used for the first sam_steps
    steps only, then 0 (as in pretraining); without it, on every step; GD retrains at radius 0 throughout."""
    base = {k: v for k, v in BASE.items() if k != "unlearn_steps"}
    for sam_steps, expected in ((4, [0.3] * 4 + [0.0] * 6), (0, [0.3] * 10)):
        _, calls = _spy(tiny(unlearn_method="retrain", optimizer="sam", rho=0.3, steps=10, sam_steps=sam_steps,
                             **{k: v for k, v in base.items() if k not in ("optimizer", "rho")}))
        np.testing.assert_allclose([float(c["rho"][0]) for c in calls], expected, err_msg=f"sam_steps={sam_steps}")
    _, calls = _spy(tiny(unlearn_method="retrain", optimizer="gd", steps=5,
                         **{k: v for k, v in base.items() if k != "optimizer"}))
    assert [float(c["rho"][0]) for c in calls] == [0.0] * 5


def _variants(name, value):
    from simulations.config import CHOICES

    if name in CHOICES:
        return [c for c in CHOICES[name] if c != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value + 2, 1]
    return [value * 0.5 + 0.01, value + 0.3, 0.3]


def test_every_config_field_changes_the_cache_key():
    for name in FIELD_NAMES:
        for base in (SimConfig(), SimConfig(backend="weights")):
            other = None
            for new in _variants(name, getattr(base, name)):
                try:
                    other = dataclasses.replace(base, **{name: new})
                    break
                except ValueError:  # ConfigError: a combination the validation refuses, try the next value
                    continue
            if other is not None:
                break
        assert other is not None, f"no valid variant of {name}"
        assert other.hash != base.hash, f"{name} does not change the cache key"


def test_test_labels_are_flipped_with_probability_p():
    """Test labels are flipped independently of x, so the error against them is p + (1 - 2p) times the error against
    the true label, for any classifier (here a strong-signal one and a weak-signal one)."""
    for signal in (1.0, 8.0):
        cfg = SimConfig(d=200, signal_strength=signal, label_flip=0.2, steps=200, lr=0.5, n_test=20000)
        res = simulate([cfg])[0].metrics
        clean, noisy = res["test_error_clean"], res["test_error"]
        assert noisy == pytest.approx(0.2 + 0.6 * clean, abs=4 * res["test_error_se"])
        if clean < 0.3:
            assert noisy > clean + 0.05  # without flipped test labels the two would coincide


def test_bootstrap_interval_is_a_95_percent_interval():
    """For the mean of k seed values the percentile interval's half-width is about 1.96 s/sqrt(k) (90 % would be
    1.645)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=400)
    df = pd.DataFrame({"seed": np.arange(400), "v": values})
    est = bootstrap_statistic(df, lambda t: t["v"].mean(), n_boot=3000, seed=1)
    half = (est["ci_high"] - est["ci_low"]) / 2
    se = values.std(ddof=0) / np.sqrt(values.size)
    assert half / se == pytest.approx(1.96, rel=0.06)


def test_signal_rate_has_the_right_sign_and_scale():
    traj = {"step": np.array([0.0, 10.0, 20.0, 30.0]), "signal_coef_max": np.array([1.0, 3.0, 4.0, 3.5])}
    assert signal_rate(traj, 0.0) == pytest.approx(0.2)  # (3 - 1) / 10, growth is positive
    assert signal_rate(traj, 10.0) == pytest.approx(0.1)
    assert signal_rate(traj, 20.0) == pytest.approx(-0.05)  # a fall is negative
