"""Two exact representations of the filters behind one interface (docs/model.md#the-two-backends).

``WeightsBackend`` — the reference: filters ``W`` of shape (C, 2, m, d), patches ``X`` of shape (C, n*P_s, d); every
step is a batched matmul over C configurations of one shape.

``GramBackend`` — the exact reduced simulation: ``w_{j,r} = w0_{j,r} + sum_k c_{j,r,k} b_k`` on the basis
B = {mu, xi_1, ..., xi_N}; it needs only the Gram ``G = B B^T``, the cross-Gram ``H = W0 B^T`` and ``W0 W0^T``, so its
cost does not depend on d, and configurations of different d run in one batch.

Both expose pre-activations on their "basis" (the patches for weights, B for gram), the map from per-patch gradient
factors to a direction in state space, the squared Frobenius norm of a direction in R^{2m x d}, and the linear
change of basis pre-activations along a direction. Optimizers in :mod:`simulations.optim` are written once on top.

A trainable filter bias (``filter_bias``) is the weight of one more coordinate, orthogonal to R^d, that is 1 in every
patch: the weights backend appends it to every filter and patch (state (C, 2, m, d+1)); the gram backend appends it
to the basis as a unit vector orthogonal to B (state (C, 2, m, K+1)). Gradients, SAM's Frobenius norm and the
pre-activations then include the bias with no other change.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import ExplicitData, StandardData, TestDraws
from .model import Activation, PatchLayout, network_output


class GramBackend:
    name = "gram"

    def __init__(self, layout: PatchLayout, G: torch.Tensor, H: torch.Tensor, Q0: torch.Tensor,
                 init_e1: torch.Tensor, basis_e1: torch.Tensor, filter_bias: bool = False):
        self.layout = layout
        self.G = G  # (C, K, K); (C, K+1, K+1) with the bias coordinate last (1 on its diagonal, 0 elsewhere)
        self.H = H  # (C, 2, m, K); (C, 2, m, K+1) with the initial biases last
        self.Q0 = Q0  # (C, 2m, 2m)
        self.init_e1 = init_e1  # (C, 2, m) <w0, e_1>
        self.basis_e1 = basis_e1  # (C, K) <b_k, e_1>
        self.filter_bias = filter_bias
        self.K = basis_e1.shape[1]  # |B| = 1 + N, without the bias coordinate
        self.shape = tuple(H.shape)

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(cls, data: list[StandardData], signal: np.ndarray, sigma_p: np.ndarray, sigma_0: np.ndarray,
              layout: PatchLayout, dtype: torch.dtype, retrain_init: bool = False,
              device: str | torch.device = "cpu") -> GramBackend:
        """Scale unit-Gram data per configuration. ``data[c]`` may be shared between configurations."""
        n_noise, m = data[0].n_noise, data[0].m
        cache: dict[int, np.ndarray] = {}
        unit = np.stack([cache.setdefault(id(dc), dc.gram()) for dc in data])  # (C, k, k)
        first = np.stack([dc.first for dc in data])  # (C, k)
        noise = slice(0, n_noise)
        init = slice(n_noise + (2 * m if retrain_init else 0), n_noise + (4 * m if retrain_init else 2 * m))
        s, sp, s0 = (np.asarray(v, dtype=np.float64)[:, None] for v in (signal, sigma_p, sigma_0))
        C, K = len(data), n_noise + 1
        G = np.empty((C, K, K))
        G[:, 0, 0] = (s * s)[:, 0]
        G[:, 0, 1:] = s * sp * first[:, noise]
        G[:, 1:, 0] = G[:, 0, 1:]
        G[:, 1:, 1:] = (sp * sp)[:, :, None] * unit[:, noise, noise]
        H = np.empty((C, 2 * m, K))
        H[:, :, 0] = s0 * s * first[:, init]
        H[:, :, 1:] = (s0 * sp)[:, :, None] * unit[:, init, noise]
        Q0 = (s0 * s0)[:, :, None] * unit[:, init, init]
        basis_e1 = np.concatenate([s, sp * first[:, noise]], axis=1)
        init_e1 = s0 * first[:, init]
        bias = data[0].bias is not None
        if bias:  # the bias coordinate: a unit vector orthogonal to B, <w0, e_bias> = initial bias
            G = np.pad(G, ((0, 0), (0, 1), (0, 1)))
            G[:, K, K] = 1.0
            rows = slice(2 * m, 4 * m) if retrain_init else slice(0, 2 * m)
            H = np.concatenate([H, (s0 * np.stack([dc.bias[rows] for dc in data]))[..., None]], axis=2)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(layout, t(G), t(H).view(C, 2, m, H.shape[-1]), t(Q0), t(init_e1).view(C, 2, m), t(basis_e1),
                   filter_bias=bias)

    def with_init(self, other: GramBackend) -> GramBackend:
        """Same data, another set of initial filters (for retraining from scratch)."""
        return GramBackend(self.layout, self.G, other.H, other.Q0, other.init_e1, self.basis_e1, self.filter_bias)

    def select(self, index) -> GramBackend:
        """The backend of a subset of configurations (``index``: a slice or index tensor)."""
        return GramBackend(self.layout, self.G[index], self.H[index], self.Q0[index], self.init_e1[index],
                           self.basis_e1[index], self.filter_bias)

    # ---------------------------------------------------------------- dynamics
    def init_state(self) -> torch.Tensor:
        return self.H.new_zeros(self.shape)

    def basis_preacts(self, state: torch.Tensor) -> torch.Tensor:
        C, _, m, K = self.shape
        return torch.baddbmm(self.H.view(C, 2 * m, K), state.reshape(C, 2 * m, K), self.G).view(self.shape)

    def lin(self, direction: torch.Tensor) -> torch.Tensor:
        C, _, m, K = self.shape
        return torch.bmm(direction.reshape(C, 2 * m, K), self.G).view(self.shape)

    def expand(self, basis_values: torch.Tensor):
        if not self.filter_bias:
            return self.layout.expand(basis_values)
        # every patch is b + e_bias: add the bias to each pre-activation; the signal patch then is no longer odd in
        # yhat, so it leaves the basis (SignalOnBasis) for per-sample values
        bias = basis_values[..., self.K]
        signal, noise = self.layout.expand(basis_values[..., :self.K])
        signal = signal.value[..., None] * signal.yhat[:, None, None, :] + bias[..., None]
        return signal, noise + bias[..., None, None]

    def direction(self, coef) -> torch.Tensor:
        on_basis = self.layout.collect(coef)
        if not self.filter_bias:
            return on_basis
        bias = coef[0].sum(dim=-1) + coef[1].sum(dim=(-2, -1))  # the constant coordinate 1 of every patch
        return torch.cat([on_basis, bias[..., None]], dim=-1)

    def coefficients_on_basis(self, state: torch.Tensor) -> torch.Tensor:
        """The state's coefficients on B (without the bias coordinate): what the coefficient tracker follows."""
        return state[..., :self.K] if self.filter_bias else state

    def sq_norm(self, direction: torch.Tensor, lin: torch.Tensor | None = None) -> torch.Tensor:
        lin = self.lin(direction) if lin is None else lin
        return (direction * lin).sum(dim=(1, 2, 3))

    def filter_sq_norm(self, direction: torch.Tensor) -> torch.Tensor:
        return (direction * self.lin(direction)).sum(dim=-1)

    def gradient_lin_and_sq_norm(self, coef):
        """Pre-activation change along the gradient given by ``coef``, and the gradient's squared norm."""
        grad = self.direction(coef)
        lin = self.lin(grad)
        return lin, (grad * lin).sum(dim=(1, 2, 3))

    def descend(self, state: torch.Tensor, step_coef, coordinate_mask=None):
        """``state - direction(step_coef)``; returns (new state, None): the tracker follows the state itself."""
        if self.filter_bias:
            return state - self.direction(step_coef), None
        coef_signal, coef_noise = step_coef
        new = state.clone()
        if coef_signal.dim() == 3:
            new[..., 0] -= coef_signal
        else:
            new[..., 0] -= (coef_signal * self.layout.yhat[:, None, None, :]).sum(dim=-1)
        new[..., 1:] -= coef_noise.flatten(-2)
        return new, None

    # ---------------------------------------------------------------- readouts
    def signal_norm_sq(self) -> torch.Tensor:
        return self.G[:, 0, 0]

    def noise_norms_sq(self) -> torch.Tensor:
        return torch.diagonal(self.G, dim1=1, dim2=2)[:, 1:self.K]

    def filter_gram(self, state: torch.Tensor) -> torch.Tensor:
        """``W W^T`` (C, 2m, 2m) of the filters in R^d (without their biases)."""
        C, _, m, _ = self.shape
        K, G, H = self.K, self.G, self.H
        if self.filter_bias:
            state, G, H = state[..., :K], G[:, :K, :K], H[..., :K]
        c = state.reshape(C, 2 * m, K)
        Hf = H.reshape(C, 2 * m, K)
        cross = torch.bmm(Hf, c.transpose(1, 2))
        return self.Q0 + cross + cross.transpose(1, 2) + torch.bmm(torch.bmm(c, G), c.transpose(1, 2))

    def filter_e1(self, state: torch.Tensor) -> torch.Tensor:
        """``<w_{j,r}, e_1>`` (C, 2, m)."""
        return self.init_e1 + (self.coefficients_on_basis(state) * self.basis_e1[:, None, None, :]).sum(-1)

    def filter_biases(self, state: torch.Tensor) -> torch.Tensor | None:
        """``b_{j,r}`` (C, 2, m), None without filter_bias."""
        return self.H[..., self.K] + state[..., self.K] if self.filter_bias else None

    def test_outputs(self, state: torch.Tensor, act: Activation, draws: list[TestDraws], sigma_p: torch.Tensor,
                     signal: torch.Tensor, projected: bool, noise_multiplicity: float) -> torch.Tensor:
        """Network outputs (C, n_test) on fresh test samples: Monte-Carlo over the 2m-dimensional Gaussian of
        the noise pre-activations, covariance ``sigma_p^2 W_perp W_perp^T`` (docs/model.md#the-two-backends), shifted by
        the biases."""
        C, _, m, _ = self.shape
        e1 = self.filter_e1(state).reshape(C, 2 * m)
        cov = self.filter_gram(state)
        if projected:
            cov = cov - e1[:, :, None] * e1[:, None, :]
        cov = (sigma_p**2)[:, None, None] * 0.5 * (cov + cov.transpose(1, 2))
        # finite weights can still overflow their Gram; such configurations get NaN outputs, not a failed batch
        finite = torch.isfinite(cov).all(dim=2).all(dim=1)
        cov = torch.where(finite[:, None, None], cov, 0.0)
        evals, evecs = torch.linalg.eigh(cov)
        root = evecs * evals.clamp_min(0).sqrt()[:, None, :]  # cov = root root^T, (C, 2m, 2m)
        scale = act.readout(m)
        readout = root.new_tensor([scale] * m + [-scale] * m)  # f = sum_f readout_f sigma(z_f)
        act_c = act
        bias = self.filter_biases(state)
        bias = None if bias is None else bias.reshape(C, 2 * m)
        # signal patch: <w_f, yhat mu> = yhat * signal * e1_f, so only two values per configuration
        a = signal[:, None] * e1
        plus = act_c.value(a if bias is None else a + bias) @ readout  # (C,)
        minus = act_c.value(-a if bias is None else bias - a) @ readout
        out = root.new_empty(C, draws[0].yhat.shape[0])
        groups: dict[int, list[int]] = {}
        for c, dr in enumerate(draws):  # configurations sharing a seed share their standard normals
            groups.setdefault(id(dr), []).append(c)
        for idx in groups.values():
            dr = draws[idx[0]]
            normals = torch.as_tensor(dr.normals, dtype=root.dtype, device=root.device)  # (T, Pn, 2m)
            yhat = torch.as_tensor(dr.yhat, dtype=root.dtype, device=root.device)
            T, Pn, _ = normals.shape
            sel = torch.as_tensor(idx, device=root.device)
            z = torch.matmul(normals.reshape(1, T * Pn, 2 * m), root[sel].transpose(1, 2))  # (Cg, T Pn, 2m)
            if bias is not None:
                z = z + bias[sel, None, :]
            noise = (act_c.select(sel).value(z) @ readout).view(len(idx), T, Pn).sum(dim=-1) * noise_multiplicity
            positive = (yhat + 1) * 0.5
            out[sel] = minus[sel, None] + positive[None, :] * (plus - minus)[sel, None] + noise
        return torch.where(finite[:, None], out, float("nan"))


class WeightsBackend:
    name = "weights"

    def __init__(self, layout: PatchLayout, X: torch.Tensor, W0: torch.Tensor, signal: torch.Tensor,
                 noise_norms_sq: torch.Tensor, filter_bias: bool = False):
        self.layout = layout
        self.X = X  # (C, n*P_s, d), or (C, n*P_s, d+1) with a last coordinate 1 (filter_bias)
        self.W0 = W0  # (C, 2, m, d), or (C, 2, m, d+1) with the filter biases last
        self.filter_bias = filter_bias
        self.d = X.shape[-1] - int(filter_bias)
        self.signal = signal  # (C,)
        self._noise_norms_sq = noise_norms_sq  # (C, N)
        self.shape = W0.shape
        self.patch_gram = torch.bmm(X, X.transpose(1, 2))  # (C, n P_s, n P_s)

    @classmethod
    def build(cls, data: list[ExplicitData], signal: np.ndarray, sigma_p: np.ndarray, sigma_0: np.ndarray,
              layout: PatchLayout, dtype: torch.dtype, retrain_init: bool = False,
              device: str | torch.device = "cpu") -> WeightsBackend:
        """``sigma_0`` is the scale of the standard-unit initial filters (and biases) per configuration."""
        C, n, ps = len(data), layout.n, layout.stored_patches
        d = data[0].noise.shape[1]
        m = data[0].m
        bias = data[0].bias is not None
        width = d + 1 if bias else d
        X = np.zeros((C, n, ps, width))
        W0 = np.empty((C, 2 * m, width))
        for c, dc in enumerate(data):
            X[c, :, 0, 0] = dc.yhat * signal[c]
            X[c, :, 1:, :d] = sigma_p[c] * dc.noise.reshape(n, ps - 1, d)
            W0[c, :, :d] = sigma_0[c] * (dc.retrain_init() if retrain_init else dc.init)
            if bias:
                W0[c, :, d] = sigma_0[c] * (dc.retrain_bias() if retrain_init else dc.bias)
        noise_sq = (X[:, :, 1:, :d] ** 2).sum(-1).reshape(C, -1)
        if bias:
            X[..., d] = 1.0
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(layout, t(X).view(C, n * ps, width), t(W0).view(C, 2, m, width), t(signal), t(noise_sq),
                   filter_bias=bias)

    def with_init(self, other: WeightsBackend) -> WeightsBackend:
        return other

    # ---------------------------------------------------------------- dynamics
    def init_state(self) -> torch.Tensor:
        return self.W0.clone()

    def _patch_view(self, values: torch.Tensor) -> torch.Tensor:
        C, _, m, _ = self.shape
        return values.view(C, 2, m, self.layout.n, self.layout.stored_patches)

    def basis_preacts(self, state: torch.Tensor) -> torch.Tensor:
        C, _, m, d = self.shape
        return self._patch_view(torch.bmm(state.reshape(C, 2 * m, d), self.X.transpose(1, 2)))

    lin = basis_preacts  # pre-activations are linear in the weights

    def expand(self, basis_values: torch.Tensor):
        return basis_values[..., 0], basis_values[..., 1:]

    def direction(self, coef) -> torch.Tensor:
        C, _, m, d = self.shape
        return torch.bmm(self.layout.join(coef).reshape(C, 2 * m, -1), self.X).view(self.shape)

    def sq_norm(self, direction: torch.Tensor, lin: torch.Tensor | None = None) -> torch.Tensor:
        return (direction * direction).sum(dim=(1, 2, 3))

    def filter_sq_norm(self, direction: torch.Tensor) -> torch.Tensor:
        return (direction * direction).sum(dim=-1)

    def gradient_lin_and_sq_norm(self, coef):
        """Through the patch Gram ``X X^T``: no d-dimensional gradient is formed (SAM costs no extra d-sized matmul).

        lin = coef · X X^T (the pre-activation change along the gradient), ||grad||^2 = <coef, coef · X X^T>."""
        C, _, m, _ = self.shape
        flat = self.layout.join(coef).reshape(C, 2 * m, -1)
        lin = torch.bmm(flat, self.patch_gram)
        return self._patch_view(lin), (flat * lin).sum(dim=(1, 2))

    def descend(self, state: torch.Tensor, step_coef, coordinate_mask=None):
        """``W - step`` with the step's matmul fused into the subtraction; the basis change is tracked separately
        (None when a per-coordinate mask takes the update out of span B)."""
        C, _, m, d = self.shape
        flat = self.layout.join(step_coef).reshape(C, 2 * m, -1)
        if coordinate_mask is not None:
            return state - torch.bmm(flat, self.X).view(self.shape) * coordinate_mask, None
        new = torch.baddbmm(state.reshape(C, 2 * m, d), flat, self.X, alpha=-1).view(self.shape)
        return new, self.layout.collect(step_coef).neg_()

    # ---------------------------------------------------------------- readouts
    def signal_norm_sq(self) -> torch.Tensor:
        return self.signal**2

    def noise_norms_sq(self) -> torch.Tensor:
        return self._noise_norms_sq

    def test_outputs(self, state: torch.Tensor, act: Activation, test_noise: list, sigma_p: torch.Tensor,
                     yhat_test: torch.Tensor, noise_multiplicity: float) -> torch.Tensor:
        """Network outputs (C, n_test) on explicit fresh d-dimensional test samples.

        ``test_noise[c]`` iterates ``(start, noise)`` chunks of unit-scale noise (rows, patches, d)."""
        C, _, m, width = self.shape
        T = yhat_test.shape[1]
        W = state.reshape(C, 2 * m, width)
        if self.filter_bias:
            W, bias = W[..., :self.d], W[..., self.d]
        out = state.new_empty(C, T)
        for c in range(C):
            act_c = act.select(torch.tensor([c], device=state.device))  # polyrelu: this configuration's q
            z_sig = self.signal[c] * W[c, :, 0]  # <w, mu>
            for start, noise in test_noise[c]:
                rows = noise.shape[0]
                xi = torch.as_tensor(noise, dtype=W.dtype, device=W.device) * sigma_p[c]
                z_noise = torch.einsum("tpd,fd->tpf", xi, W[c])  # (rows, Pn, 2m)
                if self.filter_bias:
                    z_noise = z_noise + bias[c]
                y = yhat_test[c, start:start + rows]
                zs = y[:, None] * z_sig[None, :]
                if self.filter_bias:
                    zs = zs + bias[c]
                zs = zs.view(1, rows, 2, m).permute(0, 2, 3, 1)
                zn = z_noise.view(1, rows, -1, 2, m).permute(0, 3, 4, 1, 2)
                out[c, start:start + rows] = network_output(act_c, zs, zn, noise_multiplicity)[0]
        return out


def bytes_per_config(cfg, backend: str) -> float:
    """Rough peak memory of one configuration inside a batch (for chunking and for refusing impossible grids)."""
    item = 8 if cfg.precision == "float64" else 4
    m2, ps = 2 * cfg.m, (2 if cfg.shared_noise else cfg.P)
    patches = cfg.n * ps
    if backend == "gram":
        K = cfg.n_noise_vectors + 1
        k = cfg.n_noise_vectors + 4 * cfg.m
        train = item * (2 * K * K + 8 * m2 * K + 10 * m2 * patches) + 8 * (k * k * 3)
        test = item * cfg.n_test * (ps + 2) * m2 * 3
    else:
        train = item * (patches * cfg.d * 2 + m2 * cfg.d * 8 + 10 * m2 * patches + patches * patches)
        test = item * min(cfg.n_test, 2048) * (ps + 1) * cfg.d
    return float(train + test) * 1.5
