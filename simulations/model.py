"""The two-layer CNN of spec §2, written once over per-patch pre-activations and shared by both backends.

Shapes: ``C`` configurations, filters indexed ``(j, r)`` with j = +1 at index 0 and j = -1 at index 1, ``n`` samples,
``P`` patches (patch 0 is the signal patch). Pre-activations ``Z[c, j, r, i, p] = <w_{j,r}, x_i^{(p)}>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SIGN_J = (1.0, -1.0)  # j for filter-set index 0 and 1


@dataclass(frozen=True)
class Activation:
    """``relu``: sigma(z) = max(0, z); ``polyrelu``: sigma(z) = max(0, z)^q (Cao et al.)."""

    name: str
    q: torch.Tensor | float = 1.0  # per configuration, shape (C, 1, 1, 1, 1) for polyrelu

    def value(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(z)
        return torch.relu(z) ** self.q

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return (z > 0).to(z.dtype)
        return self.q * torch.relu(z) ** (self.q - 1)


def network_output(act: Activation, preacts: torch.Tensor, noise_multiplicity: float = 1.0) -> torch.Tensor:
    """``f(W, x_i) = (1/m) sum_{r,p} [sigma(<w_{+1,r}, x^{(p)}>) - sigma(<w_{-1,r}, x^{(p)}>)]`` → (C, n).

    ``noise_multiplicity`` weights the noise patches (P-1 when a sample's noise patches are one shared vector and
    ``preacts`` holds it once)."""
    values = act.value(preacts)
    m = preacts.shape[2]
    per_patch = values.sum(dim=2)  # (C, 2, n, P)
    if noise_multiplicity != 1.0:
        per_patch = torch.cat([per_patch[..., :1], noise_multiplicity * per_patch[..., 1:]], dim=-1)
    per_set = per_patch.sum(dim=-1) / m  # (C, 2, n)
    return per_set[:, 0] - per_set[:, 1]


def logistic_loss(margin: torch.Tensor) -> torch.Tensor:
    """``l(z) = log(1 + exp(-z))``."""
    return torch.nn.functional.softplus(-margin)


def logistic_derivative(margin: torch.Tensor) -> torch.Tensor:
    """``l'(z) = -1 / (1 + exp(z))``."""
    return -torch.sigmoid(-margin)


def loss_and_patch_coefficients(act: Activation, preacts: torch.Tensor, labels: torch.Tensor,
                                sample_weights: torch.Tensor, noise_multiplicity: float = 1.0):
    """Weighted logistic loss ``L = sum_i a_i l(y_i f(x_i))`` and its gradient factors per filter and patch.

    The gradient (spec §2, [derived]) is ``dL/dw_{j,r} = sum_{i,p} coef[j,r,i,p] x_i^{(p)}`` with
    ``coef[j,r,i,p] = a_i l'_i y_i j sigma'(<w_{j,r}, x_i^{(p)}>) / m`` (times the noise multiplicity for shared
    noise patches). Every objective of the project (GD, SGD batches, NegGrad's ``alpha L(R) - (1-alpha) L(F)``,
    random labels) is such a weighted sum with per-sample weights ``a`` and labels ``y``.

    Returns ``(loss (C,), per-sample loss (C, n), output f (C, n), coef (C, 2, m, n, P))``.
    """
    out = network_output(act, preacts, noise_multiplicity)
    margin = labels * out
    per_sample = logistic_loss(margin)
    loss = (sample_weights * per_sample).sum(dim=1)
    m = preacts.shape[2]
    factor = sample_weights * logistic_derivative(margin) * labels / m  # (C, n)
    sign_j = preacts.new_tensor(SIGN_J).view(1, 2, 1, 1, 1)
    coef = act.derivative(preacts) * factor[:, None, None, :, None] * sign_j
    if noise_multiplicity != 1.0:
        coef = torch.cat([coef[..., :1], noise_multiplicity * coef[..., 1:]], dim=-1)
    return loss, per_sample, out, coef


class PatchLayout:
    """Maps between per-patch quantities and the basis B = {mu, xi_1, ..., xi_N} of spec §5b.

    Patch (i, 0) is ``yhat_i mu`` (basis 0 with sign yhat_i); noise patch (i, p) is basis vector ``1 + i`` when a
    sample's noise patches are shared (stored once, ``P_eff = 2``), else ``1 + i (P-1) + (p-1)``.
    """

    def __init__(self, n: int, P: int, shared_noise: bool, yhat: torch.Tensor):
        self.n, self.P, self.shared = n, P, shared_noise
        self.stored_patches = 2 if shared_noise else P
        self.noise_multiplicity = float(P - 1) if shared_noise else 1.0
        self.n_noise = n if shared_noise else n * (P - 1)
        self.yhat = yhat  # (C, n)

    def expand(self, basis_values: torch.Tensor) -> torch.Tensor:
        """(C, 2, m, K) values on the basis → (C, 2, m, n, P_stored) per-patch values."""
        C, _, m, _ = basis_values.shape
        signal = basis_values[..., :1] * self.yhat[:, None, None, :]  # (C, 2, m, n)
        noise = basis_values[..., 1:].reshape(C, 2, m, self.n, self.stored_patches - 1)
        return torch.cat([signal[..., None], noise], dim=-1)

    def collect(self, patch_values: torch.Tensor) -> torch.Tensor:
        """(C, 2, m, n, P_stored) per-patch coefficients → (C, 2, m, K) on the basis (sums shared patches)."""
        C, _, m = patch_values.shape[:3]
        signal = (patch_values[..., 0] * self.yhat[:, None, None, :]).sum(dim=-1, keepdim=True)
        noise = patch_values[..., 1:].reshape(C, 2, m, self.n_noise)
        return torch.cat([signal, noise], dim=-1)
