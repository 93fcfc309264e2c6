"""The analytic gradient of the batched model (docs/model.md#network) equals autograd of a from-scratch
implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import autograd_loss, full_patches, joined, model_gradient, patch_preacts, tiny

from simulations.data import explicit_data
from simulations.engine import GroupRun
from simulations.model import Activation


def _case(activation, shared, P):
    cfg = tiny(backend="weights", activation=activation, q=3.0, P=P, shared_noise=shared, d=25, m=4, n=8,
               sigma_0=0.3, label_flip=0.25, seed=3)
    run = GroupRun([cfg])
    X = full_patches(cfg, explicit_data(cfg))
    g = torch.Generator().manual_seed(0)
    # a point away from init with sizeable positive and negative pre-activations
    W = run.backend.init_state() + 0.3 * torch.randn(run.backend.shape, generator=g, dtype=torch.float64)
    weights = torch.randn((1, cfg.n), generator=g, dtype=torch.float64)  # signed: NegGrad-like objectives
    return cfg, run, X, W, weights


@pytest.mark.parametrize("activation", ["relu", "polyrelu"])
@pytest.mark.parametrize("shared,P", [(True, 2), (True, 3), (False, 3)])
def test_gradient_matches_autograd(activation, shared, P):
    cfg, run, X, W, weights = _case(activation, shared, P)
    # the backend's initial filters are sigma_0 times the explicit init vectors
    np.testing.assert_allclose(run.backend.init_state()[0].reshape(2 * cfg.m, cfg.d).numpy(),
                               cfg.sigma_0 * explicit_data(cfg).init, rtol=0, atol=0)

    Wg = W[0].clone().requires_grad_(True)
    loss_ref = autograd_loss(Wg, X, run.labels[0], weights[0], activation, 3.0)
    (grad_ref,) = torch.autograd.grad(loss_ref, Wg)

    loss, per_sample, out, coef, grad = model_gradient(run, W, run.labels, weights)
    grad = grad[0]
    assert float(grad.abs().max()) > 1e-3  # not a vacuous comparison
    np.testing.assert_allclose(float(loss[0]), float(loss_ref.detach()), rtol=1e-9)
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-10, atol=1e-12)
    # per-sample losses and outputs match the direct formula too
    with torch.no_grad():
        Z = torch.einsum("jrd,ipd->jrip", W[0], X)
        sig = torch.relu(Z) if activation == "relu" else torch.relu(Z) ** 3
        f = (sig[0].sum(dim=(0, 2)) - sig[1].sum(dim=(0, 2))) / cfg.m
    np.testing.assert_allclose(out[0].numpy(), f.numpy(), rtol=1e-12, atol=1e-14)
    exact = torch.logaddexp(torch.zeros_like(f), -run.labels[0] * f)
    np.testing.assert_allclose(per_sample[0].numpy(), exact.numpy(), rtol=1e-9)


def test_gradient_is_a_combination_of_patches_with_the_stated_coefficients():
    """coef[j,r,i,p] = a_i l'(y_i f_i) y_i j sigma'(<w_{j,r}, x_i^(p)>) / m (docs/model.md#network), checked entry by
    entry."""
    cfg, run, X, W, weights = _case("relu", False, 3)
    assert run.layout.noise_multiplicity == 1.0
    preacts = patch_preacts(run.backend, W)
    _, _, out, coef, _ = model_gradient(run, W, run.labels, weights)
    coef = joined(coef)
    y = run.labels[0]
    lprime = -1.0 / (1.0 + torch.exp(y * out[0]))
    for j, sign in enumerate((1.0, -1.0)):
        expected = (weights[0] * lprime * y * sign / cfg.m)[None, :, None] * (preacts[0, j] > 0).double()
        np.testing.assert_allclose(coef[0, j].numpy(), expected.numpy(), rtol=1e-12, atol=1e-15)


def test_polyrelu_activation_values():
    z = torch.tensor([-2.0, -0.1, 0.0, 0.5, 2.0], dtype=torch.float64)
    act = Activation("polyrelu", 3.0)
    np.testing.assert_allclose(act.value(z).numpy(), [0, 0, 0, 0.125, 8.0])
    np.testing.assert_allclose(act.derivative(z).numpy(), [0, 0, 0, 0.75, 12.0])
    relu = Activation("relu")
    np.testing.assert_allclose(relu.derivative(z).numpy(), [0, 0, 0, 1, 1])


@pytest.mark.parametrize("P", [2, 4])
def test_shared_noise_patch_counts_P_minus_1_times(P):
    """With shared noise the stored noise patch stands for P-1 identical patches: f = (1/m) sum_r [sigma(signal)
    + (P-1) sigma(noise)] per filter set, checked against the directly computed outputs."""
    cfg = tiny(backend="weights", P=P, shared_noise=True, sigma_0=0.5, d=12, n=5, m=2)
    run = GroupRun([cfg])
    W = run.backend.init_state()
    _, _, out, _, _ = model_gradient(run, W, run.labels, torch.ones((1, cfg.n), dtype=torch.float64))
    pre = patch_preacts(run.backend, W)[0]  # (2, m, n, 2)
    sig = torch.relu(pre)
    per_set = sig[..., 0].sum(dim=1) + (P - 1) * sig[..., 1].sum(dim=1)
    np.testing.assert_allclose(out[0].numpy(), ((per_set[0] - per_set[1]) / cfg.m).numpy(), rtol=1e-12)
