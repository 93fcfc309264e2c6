"""One optimizer step over a batch of configurations, written once for both backends (docs/model.md#optimizers).

The simulator's SAM is a functional step over stacked filters; ``tests/test_sam.py`` checks it against a
hand-written autograd SAM step on the same network (plain, max, lambda, adaptive) and ``rho = 0`` ≡ GD.

    GD/SGD:   W ← W − η ∇L_I(W)
    SAM:      ε = ρ ∇L_I(W) / ||∇L_I(W)||_F      (Frobenius norm over all 2m filters of one configuration)
              W ← W − η [g + s λ (∇L_I(W + ε) − g)],   g = ∇L_I(W)
              s = +1 ("min", λ = 1 is SAM), s = −1 ("max", λ = 1 gives 2g − g(W+ε): sharpness maximisation)
    ASAM:     ε = ρ |w|² ⊙ g / || |w| ⊙ g ||          (weights backend only)

``rho = 0`` makes ε = 0, hence g(W+ε) = g bit for bit and the step is GD/SGD exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Activation, loss_and_patch_coefficients


@dataclass
class StepInfo:
    loss: torch.Tensor  # (C,) objective at W
    per_sample_loss: torch.Tensor  # (C, n)
    outputs: torch.Tensor  # (C, n)
    perturbed_preacts: tuple  # (signal, noise) pre-activations at the (SAM-perturbed) point
    basis_step: torch.Tensor | None  # weights backend: (C, 2, m, K) change of the basis coefficients, None if the
    # update left span B (gram backend: None, its state is the coefficient vector)


def _per_config(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.dim() - 1)))


def sam_step(backend, act: Activation, state: torch.Tensor, labels: torch.Tensor, sample_weights: torch.Tensor,
             lr: torch.Tensor, rho: torch.Tensor, mix: torch.Tensor | None = None, adaptive: bool = False,
             filter_mask: torch.Tensor | None = None, coordinate_mask: torch.Tensor | None = None,
             objective=loss_and_patch_coefficients):
    """Return ``(new_state, StepInfo)`` for the objective ``sum_i a_i l(y_i f(x_i))``.

    ``lr``, ``rho`` and ``mix = s * lambda`` are per configuration (C,); ``rho`` all zero skips the second pass.
    ``filter_mask`` (C, 2, m) or ``coordinate_mask`` (weights backend: same shape as the state) restrict the
    final update (Sharp MinMax); the perturbation itself uses the full gradient. ``objective`` maps pre-activations
    to (loss, per-sample loss, outputs, gradient factors) with the signature of
    :func:`~simulations.model.loss_and_patch_coefficients` (the tests swap in a quadratic for a closed form).
    """
    mult = backend.layout.noise_multiplicity
    basis = backend.basis_preacts(state)
    preacts = backend.expand(basis)
    # the learning rate is folded into the gradient factors (SAM's perturbation is scale-free) unless a zero rate
    # would erase the direction SAM needs
    scale = lr if bool((lr > 0).all()) else None
    loss, per_sample, outputs, coef = objective(act, *preacts, labels, sample_weights, mult, coef_scale=scale)
    perturbed = preacts
    if bool((rho > 0).any()):
        if adaptive:
            grad = backend.direction(coef)
            scaled = state.abs() * grad
            norm = torch.sqrt((scaled * scaled).sum(dim=(1, 2, 3)))
            factor = torch.where(norm > 0, rho / torch.where(norm > 0, norm, 1.0), 0.0)
            lin_eps = backend.lin(_per_config(factor, state) * state * state * grad)
        else:
            lin_grad, sq_norm = backend.gradient_lin_and_sq_norm(coef)
            norm = torch.sqrt(sq_norm)
            factor = torch.where(norm > 0, rho / torch.where(norm > 0, norm, 1.0), 0.0)
            lin_eps = _per_config(factor, lin_grad) * lin_grad
        perturbed = backend.expand(basis + lin_eps)
        _, _, _, coef_eps = objective(act, *perturbed, labels, sample_weights, mult, coef_scale=scale)
        mix = torch.ones_like(rho) if mix is None else mix
        coef = tuple(a + _per_config(mix, a) * (b - a) for a, b in zip(coef, coef_eps))
    if filter_mask is not None:
        signal_mask = filter_mask if coef[0].dim() == 3 else filter_mask[..., None]
        coef = (coef[0] * signal_mask, coef[1] * filter_mask[..., None, None])
    if scale is None:
        coef = tuple(c * _per_config(lr, c) for c in coef)
    new_state, basis_step = backend.descend(state, coef, coordinate_mask)
    return new_state, StepInfo(loss, per_sample, outputs, perturbed, basis_step)
