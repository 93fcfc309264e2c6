"""The signal–noise decomposition of docs/model.md#signal-and-noise-coefficients is exact and has the stated signs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import drive, tiny

from simulations import preset, simulate
from simulations.engine import GroupRun


def _basis(run):
    """mu (d,) and the training noise vectors xi_k (N, d) of a single-configuration weights run."""
    cfg, backend = run.cfg, run.backend
    X = backend.X[0].view(cfg.n, run.layout.stored_patches, cfg.d)
    mu = torch.zeros(cfg.d, dtype=torch.float64)
    mu[0] = cfg.signal_strength
    return mu, X[:, 1:, :].reshape(-1, cfg.d)


def _reconstruct(run, kappa, zeta_bar, zeta):
    """w_{j,r} - w0_{j,r} = j kappa mu/||mu||^2 + sum_k (zeta_bar + zeta)_{j,r,k} xi_k/||xi_k||^2."""
    mu, xi = _basis(run)
    sign_j = torch.tensor([1.0, -1.0], dtype=torch.float64).view(2, 1, 1)
    signal_part = sign_j * kappa[0][..., None] * mu / (mu @ mu)
    noise_part = torch.einsum("jrk,kd->jrd", zeta_bar[0] + zeta[0], xi / (xi * xi).sum(-1, keepdim=True))
    return signal_part + noise_part


CASES = {
    "gd": dict(optimizer="gd"),
    "sam": dict(optimizer="sam", rho=0.3),
    "sgd": dict(optimizer="sgd", batch_size=4),
    "sam_independent_noise": dict(optimizer="sam", rho=0.3, P=3, shared_noise=False),
    "sam_max_neggrad": dict(optimizer="sam", rho=0.3, sam_sign="max", unlearn_method="neggrad",
                            unlearn_optimizer="sam"),
    "rl_uniform": dict(unlearn_method="rl", forget_target="uniform"),
    "retrain": dict(unlearn_method="retrain", optimizer="sam", rho=0.3),
    "sharp_minmax_filter": dict(unlearn_method="sharp_minmax", rho=0.3),
}


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_coefficients_reconstruct_the_trained_weights(case, projected):
    cfg = tiny(**{"backend": "weights", "noise_projected": projected, "label_flip": 0.2, **CASES[case]})
    run = GroupRun([cfg])
    state = drive(run)
    kappa, zeta_bar, zeta = run.tracker.coefficients(run.backend.signal_norm_sq(), run.backend.noise_norms_sq())
    delta = (state - run.backend.W0)[0]  # W0 of the last initialisation (retrain restarts from fresh filters)
    rebuilt = _reconstruct(run, kappa, zeta_bar, zeta)
    scale = float(delta.abs().max())
    assert scale > 1e-3
    err = float((rebuilt - delta).abs().max()) / scale
    assert err <= 1e-5, err
    if projected:  # kappa_{j,r} = j <w - w0, mu>
        mu, _ = _basis(run)
        sign_j = torch.tensor([1.0, -1.0], dtype=torch.float64).view(2, 1)
        np.testing.assert_allclose(kappa[0].numpy(), (sign_j * (delta @ mu)).numpy(), rtol=1e-9,
                                   atol=1e-12 * scale)


def test_coefficient_trajectory_ends_at_the_final_coefficients():
    cfg = tiny(backend="weights", optimizer="sam", rho=0.3, unlearn_method="neggrad")
    res = simulate([cfg], save_coefficients=True)[0]
    run = GroupRun([cfg])
    drive(run)
    kappa, zeta_bar, zeta = run.tracker.coefficients(run.backend.signal_norm_sq(), run.backend.noise_norms_sq())
    steps = res.trajectory["step"]
    assert res.coefficients["kappa"].shape == (len(steps), 2, cfg.m)
    assert res.coefficients["zeta"].shape == (len(steps), 2, cfg.m, cfg.n_noise_vectors)
    assert steps[-1] == cfg.steps + cfg.unlearn_steps
    np.testing.assert_allclose(res.coefficients["kappa"][-1], kappa[0].numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.coefficients["zeta_bar"][-1], zeta_bar[0].numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.coefficients["zeta"][-1], zeta[0].numpy(), rtol=1e-10, atol=1e-14)
    # at step 0 nothing has been learnt yet
    assert np.all(res.coefficients["kappa"][0] == 0) and np.all(res.coefficients["zeta_bar"][0] == 0)
    # the summaries in the trajectory and the metrics are those of the full coefficients
    np.testing.assert_allclose(res.trajectory["signal_coef_max"], res.coefficients["kappa"].max(axis=(1, 2)))
    np.testing.assert_allclose(res.trajectory["noise_coef_max"], res.coefficients["zeta_bar"].max(axis=(1, 2, 3)))
    np.testing.assert_allclose(res.trajectory["noise_coef_min"], res.coefficients["zeta"].min(axis=(1, 2, 3)))
    assert res.metrics["signal_coef_max"] == pytest.approx(float(kappa.max()), rel=1e-12)
    assert res.metrics["noise_coef_max"] == pytest.approx(float(zeta_bar.max()), rel=1e-12)


def test_coordinate_masks_leave_the_span_and_mark_coefficients_unknown():
    cfg = tiny(backend="weights", unlearn_method="sharp_minmax", mask_granularity="coordinate", rho=0.3)
    res = simulate([cfg], save_coefficients=True)[0]
    assert np.isnan(res.metrics["signal_coef_max"]) and np.isnan(res.coefficients["kappa"][-1]).all()
    assert np.isfinite(res.metrics["train_loss"])


@pytest.mark.parametrize("backend", ["gram", "weights"])
@pytest.mark.parametrize("opt", [dict(optimizer="gd"), dict(optimizer="sgd", batch_size=3),
                                 dict(optimizer="sam", rho=0.3)])
def test_noise_coefficient_signs_without_unlearning(backend, opt):
    """docs/model.md#signal-and-noise-coefficients: zeta_bar >= 0 and zeta <= 0 along plain (S)GD/SAM training, label
    noise included."""
    cfg = tiny(backend=backend, label_flip=0.3, steps=30, log_points=31, **opt)
    res = simulate([cfg], save_coefficients=True)[0]
    zb, z = res.coefficients["zeta_bar"], res.coefficients["zeta"]
    assert zb.min() >= 0.0
    assert z.max() <= 0.0
    assert zb.max() > 0 and z.min() < 0  # both parts actually moved
    assert np.all(res.trajectory["noise_coef_min"] <= 0)


def test_active_noise_fraction_in_unit_interval_and_lower_under_sam():
    """Prediction 5 (docs/model.md#checkable-predictions): early in training SAM keeps far fewer (r, i) noise neurons
    active than GD (smoke preset)."""
    base = preset("smoke").config({"unlearn_method": "none", "signal_strength": 1.0, "n_test": 100})
    configs = [base.replace(optimizer=o, seed=s) for s in (0, 1) for o in ("gd", "sam")]
    results = simulate(configs)
    for res in results:
        frac = res.trajectory["active_noise_fraction"]
        assert np.all((frac >= 0) & (frac <= 1))
    for s in range(2):
        gd, sam = results[2 * s], results[2 * s + 1]
        early_gd = gd.trajectory["active_noise_fraction"][:5].mean()
        early_sam = sam.trajectory["active_noise_fraction"][:5].mean()
        assert early_sam < 0.5 * early_gd, (early_sam, early_gd)
