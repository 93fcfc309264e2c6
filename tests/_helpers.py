"""Helpers shared by the simulator tests: tiny configurations, a hand-driven GroupRun, an independent autograd model."""

from __future__ import annotations

import numpy as np
import torch

from simulations import SimConfig
from simulations.data import STREAM_BATCH, ExplicitData
from simulations.model import loss_and_patch_coefficients
from simulations.unlearning import METHODS

TINY = dict(n=10, d=30, P=2, m=3, steps=20, n_test=200, lr=0.5, forget_size=2, unlearn_steps=10, unlearn_lr=0.5,
            signal_strength=1.5, sigma_p=0.8, sigma_0=0.05,  # not 1: scalings must matter
            log_points=6)


def tiny(**overrides) -> SimConfig:
    return SimConfig(**{**TINY, **overrides})


def joined(patch_values) -> torch.Tensor:
    """Per-patch values as one tensor (C, 2, m, n, P_stored), signal patch first, whether the simulator passes them
    as one tensor or as a ``(signal (C, 2, m, n), noise (C, 2, m, n, P_n))`` pair."""
    if isinstance(patch_values, tuple) and len(patch_values) == 2 and isinstance(patch_values[1], torch.Tensor) \
            and patch_values[1].dim() == 5:
        signal, noise = patch_values
        if hasattr(signal, "value") and hasattr(signal, "yhat"):  # kept on the basis: <w_{j,r}, yhat_i mu>
            signal = signal.value[..., None] * signal.yhat[:, None, None, :]
        return torch.cat([signal[..., None], noise], dim=-1)
    return patch_values


def patch_preacts(backend, state) -> torch.Tensor:
    """Pre-activations of every stored training patch, (C, 2, m, n, P_stored)."""
    return joined(backend.expand(backend.basis_preacts(state)))


def model_gradient(run, state, labels, weights):
    """The simulator's ``(loss, per-sample loss, outputs, direction)`` of ``sum_i a_i l(y_i f(x_i))`` at ``state``."""
    pre = run.backend.expand(run.backend.basis_preacts(state))
    args = pre if isinstance(pre, tuple) else (pre,)
    loss, per_sample, out, coef = loss_and_patch_coefficients(run.act, *args, labels, weights,
                                                             run.layout.noise_multiplicity)
    return loss, per_sample, out, coef, run.backend.direction(coef)


def drive(run):
    """The training part of ``GroupRun.run`` (pretraining, then the unlearning method); returns the final state."""
    state = run.backend.init_state()
    if run.pretrain_steps:
        weights = run.sampler(torch.ones_like(run.forget), run.train_batch, STREAM_BATCH)
        for t in range(run.pretrain_steps):
            state = run.step(state, run.labels, weights(t), run.train_lr, run.train_rho)
    if run.cfg.unlearns:
        state = METHODS[run.cfg.unlearn_method].run(run, state)
    return state


def full_patches(cfg: SimConfig, data: ExplicitData) -> torch.Tensor:
    """All P patches of every training sample, (n, P, d) float64, built directly from the explicit vectors:
    patch 0 is ``yhat_i * ||mu|| e_1``, patches 1..P-1 are ``sigma_p xi`` (the same xi repeated when shared)."""
    n, P, d = cfg.n, cfg.P, cfg.d
    X = np.zeros((n, P, d))
    X[:, 0, 0] = data.yhat * cfg.signal_strength
    if cfg.shared_noise:
        X[:, 1:, :] = cfg.sigma_p * data.noise[:, None, :]
    else:
        X[:, 1:, :] = cfg.sigma_p * data.noise.reshape(n, P - 1, d)
    return torch.as_tensor(X)


def autograd_loss(W: torch.Tensor, X: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, activation: str,
                  q: float = 3.0) -> torch.Tensor:
    """``sum_i a_i log(1 + exp(-y_i f(W, x_i)))`` for one configuration, W (2, m, d), X (n, P, d) —
    docs/model.md#network, written from scratch (no simulator code)."""
    m = W.shape[1]
    Z = torch.einsum("jrd,ipd->jrip", W, X)
    sigma = torch.relu(Z) if activation == "relu" else torch.relu(Z) ** q
    F = sigma.sum(dim=(1, 3)) / m  # (2, n)
    f = F[0] - F[1]
    # log(1 + e^{-z}) exactly (torch's softplus switches to the identity above 20, whose slope 1 differs from the
    # exact sigmoid by e^{-20}: too coarse for a 1e-10 comparison)
    return (weights * torch.logaddexp(torch.zeros_like(f), -labels * f)).sum()


def autograd_grad(W, X, labels, weights, activation, q=3.0) -> torch.Tensor:
    W = W.detach().clone().requires_grad_(True)
    loss = autograd_loss(W, X, labels, weights, activation, q)
    (g,) = torch.autograd.grad(loss, W)
    return g


def comparable_metrics(metrics: dict, drop_test: bool = False) -> dict:
    out = {}
    for k, v in metrics.items():
        if k == "wall_s":
            continue
        if drop_test and "test_error" in k:
            continue
        out[k] = float(v)
    return out


def assert_results_close(a, b, rtol=0.0, atol=1e-6, drop_test=False, what=""):
    """Metrics and trajectories of two RunResults agree (NaN == NaN, inf == inf)."""
    ma, mb = comparable_metrics(a.metrics, drop_test), comparable_metrics(b.metrics, drop_test)
    assert ma.keys() == mb.keys(), what
    for k in ma:
        np.testing.assert_allclose(ma[k], mb[k], rtol=rtol, atol=atol, err_msg=f"{what} metric {k}")
    assert a.trajectory.keys() == b.trajectory.keys(), what
    for k in a.trajectory:
        np.testing.assert_allclose(a.trajectory[k], b.trajectory[k], rtol=rtol, atol=atol,
                                   err_msg=f"{what} trajectory {k}")
    assert a.coefficients.keys() == b.coefficients.keys(), what
    for k in a.coefficients:
        np.testing.assert_allclose(a.coefficients[k], b.coefficients[k], rtol=rtol, atol=atol,
                                   err_msg=f"{what} coefficients {k}")


def assert_same_with_meta_default(configs) -> None:
    """A CPU stand-in for a CUDA run: with torch's default device set to ``meta``, a tensor made without
    ``device=`` lands on ``meta``, where mixing it with the run's CPU tensors raises and reading it back gives no
    numbers. The run must then match the ordinary run exactly (every metric, trajectory and coefficient), which
    holds only if every tensor is made on the run's device."""
    import math

    from simulations import simulate

    expected = simulate(configs, device="cpu", save_coefficients=True)
    torch.set_default_device("meta")
    try:
        got = simulate(configs, device="cpu", save_coefficients=True)
    finally:
        torch.set_default_device(None)
    assert torch.empty(1).device.type == "cpu"
    for e, g in zip(expected, got):
        assert g.metrics.keys() == e.metrics.keys()
        for k, v in e.metrics.items():
            if k != "wall_s":
                assert g.metrics[k] == v or (math.isnan(v) and math.isnan(g.metrics[k])), k
        assert g.trajectory.keys() == e.trajectory.keys() and g.coefficients.keys() == e.coefficients.keys()
        for k, v in [*e.trajectory.items(), *e.coefficients.items()]:
            np.testing.assert_array_equal({**g.trajectory, **g.coefficients}[k], v, err_msg=k)
