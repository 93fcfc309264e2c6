"""The two-layer CNN of docs/model.md#network, written once over per-patch pre-activations and shared by both backends.

Shapes: ``C`` configurations, filters indexed ``(j, r)`` with j = +1 at index 0 and j = -1 at index 1, ``n`` samples,
``P`` patches (patch 0 is the signal patch). Pre-activations ``Z[c, j, r, i, p] = <w_{j,r}, x_i^{(p)}>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

SIGN_J = (1.0, -1.0)  # j for filter-set index 0 and 1


@dataclass(frozen=True)
class Activation:
    """``relu``: sigma(z) = max(0, z); ``polyrelu``: sigma(z) = max(0, z)^q (Cao et al.).

    It also carries the other untrained part of the network, the second layer: ``f = output_scale * sum_{r,p}
    [sigma(<w_{+1,r}, x^{(p)}>) - sigma(<w_{-1,r}, x^{(p)}>)]``; ``None`` is the 1/m of docs/model.md#network (a mean
    over patches or no 1/m, as in the (K) authors' script, is another scale)."""

    name: str
    q: torch.Tensor | float = 1.0  # per configuration, shape (C,) for polyrelu
    output_scale: float | None = None

    def select(self, index: torch.Tensor) -> Activation:
        """The activation of a subset of configurations (polyrelu carries one q per configuration)."""
        if isinstance(self.q, torch.Tensor):
            return replace(self, q=self.q[index])
        return self

    def readout(self, m: int) -> float:
        """The second-layer weight magnitude: ``1/m`` (docs/model.md#network) unless ``output_scale`` is set."""
        return 1.0 / m if self.output_scale is None else self.output_scale

    def _q(self, z: torch.Tensor):
        if isinstance(self.q, torch.Tensor):
            return self.q.view(-1, *([1] * (z.dim() - 1)))
        return self.q

    def value(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(z)
        return torch.relu(z) ** self._q(z)

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return torch.relu(z).sign_()  # 1(z > 0); several times faster than a comparison mask on CPU
        q = self._q(z)
        return q * torch.relu(z) ** (q - 1)


class SignalOnBasis(NamedTuple):
    """Signal pre-activations kept on the basis: ``<w_{j,r}, yhat_i mu> = yhat_i a_{j,r}`` with ``a`` (C, 2, m).

    Every signal patch is +mu or -mu, so sums over samples reduce to two sums (yhat = +1 and yhat = -1) and the
    signal part costs O(m + n) instead of O(m n) per configuration (gram backend)."""

    value: torch.Tensor  # (C, 2, m)
    yhat: torch.Tensor  # (C, n)


def _signal_sum(act: Activation, signal_pre) -> torch.Tensor:
    """``sum_r sigma(<w_{j,r}, signal patch of i>)`` → (C, 2, n)."""
    if isinstance(signal_pre, SignalOnBasis):
        plus = act.value(signal_pre.value).sum(dim=2)[..., None]
        minus = act.value(-signal_pre.value).sum(dim=2)[..., None]
        positive = (signal_pre.yhat[:, None, :] + 1) * 0.5  # 1 where yhat = +1, 0 where yhat = -1
        return minus + positive * (plus - minus)
    return act.value(signal_pre).sum(dim=2)


def network_output(act: Activation, signal_pre: torch.Tensor, noise_pre: torch.Tensor,
                   noise_multiplicity: float = 1.0, noise_values: torch.Tensor | None = None) -> torch.Tensor:
    """``f(W, x_i) = (1/m) sum_{r,p} [sigma(<w_{+1,r}, x^{(p)}>) - sigma(<w_{-1,r}, x^{(p)}>)]`` → (C, n)
    (``act.output_scale`` in place of 1/m when set).

    ``signal_pre`` (C, 2, m, n) holds the signal patch, ``noise_pre`` (C, 2, m, n, P_n) the stored noise patches;
    ``noise_multiplicity`` weights them (P-1 when a sample's noise patches are one shared vector stored once)."""
    m = noise_pre.shape[2]
    noise_values = act.value(noise_pre) if noise_values is None else noise_values
    noise = noise_values.sum(dim=(2, 4))  # (C, 2, n)
    per_set = _signal_sum(act, signal_pre) + (noise if noise_multiplicity == 1.0 else noise_multiplicity * noise)
    if act.output_scale is None:
        return (per_set[:, 0] - per_set[:, 1]) / m
    return (per_set[:, 0] - per_set[:, 1]) * act.output_scale


def logistic_loss(margin: torch.Tensor) -> torch.Tensor:
    """``l(z) = log(1 + exp(-z))``."""
    return torch.nn.functional.softplus(-margin)


def logistic_derivative(margin: torch.Tensor) -> torch.Tensor:
    """``l'(z) = -1 / (1 + exp(z))``."""
    return -torch.sigmoid(-margin)


def loss_and_patch_coefficients(act: Activation, signal_pre: torch.Tensor, noise_pre: torch.Tensor,
                                labels: torch.Tensor, sample_weights: torch.Tensor, noise_multiplicity: float = 1.0,
                                coef_scale: torch.Tensor | None = None):
    """Weighted logistic loss ``L = sum_i a_i l(y_i f(x_i))`` and its gradient factors per filter and patch.

    The gradient (docs/model.md#network, [derived]) is ``dL/dw_{j,r} = sum_{i,p} coef[j,r,i,p] x_i^{(p)}`` with
    ``coef[j,r,i,p] = a_i l'_i y_i j sigma'(<w_{j,r}, x_i^{(p)}>) / m`` (times the noise multiplicity for shared
    noise patches; ``act.output_scale`` in place of 1/m when set; a filter bias, being the weight of a constant
    coordinate 1 in every patch, gets ``sum_{i,p} coef[j,r,i,p]``).
    Every objective of the project (GD, SGD batches, NegGrad's ``alpha L(R) - (1-alpha) L(F)``,
    random labels) is such a weighted sum with per-sample weights ``a`` and labels ``y``.

    Returns ``(loss (C,), per-sample loss (C, n), output f (C, n), (coef_signal, coef_noise))`` with the shapes
    of the two pre-activation tensors; ``coef_scale`` (C,) multiplies the coefficients (a learning rate folded in
    where it is cheapest).
    """
    noise_values = act.value(noise_pre)
    out = network_output(act, signal_pre, noise_pre, noise_multiplicity, noise_values)
    margin = labels * out
    per_sample = logistic_loss(margin)
    loss = (sample_weights * per_sample).sum(dim=1)
    m = noise_pre.shape[2]
    factor = sample_weights * logistic_derivative(margin) * labels  # (C, n)
    factor = factor / m if act.output_scale is None else factor * act.output_scale
    if coef_scale is not None:
        factor = factor * coef_scale[:, None]
    sign_j = noise_pre.new_tensor(SIGN_J).view(1, 2, 1, 1)
    f_signal = factor[:, None, None, :] * sign_j  # (C, 2, 1, n)
    f_noise = (f_signal if noise_multiplicity == 1.0 else noise_multiplicity * f_signal)[..., None]
    derivative = noise_values.sign_() if act.name == "relu" else act.derivative(noise_pre)  # relu: reuse values
    coef_noise = derivative * f_noise
    if isinstance(signal_pre, SignalOnBasis):
        # on the basis: sum_i coef[j,r,i] yhat_i = j [s'(a) sum_{yhat=+1} factor - s'(-a) sum_{yhat=-1} factor]
        positive = (signal_pre.yhat + 1) * 0.5
        f_plus = (factor * positive).sum(dim=1)[:, None, None]
        f_minus = factor.sum(dim=1)[:, None, None] - f_plus
        a = signal_pre.value
        coef_signal = sign_j[..., 0] * (act.derivative(a) * f_plus - act.derivative(-a) * f_minus)  # (C, 2, m)
    else:
        coef_signal = act.derivative(signal_pre) * f_signal
    return loss, per_sample, out, (coef_signal, coef_noise)


class PatchLayout:
    """Maps between per-patch quantities and the basis B = {mu, xi_1, ..., xi_N} of docs/model.md#the-two-backends.

    Patch (i, 0) is ``yhat_i mu`` (basis 0 with sign yhat_i); noise patch (i, p) is basis vector ``1 + i`` when a
    sample's noise patches are shared (stored once), else ``1 + i (P-1) + (p-1)``. Per-patch quantities travel as
    a pair ``(signal (C, 2, m, n), noise (C, 2, m, n, P_n))``.
    """

    def __init__(self, n: int, P: int, shared_noise: bool, yhat: torch.Tensor):
        self.n, self.P, self.shared = n, P, shared_noise
        self.stored_patches = 2 if shared_noise else P
        self.noise_multiplicity = float(P - 1) if shared_noise else 1.0
        self.n_noise = n if shared_noise else n * (P - 1)
        self.yhat = yhat  # (C, n)

    def expand(self, basis_values: torch.Tensor):
        """(C, 2, m, K) values on the basis → per-patch pair (a view for the noise part)."""
        signal = SignalOnBasis(basis_values[..., 0], self.yhat)
        noise = basis_values[..., 1:].unflatten(-1, (self.n, self.stored_patches - 1))
        return signal, noise

    def collect(self, coef) -> torch.Tensor:
        """Per-patch pair of coefficients → (C, 2, m, K) on the basis (signal patches add up with sign yhat)."""
        coef_signal, coef_noise = coef
        C, _, m = coef_signal.shape[:3]
        out = coef_signal.new_empty(C, 2, m, 1 + self.n_noise)
        if coef_signal.dim() == 3:  # already on the basis (from SignalOnBasis)
            out[..., 0] = coef_signal
        else:
            out[..., 0] = (coef_signal * self.yhat[:, None, None, :]).sum(dim=-1)
        out[..., 1:] = coef_noise.flatten(-2)
        return out

    @staticmethod
    def join(pair) -> torch.Tensor:
        """Per-patch pair → one tensor (C, 2, m, n, P_s) with the signal patch first."""
        signal, noise = pair
        return torch.cat([signal[..., None], noise], dim=-1)
