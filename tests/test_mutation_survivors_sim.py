"""Defining properties of ``simulations/optim.py`` (the functional SAM step) and ``simulations/unlearning.py`` (the
unlearning objectives) that the mutation runs of docs/testing.md found unpinned, each with hand-computed values.

The SAM step is checked on a quadratic ``L(W) = 1/2 sum_f w_f^T A_c w_f`` passed through ``sam_step``'s objective
hook, on a weights backend whose patches are the standard basis of R^d (so pre-activations *are* the weights): the
gradient is ``g = W A_c`` and every quantity of docs/model.md#optimizers has a closed form,

    eps = rho g / ||g||_F                (ASAM: rho |w|^2 g / || |w| g ||_F),  eps = 0 when the norm is 0
    W'  = W - lr [g + mix (g(W + eps) - g)]            restricted to the masked filters / coordinates

and the gradient's norm can be put below or above 1 at will (a threshold of 1 in place of 0 is then visible).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import full_patches, joined, tiny

from simulations.backends import WeightsBackend
from simulations.data import explicit_data
from simulations.engine import GroupRun
from simulations.model import PatchLayout
from simulations.optim import sam_step

F64 = torch.float64
N, M = 3, 2  # samples, filters per class: d = 2 N stored patches (signal + shared noise) = the basis of R^d
D = 2 * N


def _t(*values):
    return torch.tensor(values, dtype=F64)


def _quadratic(configs=1, scale=1.0, seed=0):
    """(backend, W (C, 2, M, D), A (C, D, D), objective): ``L_c(W) = 1/2 sum_f w_f^T A_c w_f``, one A per config."""
    g = torch.Generator().manual_seed(seed)
    layout = PatchLayout(N, 2, True, torch.ones(configs, N, dtype=F64))
    X = torch.eye(D, dtype=F64).expand(configs, D, D).contiguous()
    W = scale * torch.randn(configs, 2, M, D, generator=g, dtype=F64)
    backend = WeightsBackend(layout, X, W.clone(), torch.ones(configs, dtype=F64),
                             torch.ones(configs, N, dtype=F64))
    B = torch.randn(configs, D, D, generator=g, dtype=F64)
    A = B @ B.transpose(1, 2) + 0.5 * torch.eye(D, dtype=F64)

    def objective(act, signal_pre, noise_pre, labels, weights, mult, coef_scale=None):
        C = signal_pre.shape[0]
        w = torch.cat([signal_pre[..., None], noise_pre], dim=-1).reshape(C, 2, M, D)  # = W
        grad = w @ A[:, None]
        loss = 0.5 * (grad * w).sum(dim=(1, 2, 3))
        if coef_scale is not None:
            grad = grad * coef_scale.view(-1, 1, 1, 1)
        patches = grad.view(C, 2, M, N, 2)
        return loss, loss[:, None].expand(C, N), loss[:, None].expand(C, N), (patches[..., 0], patches[..., 1:])

    return backend, W, A, objective


def _closed_form(W, A, lr, rho, mix, adaptive=False):
    """Per configuration: (new W, eps) of docs/model.md#optimizers for the quadratic."""
    news, epss = [], []
    for c in range(W.shape[0]):
        w, a = W[c], A[c]
        g = w @ a
        if adaptive:
            norm = torch.linalg.norm(w.abs() * g)
            eps = rho[c] * w.abs() ** 2 * g / norm if norm > 0 else torch.zeros_like(w)
        else:
            norm = torch.linalg.norm(g)
            eps = rho[c] * g / norm if norm > 0 else torch.zeros_like(w)
        g_eps = (w + eps) @ a
        news.append(w - lr[c] * (g + mix[c] * (g_eps - g)))
        epss.append(eps)
    return torch.stack(news), torch.stack(epss)


def _step(backend, W, objective, lr, rho, mix=None, **kwargs):
    new, info = sam_step(backend, None, W, torch.ones(W.shape[0], N, dtype=F64), torch.ones(W.shape[0], N, dtype=F64),
                         lr, rho, mix, objective=objective, **kwargs)
    perturbed = joined(info.perturbed_preacts).reshape(W.shape)  # pre-activations at W + eps = W + eps itself
    return new, perturbed, info


def _close(a, b):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


# ================================================================================================ simulations/optim.py
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("scale", [0.02, 20.0])
def test_sam_eps_has_length_rho_along_the_normalised_gradient_whatever_its_norm(adaptive, scale):
    """eps = rho g/||g|| (ASAM: rho |w|^2 g/|| |w| g ||) for a gradient norm far below 1 and far above 1: the
    normalisation divides by the norm itself (not by 1, not only above a threshold), and the step is
    W - lr [g + mix (g(W + eps) - g)]. Plain SAM's eps has length exactly rho."""
    backend, W, A, objective = _quadratic(scale=scale)
    g = W[0] @ A[0]
    norm = torch.linalg.norm(W[0].abs() * g if adaptive else g)
    assert (norm < 0.5) if scale < 1 else (norm > 2), float(norm)  # the two sides of 1
    new, perturbed, _ = _step(backend, W, objective, _t(0.05), _t(0.3), _t(1.0), adaptive=adaptive)
    expected, eps = _closed_form(W, A, _t(0.05), _t(0.3), _t(1.0), adaptive)
    _close(perturbed, W + eps)
    _close(new, expected)
    if not adaptive:
        assert float(torch.linalg.norm(perturbed - W)) == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_on_a_batch_uses_each_configurations_own_norm_rate_radius_and_sign(adaptive):
    """Two configurations with different weights (gradient norms 0.03 and 30), objectives, rates, radii and mix
    (SAM-min and sharpness-max): each row is its own closed form, so every per-configuration factor is broadcast
    over its own row only."""
    backend, W, A, objective = _quadratic(configs=2)
    W = W * torch.tensor([0.01, 10.0], dtype=F64).view(2, 1, 1, 1)
    lr, rho, mix = _t(0.05, 0.02), _t(0.3, 0.7), _t(1.0, -0.5)
    new, perturbed, _ = _step(backend, W, objective, lr, rho, mix, adaptive=adaptive)
    expected, eps = _closed_form(W, A, lr, rho, mix, adaptive)
    _close(perturbed, W + eps)
    _close(new, expected)


def test_sam_step_defaults_are_plain_sam_with_mix_one():
    """Without ``mix`` the step is SAM (mix = +1) and without ``adaptive`` it is not ASAM."""
    backend, W, A, objective = _quadratic()
    default, perturbed, _ = _step(backend, W, objective, _t(0.05), _t(0.3))
    expected, eps = _closed_form(W, A, _t(0.05), _t(0.3), _t(1.0))
    _close(default, expected)
    _close(perturbed, W + eps)
    asam, _ = _closed_form(W, A, _t(0.05), _t(0.3), _t(1.0), adaptive=True)
    assert not torch.allclose(default, asam, rtol=0, atol=1e-9)


def test_sam_step_with_zero_rate_does_not_move_but_perturbs_along_the_true_gradient():
    """lr = 0 (alone, or next to a positive rate in a batch): that row does not move, its eps is still rho g/||g||
    (a zero rate must not erase SAM's direction), and the other row takes its full closed-form step."""
    backend, W, A, objective = _quadratic(configs=2)
    lr, rho, mix = _t(0.0, 0.05), _t(0.3, 0.3), _t(1.0, -1.0)
    new, perturbed, _ = _step(backend, W, objective, lr, rho, mix)
    expected, eps = _closed_form(W, A, lr, rho, mix)
    assert torch.equal(new[0], W[0])
    _close(new[1], expected[1])
    _close(perturbed, W + eps)
    assert float(torch.linalg.norm(eps[0])) == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_with_rho_zero_is_gradient_descent_and_perturbs_nothing(adaptive):
    """rho = 0 for every configuration: W - lr g exactly, and the recorded pre-activations are those at W."""
    backend, W, A, objective = _quadratic(configs=2)
    lr = _t(0.05, 0.1)
    new, perturbed, _ = _step(backend, W, objective, lr, _t(0.0, 0.0), _t(1.0, -1.0), adaptive=adaptive)
    assert torch.equal(perturbed, W)
    _close(new, W - lr.view(2, 1, 1, 1) * (W @ A[:, None]))


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_at_a_zero_gradient_has_zero_eps_and_stays(adaptive):
    """g = 0 (W = 0 is the minimum of the quadratic): eps = 0, no NaN from 0/0, the state does not move."""
    backend, W, A, objective = _quadratic()
    zero = torch.zeros_like(W)
    new, perturbed, _ = _step(backend, zero, objective, _t(0.05), _t(0.3), _t(1.0), adaptive=adaptive)
    assert torch.equal(new, zero) and torch.equal(perturbed, zero)


def test_sam_step_masks_restrict_the_update_but_not_the_perturbation():
    """filter_mask (C, 2, m) keeps whole filters, coordinate_mask (shape of W) single coordinates: the update is the
    unmasked closed-form step times the mask, while eps is still taken from the full gradient."""
    backend, W, A, objective = _quadratic(configs=2)
    lr, rho, mix = _t(0.05, 0.1), _t(0.3, 0.2), _t(1.0, -1.0)
    expected, eps = _closed_form(W, A, lr, rho, mix)
    full_step = expected - W
    filter_mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]], dtype=F64)
    new, perturbed, _ = _step(backend, W, objective, lr, rho, mix, filter_mask=filter_mask)
    _close(new - W, full_step * filter_mask[..., None])
    _close(perturbed, W + eps)
    coord = (torch.rand(W.shape, generator=torch.Generator().manual_seed(5)) < 0.5).to(F64)
    new, perturbed, info = _step(backend, W, objective, lr, rho, mix, coordinate_mask=coord)
    _close(new - W, full_step * coord)
    _close(perturbed, W + eps)
    assert info.basis_step is None


def _model(backend, **overrides):
    cfg = tiny(backend=backend, d=25, n=8, m=4, sigma_0=0.3, label_flip=0.25, **overrides)
    run = GroupRun([cfg])
    g = torch.Generator().manual_seed(1)
    W = run.backend.init_state() + 0.2 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    weights = torch.full((1, cfg.n), 1.0 / cfg.n, dtype=F64)
    weights[0, :2] = -0.05
    return cfg, run, W, weights


def test_gram_sam_step_filter_mask_moves_only_the_masked_filters():
    """Gram backend (its signal coefficient per filter is 3-d): the masked step is the unmasked one on the kept
    filters, for all their coefficients, and exactly no step on the others."""
    cfg, run, W, weights = _model("gram")
    args = (run.backend, run.act, W, run.labels, weights, _t(0.7), _t(0.4), _t(-1.0))
    plain, _ = sam_step(*args)
    mask = torch.zeros(W.shape[:3], dtype=F64)
    mask[0, 0, 1] = mask[0, 1, 0] = mask[0, 1, 3] = 1.0
    masked, _ = sam_step(*args, filter_mask=mask)
    _close(masked - W, (plain - W) * mask[..., None])
    assert float((plain - W).abs().sum(dim=-1)[mask == 0].min()) > 0  # each frozen filter would have moved


def test_step_info_reports_loss_per_sample_loss_outputs_at_w_and_the_basis_step():
    """StepInfo: the weighted objective, each sample's logistic loss log(1 + e^{-y f}) and the outputs f, all at W
    (not at W + eps), computed here from scratch; and the update written on the basis {mu, sigma_p xi_i}."""
    cfg, run, W, weights = _model("weights")
    data = explicit_data(cfg)
    X = full_patches(cfg, data)
    new, info = sam_step(run.backend, run.act, W, run.labels, weights, _t(0.7), _t(0.4), _t(1.0))
    Z = torch.einsum("jrd,ipd->jrip", W[0], X)
    F = torch.relu(Z).sum(dim=(1, 3)) / cfg.m
    f = F[0] - F[1]
    per_sample = torch.logaddexp(torch.zeros_like(f), -run.labels[0] * f)
    _close(info.outputs[0], f)
    _close(info.per_sample_loss[0], per_sample)
    np.testing.assert_allclose(float(info.loss[0]), float((weights[0] * per_sample).sum()), rtol=1e-12)
    basis = torch.zeros((cfg.n + 1, cfg.d), dtype=F64)
    basis[0, 0] = cfg.signal_strength
    basis[1:] = cfg.sigma_p * torch.as_tensor(data.noise)
    _close(new[0] - W[0], torch.einsum("jrk,kd->jrd", info.basis_step[0], basis))
    assert float(info.basis_step.abs().max()) > 1e-3


# =========================================================================================== simulations/unlearning.py
def test_register_stores_the_method_under_its_name_and_returns_the_function_unchanged():
    """``@register(name, uses, description)`` puts ``UnlearningMethod(name, fn, uses, description)`` in METHODS and
    hands the function back as it was (the six methods are registered at import, before any mutant is active, so
    the decorator is called here)."""
    from simulations import unlearning
    from simulations.unlearning import METHODS, UnlearningMethod, register

    def probe(run, state):
        return state

    try:
        assert register("_probe", ("alpha", "unlearn_lr"), "a probe objective")(probe) is probe
        assert METHODS["_probe"] == UnlearningMethod("_probe", probe, ("alpha", "unlearn_lr"), "a probe objective")
    finally:
        METHODS.pop("_probe", None)
    functions = dict(neggrad="neggrad", ga="gradient_ascent", ft="fine_tune", rl="random_label", retrain="retrain",
                     sharp_minmax="sharp_minmax")
    assert {name: m.run for name, m in METHODS.items()} == {k: getattr(unlearning, v) for k, v in functions.items()}


def test_flip_relabels_every_forget_sample_to_minus_y_and_uniform_is_a_coin_per_sample():
    """forget_target=flip: every one of 30 forget samples gets exactly -y, every retain sample keeps y. uniform: +1
    where hash_uniform(STREAM_RELABEL, key, 0, n) < 1/2, else -1 — which agrees with -y on some forget samples and
    not on others (so flip is not the coin, and the coin is not flip)."""
    from simulations.data import STREAM_RELABEL, hash_uniform
    from simulations.unlearning import relabelled

    cfg = tiny(unlearn_method="rl", forget_target="flip", n=40, forget_size=30)
    run = GroupRun([cfg])
    forget, y = run.forget, run.labels
    assert int(forget.sum()) == 30
    flipped = relabelled(run)
    assert flipped.dtype == y.dtype and torch.equal(flipped, torch.where(forget, -y, y))
    run_u = GroupRun([cfg.replace(forget_target="uniform")])
    assert torch.equal(run_u.forget, forget) and torch.equal(run_u.labels, y)
    u = hash_uniform(STREAM_RELABEL, run_u.keys, 0, cfg.n)
    coin = torch.as_tensor(np.where(u < 0.5, 1.0, -1.0), dtype=F64)
    uniform = relabelled(run_u)
    assert torch.equal(uniform, torch.where(forget, coin, y))
    agrees = (uniform == -y)[forget]
    assert bool(agrees.any()) and not bool(agrees.all())
