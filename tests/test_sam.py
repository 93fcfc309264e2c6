"""The functional SAM step of the simulator (docs/model.md#optimizers).

The simulator's objective is always the logistic loss of the two-layer CNN, so "SAM on a quadratic" cannot be posed
through :func:`simulations.optim.sam_step`; instead the step is checked against a hand-written SAM update computed
with torch autograd on the same data (plain SAM, sharpness maximisation, generalised lambda, ASAM, masks), on both
backends, plus ``rho = 0`` ≡ GD exactly and the loss decreasing over a few steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import assert_results_close, autograd_grad, autograd_loss, full_patches, joined, tiny

from simulations import simulate
from simulations.data import explicit_data
from simulations.engine import GroupRun
from simulations.optim import sam_step

# ---------------------------------------------------------------------- rho = 0 is the base optimizer


@pytest.mark.parametrize("backend", ["gram", "weights"])
@pytest.mark.parametrize("extra", [dict(), dict(batch_size=4), dict(unlearn_method="neggrad", unlearn_optimizer="sam"),
                                   dict(sam_sign="max", sam_lambda=0.5)])
def test_sam_with_rho_zero_is_gd_exactly(backend, extra):
    base = tiny(backend=backend, **extra)
    opt = "sgd" if base.batch_size else "gd"
    plain = simulate([base.replace(optimizer=opt)])[0]
    sam = simulate([base.replace(optimizer="sam", rho=0.0)])[0]
    assert_results_close(plain, sam, atol=0.0)
    # and not because the optimizer is ignored: a positive radius changes the run
    moved = simulate([base.replace(optimizer="sam", rho=0.3)])[0]
    assert not np.allclose(moved.trajectory["train_loss"], plain.trajectory["train_loss"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_rho_zero_in_a_batch_with_positive_rho(backend):
    """In a mixed batch the second pass runs for everyone; rho = 0 must still give the GD step."""
    base = tiny(backend=backend, optimizer="sam")
    mixed = simulate([base.replace(rho=0.0), base.replace(rho=0.3)])
    gd = simulate([base.replace(optimizer="gd")])[0]
    assert_results_close(mixed[0], gd, atol=1e-12)


# ---------------------------------------------------------------------- one step against autograd


def _setup(**overrides):
    cfg = tiny(**{"backend": "weights", "d": 25, "n": 8, "m": 4, "sigma_0": 0.3, "label_flip": 0.25, **overrides})
    data = explicit_data(cfg)
    run = GroupRun([cfg])
    X = full_patches(cfg, data)
    g = torch.Generator().manual_seed(1)
    W = run.backend.init_state() + 0.2 * torch.randn(run.backend.shape, generator=g, dtype=torch.float64)
    weights = torch.full((1, cfg.n), 1.0 / cfg.n, dtype=torch.float64)
    weights[0, :2] = -0.05  # a NegGrad-like signed objective
    return cfg, data, run, X, W, weights


def _grad(run, X, W, weights):
    return autograd_grad(W, X, run.labels[0], weights[0], run.cfg.activation, run.cfg.q)


def _reference_sam(run, X, W, weights, lr, rho, mix, adaptive=False):
    """W - lr [g + mix (g(W + eps) - g)], eps = rho g/||g||_F, or ASAM's rho |w|^2 g / || |w| g ||."""
    W = W[0]
    g = _grad(run, X, W, weights)
    if adaptive:
        eps = rho * W.abs() ** 2 * g / torch.linalg.norm(W.abs() * g)
    else:
        eps = rho * g / torch.linalg.norm(g)
    g_eps = _grad(run, X, W + eps, weights)
    return W - lr * (g + mix * (g_eps - g)), eps, g, g_eps


CASES = {
    "sam": dict(mix=1.0, adaptive=False),
    "sharpness_max": dict(mix=-1.0, adaptive=False),  # 2 g - g(W + eps)
    "generalised": dict(mix=0.3, adaptive=False),
    "asam": dict(mix=1.0, adaptive=True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("activation", ["relu", "polyrelu"])
def test_sam_step_matches_autograd(case, activation):
    cfg, data, run, X, W, weights = _setup(activation=activation, q=3.0, sigma_0=0.3 if activation == "relu" else 0.2)
    lr, rho, mix, adaptive = 0.7, 0.4, CASES[case]["mix"], CASES[case]["adaptive"]
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    new, info = sam_step(run.backend, run.act, W, run.labels, weights, t(lr), t(rho), t(mix), adaptive=adaptive)
    expected, eps, g, g_eps = _reference_sam(run, X, W, weights, lr, rho, mix, adaptive)
    assert float((g_eps - g).abs().max()) > 1e-3 * float(g.abs().max())  # the perturbation matters here
    np.testing.assert_allclose(new[0].numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    if case == "sharpness_max":
        np.testing.assert_allclose(new[0].numpy(), (W[0] - lr * (2 * g - g_eps)).numpy(), rtol=1e-10, atol=1e-12)
    # StepInfo: the objective at W and the pre-activations at the perturbed point W + eps
    loss_ref = autograd_loss(W[0], X, run.labels[0], weights[0], activation, 3.0)
    np.testing.assert_allclose(float(info.loss[0]), float(loss_ref), rtol=1e-9)
    pre_eps = torch.einsum("jrd,ipd->jrip", W[0] + eps, X)[..., :2]  # stored patches: signal + one noise
    np.testing.assert_allclose(joined(info.perturbed_preacts)[0].numpy(), pre_eps.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["sam", "sharpness_max", "generalised"])
def test_gram_sam_step_matches_autograd_on_the_same_vectors(case):
    """The reduced step: its new coefficients c give W = W0 + sum_k c_k b_k equal to the autograd SAM update."""
    cfg, data, run_w, X, W, weights = _setup(P=3, shared_noise=False)
    run_g = GroupRun([cfg.replace(backend="gram")], explicit=[data])
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    lr, rho, mix = 0.7, 0.4, CASES[case]["mix"]
    # start the gram backend at the initial filters (c = 0) and compare one step from W0
    W0 = run_w.backend.init_state()
    c_new, _ = sam_step(run_g.backend, run_g.act, run_g.backend.init_state(), run_g.labels, weights, t(lr), t(rho),
                        t(mix))
    expected, *_ = _reference_sam(run_w, X, W0, weights, lr, rho, mix)
    basis = torch.zeros((cfg.n_noise_vectors + 1, cfg.d), dtype=torch.float64)
    basis[0, 0] = cfg.signal_strength
    basis[1:] = cfg.sigma_p * torch.as_tensor(data.noise)
    rebuilt = W0[0] + torch.einsum("jrk,kd->jrd", c_new[0], basis)
    assert float((expected - W0[0]).abs().max()) > 1e-4
    np.testing.assert_allclose(rebuilt.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_sam_step_masks_restrict_the_update():
    cfg, data, run, X, W, weights = _setup()
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    expected, *_ = _reference_sam(run, X, W, weights, 0.7, 0.4, 1.0)
    full_step = expected - W[0]
    filter_mask = torch.zeros((1, 2, cfg.m), dtype=torch.float64)
    filter_mask[0, 0, 1] = filter_mask[0, 1, 3] = 1.0
    new, info = sam_step(run.backend, run.act, W, run.labels, weights, t(0.7), t(0.4), t(1.0),
                         filter_mask=filter_mask)
    np.testing.assert_allclose((new - W)[0].numpy(), (full_step * filter_mask[0, ..., None]).numpy(), rtol=1e-10,
                               atol=1e-12)
    assert info.basis_step is not None
    coord = (torch.rand(W.shape, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    new, info = sam_step(run.backend, run.act, W, run.labels, weights, t(0.7), t(0.4), t(1.0), coordinate_mask=coord)
    np.testing.assert_allclose((new - W)[0].numpy(), (full_step * coord[0]).numpy(), rtol=1e-10, atol=1e-12)
    assert info.basis_step is None  # a coordinate-masked update leaves span{mu, xi}


# ---------------------------------------------------------------------- a few steps cut the loss


@pytest.mark.parametrize("optimizer,extra", [("gd", {}), ("sgd", dict(batch_size=4)), ("sam", dict(rho=0.2)),
                                             ("sam", dict(rho=0.2, batch_size=4)),
                                             ("sam", dict(rho=0.2, sam_adaptive=True, backend="weights"))])
def test_optimizers_reduce_the_training_loss(optimizer, extra):
    res = simulate([tiny(**{"optimizer": optimizer, "steps": 40, **extra})])[0]
    loss = res.trajectory["train_loss"]
    assert loss[-1] < 0.5 * loss[0], loss
    assert res.metrics["train_error"] <= 0.1


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_rho_is_ignored_unless_an_optimizer_is_sam(backend):
    base = tiny(backend=backend, unlearn_method="neggrad", unlearn_optimizer="gd")
    plain, with_rho = simulate([base, base.replace(rho=0.4)])
    # two slots of one batch may differ in the last bit (vectorised kernels round a tensor's tail differently)
    assert_results_close(plain, with_rho, atol=1e-12)
    unlearn_sam = simulate([base.replace(rho=0.4, unlearn_optimizer="sam")])[0]
    assert unlearn_sam.metrics["pretrain_train_loss"] == plain.metrics["pretrain_train_loss"]  # same pretraining
    assert unlearn_sam.metrics["train_loss"] != plain.metrics["train_loss"]


def _quadratic_setup(seed=0):
    """A weights backend whose patches are the standard basis of R^6, so pre-activations *are* the weights, and
    an objective ``L(W) = 1/2 sum_f w_f^T A w_f`` passed through ``sam_step``'s objective hook."""
    from simulations.backends import WeightsBackend
    from simulations.model import PatchLayout

    g = torch.Generator().manual_seed(seed)
    d, n = 6, 3  # n samples x 2 stored patches (signal, shared noise) = 6 patches = the basis of R^6
    layout = PatchLayout(n, 2, True, torch.ones(1, n, dtype=torch.float64))
    X = torch.eye(d, dtype=torch.float64).view(1, d, d)
    W = torch.randn(1, 2, 1, d, generator=g, dtype=torch.float64)
    backend = WeightsBackend(layout, X, W.clone(), torch.ones(1, dtype=torch.float64),
                             torch.ones(1, n, dtype=torch.float64))
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = B @ B.T + 0.5 * torch.eye(d, dtype=torch.float64)

    def objective(act, signal_pre, noise_pre, labels, weights, mult, coef_scale=None):
        w = torch.cat([signal_pre[..., None], noise_pre], dim=-1).reshape(1, 2, 1, d)  # = W
        grad = w @ A
        loss = 0.5 * (grad * w).sum(dim=(1, 2, 3))
        if coef_scale is not None:
            grad = grad * coef_scale.view(-1, 1, 1, 1)
        patches = grad.view(1, 2, 1, n, 2)
        return loss, loss[:, None], loss[:, None], (patches[..., 0], patches[..., 1:])

    return backend, W, A, objective


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sam_step_on_a_quadratic_matches_the_closed_form(sign):
    backend, W, A, objective = _quadratic_setup()
    lr, rho = 0.05, 0.3
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    labels = torch.ones(1, 3, dtype=torch.float64)
    weights = torch.ones(1, 3, dtype=torch.float64)
    new, _ = sam_step(backend, None, W, labels, weights, t(lr), t(rho), t(sign), objective=objective)
    w = W.reshape(2, 6)
    g = w @ A
    eps = rho * g / torch.linalg.norm(g)  # one Frobenius norm over both filters
    g_eps = (w + eps) @ A
    expected = w - lr * (g + sign * (g_eps - g))  # sign +1: SAM; -1: sharpness maximisation 2g - g(W+eps)
    np.testing.assert_allclose(new.reshape(2, 6).numpy(), expected.numpy(), rtol=1e-12, atol=1e-14)
    # and rho = 0 is plain gradient descent
    new0, _ = sam_step(backend, None, W, labels, weights, t(lr), t(0.0), t(sign), objective=objective)
    np.testing.assert_allclose(new0.reshape(2, 6).numpy(), (w - lr * g).numpy(), rtol=1e-12, atol=1e-14)
