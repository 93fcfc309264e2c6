"""The gram backend is an exact reduction of the weights backend (docs/model.md#the-two-backends).

(a) given the Gram of the very vectors the weights backend drew, both give the same trajectories;
(b) sampling its own Gram, the gram backend gives the same test-error distribution over seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import assert_results_close, drive, patch_preacts, tiny

from simulations import simulate
from simulations.data import explicit_data
from simulations.engine import GroupRun

CASES = {
    "gd": dict(optimizer="gd"),
    "sgd": dict(optimizer="sgd", batch_size=5),
    "sam": dict(optimizer="sam", rho=0.2),
    "sam_sgd": dict(optimizer="sam", rho=0.2, batch_size=5),
    "sam_max": dict(optimizer="sam", rho=0.2, sam_sign="max", sam_lambda=0.5),
    "sam_unprojected_polyrelu": dict(optimizer="sam", rho=0.1, noise_projected=False, activation="polyrelu",
                                     sigma_0=0.1, lr=0.2),
    "sam_independent_noise": dict(optimizer="sam", rho=0.2, P=3, shared_noise=False),
    "neggrad": dict(optimizer="gd", unlearn_method="neggrad", alpha=0.7),
    "neggrad_sam": dict(optimizer="sam", rho=0.2, unlearn_method="neggrad", unlearn_optimizer="sam"),
    "neggrad_sgd": dict(optimizer="sgd", batch_size=5, unlearn_method="neggrad", unlearn_optimizer="sgd"),
    "rl_flip": dict(unlearn_method="rl", forget_target="flip"),
    "rl_uniform_sam": dict(unlearn_method="rl", forget_target="uniform", unlearn_optimizer="sam", rho=0.2),
    "ga": dict(unlearn_method="ga", unlearn_lr=0.1),
    "ft_noisy": dict(unlearn_method="ft", forget_select="noisy", label_flip=0.3),
    "retrain": dict(unlearn_method="retrain", optimizer="sam", rho=0.2),
    "sharp_minmax": dict(unlearn_method="sharp_minmax", rho=0.2, mask_fraction=0.5),
    "from_scratch_neggrad": dict(unlearn_method="neggrad", regime="from_scratch", unlearn_optimizer="sam", rho=0.2),
}


def _pair(overrides):
    cfg_w = tiny(**{"backend": "weights", "label_flip": 0.2, **overrides})
    cfg_g = cfg_w.replace(backend="gram")
    vectors = explicit_data(cfg_w)
    return cfg_w, cfg_g, vectors


@pytest.mark.parametrize("case", list(CASES))
def test_gram_on_explicit_vectors_reproduces_weights_backend(case):
    cfg_w, cfg_g, vectors = _pair(CASES[case])
    res_w = GroupRun([cfg_w], explicit=[vectors]).run()[0]
    res_g = GroupRun([cfg_g], explicit=[vectors]).run()[0]
    # training-set metrics, coefficient summaries and every trajectory agree; test sets are drawn differently
    assert_results_close(res_w, res_g, rtol=1e-8, atol=1e-10, drop_test=True, what=case)
    assert res_w.trajectory["signal_coef_max"].max() > 0  # something was learnt
    # and the test error, measured on independent test samples, agrees within the sampling error
    se = np.hypot(res_w.metrics["test_error_se"], res_g.metrics["test_error_se"])
    assert abs(res_w.metrics["test_error"] - res_g.metrics["test_error"]) <= 4 * se + 1e-12


@pytest.mark.parametrize("case", ["sam", "neggrad_sam", "retrain", "sharp_minmax", "sam_independent_noise"])
def test_pre_activations_and_outputs_agree_after_training(case):
    cfg_w, cfg_g, vectors = _pair(CASES[case])
    run_w, run_g = GroupRun([cfg_w], explicit=[vectors]), GroupRun([cfg_g], explicit=[vectors])
    state_w, state_g = drive(run_w), drive(run_g)
    pre_w = patch_preacts(run_w.backend, state_w)
    pre_g = patch_preacts(run_g.backend, state_g)
    assert pre_w.shape == pre_g.shape
    scale = float(pre_w.abs().max())
    assert scale > 0
    np.testing.assert_allclose(pre_g.numpy(), pre_w.numpy(), rtol=0, atol=1e-9 * scale)
    # the gram state reconstructs the very weights: W = W0 + sum_k c_k b_k, b_0 = mu = s e_1, b_k = sigma_p xi_k
    basis = torch.zeros((cfg_w.n_noise_vectors + 1, cfg_w.d), dtype=torch.float64)
    basis[0, 0] = cfg_w.signal_strength
    basis[1:] = cfg_w.sigma_p * torch.as_tensor(vectors.noise)
    W0 = run_w.backend.W0
    rebuilt = W0 + torch.einsum("cjrk,kd->cjrd", state_g, basis)
    np.testing.assert_allclose(rebuilt.numpy(), state_w.numpy(), rtol=0,
                               atol=1e-9 * float(state_w.abs().max()))
    # the filter Gram and the filters' e_1 component of the gram backend are those of the weights
    Wf = state_w.reshape(1, 2 * cfg_w.m, cfg_w.d)
    np.testing.assert_allclose(run_g.backend.filter_gram(state_g).numpy(), (Wf @ Wf.transpose(1, 2)).numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(run_g.backend.filter_e1(state_g).numpy(), state_w[..., 0].numpy(), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("projected", [True, False])
def test_test_error_distribution_over_seeds_agrees(projected):
    """The gram backend sampling its own Gram (Bartlett) gives the same test-error law as explicit vectors."""
    seeds = 30
    base = dict(n=20, d=200, m=5, steps=60, lr=0.5, signal_strength=0.7, label_flip=0.1, n_test=1000,
                optimizer="sam", rho=0.2, log_points=2, noise_projected=projected)
    cw = [tiny(backend="weights", seed=s, **base) for s in range(seeds)]
    cg = [c.replace(backend="gram", seed=1000 + c.seed) for c in cw]
    rw, rg = simulate(cw), simulate(cg)
    for key in ("test_error", "noise_coef_max", "signal_coef_max"):
        a = np.array([r.metrics[key] for r in rw])
        b = np.array([r.metrics[key] for r in rg])
        pooled = np.sqrt(a.var(ddof=1) / seeds + b.var(ddof=1) / seeds)
        assert abs(a.mean() - b.mean()) < 4 * pooled, (key, a.mean(), b.mean(), pooled)
        if key == "test_error":  # a setting where the comparison means something
            assert 0.15 < a.mean() < 0.4 and 0.15 < b.mean() < 0.4, (a.mean(), b.mean())
            assert a.std() > 0.01


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_monte_carlo_test_error_matches_explicit_test_samples(projected, shared):
    """The gram backend's test error (Monte Carlo over the Gaussian of the 2m noise pre-activations,
    docs/model.md#the-two-backends) and
    the weights backend's (explicit d-dimensional test samples) estimate the same number for the same weights."""
    cfg_w = tiny(backend="weights", signal_strength=3.0, noise_projected=projected, shared_noise=shared, P=3,
                 n_test=20_000, optimizer="sam", rho=0.2, label_flip=0.1)
    vectors = explicit_data(cfg_w)
    run_w = GroupRun([cfg_w], explicit=[vectors])
    run_g = GroupRun([cfg_w.replace(backend="gram")], explicit=[vectors])
    met_w = run_w.evaluate(drive(run_w))
    met_g = run_g.evaluate(drive(run_g))
    for key in ("test_error", "test_error_clean"):
        pw, pg = float(met_w[key][0]), float(met_g[key][0])
        se = np.sqrt((pw * (1 - pw) + pg * (1 - pg)) / cfg_w.n_test)
        assert abs(pw - pg) <= 4 * se + 1e-12, (key, pw, pg, se)
    assert 0.01 < float(met_w["test_error_clean"][0]) < 0.45  # not a trivial comparison


def _resident_bytes(backend) -> int:
    return sum(t.numel() * t.element_size() for t in vars(backend).values() if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("backend", [
    "gram",
    "weights",
])
def test_memory_estimate_covers_the_backend_tensors(backend):
    """The planner's per-configuration estimate is at least what the backend itself keeps resident."""
    from simulations.backends import bytes_per_config

    cfg = tiny(backend=backend, n=400, d=10, m=3, n_test=100)
    run = GroupRun([cfg])
    assert bytes_per_config(cfg, backend) >= _resident_bytes(run.backend)
