"""Run many configurations as one tensor computation: pretraining, unlearning, coefficient tracking, metrics.

:func:`simulate` takes any list of configurations, groups those that share tensor shapes and discrete choices
(:func:`group_key`), splits groups into memory-bounded chunks and runs each chunk as a :class:`GroupRun`.
A configuration's result does not depend on which others share its batch (see :mod:`simulations.data`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .backends import GramBackend, WeightsBackend, bytes_per_config
from .config import FIELD_NAMES, ConfigError, SimConfig
from .data import (
    STREAM_BATCH,
    STREAM_FORGET,
    data_key,
    explicit_data,
    explicit_test_noise,
    hash_uniform,
    standard_data,
    test_draws,
    test_key,
)
from .model import SIGN_J, Activation, PatchLayout, logistic_loss, loss_and_patch_coefficients, network_output
from .optim import sam_step
from .unlearning import METHODS

# fields that may differ inside one batch (per-configuration tensors); all others must agree
PER_CONFIG_FIELDS = ("signal_strength", "sigma_p", "sigma_0", "label_flip", "lr", "rho", "sam_lambda", "sam_sign",
                     "alpha", "unlearn_lr", "seed")


def group_key(cfg: SimConfig) -> tuple:
    free = _FREE_GRAM if cfg.backend == "gram" else _FREE_WEIGHTS
    return tuple(getattr(cfg, k) for k in FIELD_NAMES if k not in free)


_FREE_WEIGHTS = frozenset(PER_CONFIG_FIELDS)
_FREE_GRAM = _FREE_WEIGHTS | {"d"}


@dataclass
class RunResult:
    config: SimConfig
    metrics: dict[str, Any]
    trajectory: dict[str, np.ndarray]
    coefficients: dict[str, np.ndarray] = field(default_factory=dict)


def config_key(cfg: SimConfig) -> int:
    """A 63-bit integer naming the configuration's training data (for the counter-based draws)."""
    digest = hashlib.sha256(repr(data_key(cfg)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sam_radius(cfg: SimConfig) -> float:
    """The SAM radius a configuration runs with: ``rho`` itself (``rho_rule=fixed``), or (C)'s scale
    ``rho * m * sqrt(B) / (P * sigma_p * sqrt(d))`` with B = ``batch_size``, n for full batch (``rho_rule=chen``).
    The same radius serves the training and the unlearning SAM."""
    if cfg.rho_rule == "fixed":
        return cfg.rho
    batch = cfg.n if cfg.full_batch else cfg.batch_size
    return cfg.rho * cfg.m * math.sqrt(batch) / (cfg.P * cfg.sigma_p * math.sqrt(cfg.d))


def network_output_scale(cfg: SimConfig) -> float | None:
    """The factor in ``f = scale * sum_{r,p} [sigma(<w_{+1,r}, x^{(p)}>) - sigma(<w_{-1,r}, x^{(p)}>)]``: 1/m, or 1
    (``output_scale``), divided by P for a mean over patches (``patch_aggregation``); None for the 1/m of
    docs/model.md#network."""
    if cfg.patch_aggregation == "sum" and cfg.output_scale == "inv_m":
        return None
    per_filter = 1.0 / cfg.m if cfg.output_scale == "inv_m" else 1.0
    return per_filter / cfg.P if cfg.patch_aggregation == "mean" else per_filter


class CoefficientTracker:
    """Accumulates the basis coefficients of ``w - w0`` step by step (docs/model.md#signal-and-noise-coefficients).

    ``total[c, j, r, k]`` is the coefficient of basis vector b_k; the positive part ``zeta_bar`` collects the noise
    increments of samples whose (current) label equals j, ``zeta`` the rest. Returns the paper's scaling:
    ``kappa_{j,r} = j ||mu||^2 c_{j,r,0}``, ``zeta_{j,r,k} = ||xi_k||^2 c_{j,r,k}``.
    """

    def __init__(self, shape, sample_of_noise: torch.Tensor, dtype, device):
        C, _, m, K = shape
        self.total = torch.zeros(shape, dtype=dtype, device=device)  # weights backend: accumulated here
        self._state: torch.Tensor | None = None  # gram backend: the followed state is the total
        self.positive = torch.zeros((C, 2, m, K - 1), dtype=dtype, device=device)  # committed zeta_bar part
        self._anchor = torch.zeros_like(self.positive)  # noise coefficients at the last commit
        self._labels: torch.Tensor | None = None  # labels of the increments made since then
        self.sample_of_noise = sample_of_noise
        self.valid = True

    def add(self, basis_step: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Accumulate one step's change of the basis coefficients (None: the step left span B)."""
        if basis_step is None:
            self.valid = False
            return
        self._switch_labels(labels)
        self.total += basis_step

    def follow(self, state: torch.Tensor, labels: torch.Tensor) -> None:
        """Gram backend: the state *is* the coefficient vector, so keep a reference instead of accumulating."""
        self._switch_labels(labels)
        self._state = state

    def current(self) -> torch.Tensor:
        return self.total if self._state is None else self._state

    def _same(self, labels: torch.Tensor) -> torch.Tensor:
        """(C, 2, 1, N): 1 where noise vector k belongs to a sample whose label is j."""
        sign_j = labels.new_tensor(SIGN_J).view(1, 2, 1)
        return (labels[:, None, self.sample_of_noise] == sign_j).to(self.positive.dtype)[:, :, None, :]

    def _switch_labels(self, labels: torch.Tensor) -> None:
        # the split of a noise increment depends only on the label used in its step, so increments made under one
        # label vector are split together when the labels change (exact, and cheaper than splitting every step)
        if self._labels is not None and labels is not self._labels and not torch.equal(labels, self._labels):
            noise = self.current()[..., 1:]
            self.positive += (noise - self._anchor) * self._same(self._labels)
            self._anchor = noise.clone()
        self._labels = labels

    def coefficients(self, signal_sq: torch.Tensor, noise_sq: torch.Tensor):
        """``(kappa (C,2,m), zeta_bar (C,2,m,N), zeta (C,2,m,N))`` now; NaN once an update left span B."""
        total = self.current()
        positive = self.positive
        if self._labels is not None:
            positive = positive + (total[..., 1:] - self._anchor) * self._same(self._labels)
        sign_j = total.new_tensor(SIGN_J).view(1, 2, 1)
        scale = noise_sq[:, None, None, :]
        kappa = sign_j * total[..., 0] * signal_sq[:, None, None]
        zeta_bar = positive * scale
        zeta = total[..., 1:] * scale - zeta_bar
        if not self.valid:
            nan = float("nan")
            return kappa.fill_(nan), zeta_bar.fill_(nan), zeta.fill_(nan)
        return kappa, zeta_bar, zeta


class GroupRun:
    """One batch of configurations that share every field outside :data:`PER_CONFIG_FIELDS`."""

    def __init__(self, configs: list[SimConfig], device: str = "cpu", save_coefficients: bool = False,
                 explicit: list | None = None):
        self.configs = configs
        self.cfg = cfg = configs[0]
        self.device = torch.device(device)
        self.dtype = torch.float64 if cfg.precision == "float64" else torch.float32
        self.save_coefficients = save_coefficients
        C, n = len(configs), cfg.n
        arr = lambda name: np.array([getattr(c, name) for c in configs], dtype=np.float64)  # noqa: E731
        self._np_params = {name: arr(name) for name in PER_CONFIG_FIELDS if name != "sam_sign"}
        self._np_params["sam_lambda"] = arr("sam_lambda") * np.array(
            [1.0 if c.sam_sign == "min" else -1.0 for c in configs])
        self.keys = np.array([config_key(c) for c in configs], dtype=np.uint64)

        # ---- data (shared between configurations with the same data key)
        cache: dict[tuple, Any] = {}
        draw = explicit_data if cfg.backend == "weights" else standard_data

        def cached(c: SimConfig):
            if data_key(c) not in cache:
                cache[data_key(c)] = draw(c)
            return cache[data_key(c)]

        data = explicit if explicit is not None else [cached(c) for c in configs]
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)  # noqa: E731
        self.yhat = t(np.stack([dc.yhat for dc in data]))
        flip_u = np.stack([dc.flip_u for dc in data])
        self.flipped = torch.as_tensor(flip_u < self._np_params["label_flip"][:, None], device=self.device)
        self.labels = torch.where(self.flipped, -self.yhat, self.yhat)
        self.layout = PatchLayout(n, cfg.P, cfg.shared_noise, self.yhat)
        init_scale = (self._np_params["sigma_0"] if cfg.init == "gaussian"  # torch_uniform: U(-1, 1) / sqrt(d)
                      else np.full(C, 1.0 / math.sqrt(cfg.d)))
        scale = (self._np_params["signal_strength"], self._np_params["sigma_p"], init_scale)
        if cfg.backend == "weights":
            builder = WeightsBackend.build
        else:
            builder = GramBackend.build
            if explicit is not None:
                data = [dc.standard(cfg.m) for dc in data]
        self.backend = builder(data, *scale, self.layout, self.dtype, device=self.device)
        self._retrain_data = (builder, data, scale)
        q = self.param("q_value") if cfg.activation == "polyrelu" else 1.0
        self.act = Activation(cfg.activation, q, network_output_scale(cfg))

        # ---- forget / retain split (forget_select: random subset, or the label-flipped samples first)
        u = torch.as_tensor(hash_uniform(STREAM_FORGET, self.keys, 0, n), device=self.device)
        if cfg.forget_select == "noisy":
            u = u + 2.0 * (~self.flipped).to(u.dtype)
        order = torch.argsort(u, dim=1)
        self.forget = torch.zeros((C, n), dtype=torch.bool, device=self.device)
        self.forget.scatter_(1, order[:, : cfg.forget_size], True)
        self.retain = ~self.forget

        # ---- optimizer settings
        self.train_batch = 0 if cfg.optimizer == "gd" else cfg.batch_size
        self.unlearn_batch = 0 if cfg.unlearn_optimizer == "gd" else cfg.batch_size
        self.train_lr, self.unlearn_lr = self.param("lr"), self.param("unlearn_lr")
        zero = torch.zeros(C, dtype=self.dtype, device=self.device)
        self._np_params["rho"] = np.array([sam_radius(c) for c in configs], dtype=np.float64)  # rho_rule
        self.train_rho = self.param("rho") if cfg.optimizer == "sam" else zero
        self.unlearn_rho = self.param("rho") if cfg.unlearn_optimizer == "sam" else zero
        self.mix = self.param("sam_lambda")

        # ---- schedule and logging
        self.pretrain_steps = cfg.steps if (cfg.regime == "pretrain_then_unlearn" or not cfg.unlearns) else 0
        unlearn = 0 if not cfg.unlearns else (cfg.steps if cfg.unlearn_method == "retrain" else cfg.unlearn_steps)
        self.total_steps = self.pretrain_steps + unlearn
        self.log_steps = sorted({int(round(x)) for x in np.linspace(0, self.total_steps, cfg.log_points)})
        self.t = 0
        self.log: dict[str, list] = {}
        self.diverged_step = torch.full((C,), -1, dtype=torch.long, device=self.device)
        self._new_tracker()

    # ------------------------------------------------------------------ helpers used by methods
    def param(self, name: str) -> torch.Tensor:
        if name == "q_value":
            return torch.tensor([c.q for c in self.configs], dtype=self.dtype, device=self.device)
        return torch.as_tensor(self._np_params[name], dtype=self.dtype, device=self.device)

    def _new_tracker(self):
        n_noise = self.layout.n_noise
        per = n_noise // self.cfg.n
        sample_of_noise = torch.arange(n_noise, device=self.device) // per
        C, m = len(self.configs), self.cfg.m
        self.tracker = CoefficientTracker((C, 2, m, n_noise + 1), sample_of_noise, self.dtype, self.device)

    def restart_from_retrain_init(self) -> torch.Tensor:
        builder, data, scale = self._retrain_data
        other = builder(data, *scale, self.layout, self.dtype, retrain_init=True, device=self.device)
        self.backend = self.backend.with_init(other)
        self._new_tracker()
        return self.backend.init_state()

    def sampler(self, members: torch.Tensor, batch_size: int, stream: int):
        """Per-step sample weights (C, n): 1/|batch| on a batch drawn without replacement within each epoch from
        ``members`` (full batch when ``batch_size`` is 0 or covers the set)."""
        count = int(members[0].sum())
        if (members.sum(dim=1) != count).any():
            raise ConfigError("internal: member sets of one batch must have equal sizes")
        full = members.to(self.dtype) / max(count, 1)
        if batch_size == 0 or batch_size >= count:
            return lambda t: full
        per_epoch = math.ceil(count / batch_size)
        cache: dict[int, torch.Tensor] = {}

        def weights(t: int) -> torch.Tensor:
            epoch, b = divmod(t, per_epoch)
            if epoch not in cache:
                cache.clear()
                u = torch.as_tensor(hash_uniform(stream, self.keys, epoch, self.cfg.n), device=self.device)
                cache[epoch] = torch.argsort(u + 2.0 * (~members).to(u.dtype), dim=1)[:, :count]
            idx = cache[epoch][:, b * batch_size: min((b + 1) * batch_size, count)]
            w = torch.zeros_like(full)
            return w.scatter_(1, idx, 1.0 / idx.shape[1])

        return weights

    def gradient(self, state, labels, weights):
        """Direction of ``grad sum_i a_i l(y_i f(x_i))`` in state space."""

        preacts = self.backend.expand(self.backend.basis_preacts(state))
        _, _, _, coef = loss_and_patch_coefficients(self.act, *preacts, labels, weights,
                                                    self.layout.noise_multiplicity)
        return self.backend.direction(coef)

    def step(self, state, labels, weights, lr, rho, mix=None, count=True, **masks):
        mix = self.mix if mix is None else mix
        new_state, info = sam_step(self.backend, self.act, state, labels, weights, lr, rho, mix,
                                   adaptive=self.cfg.sam_adaptive, **masks)
        bad = ~torch.isfinite(info.loss)
        self.diverged_step = torch.where((self.diverged_step < 0) & bad, self.t, self.diverged_step)
        if count and self.t in self.log_steps:
            self._record(info)
        if self.backend.name == "gram":
            self.tracker.follow(self.backend.coefficients_on_basis(new_state), labels)
        else:
            self.tracker.add(info.basis_step, labels)
        if count:
            self.t += 1
        return new_state

    # ------------------------------------------------------------------ logging
    def _record(self, info) -> None:
        out = info.outputs
        margin = self.labels * out
        C = out.shape[0]
        kappa, zeta_bar, zeta = self.tracker.coefficients(self.backend.signal_norm_sq(), self.backend.noise_norms_sq())
        own = (self.labels < 0).long()  # filter-set index of the sample's own label
        noise_pre = info.perturbed_preacts[1]  # (C, 2, m, n, Pn)
        idx = own[:, None, None, :, None].expand(C, 1, *noise_pre.shape[2:])
        own_pre = torch.gather(noise_pre, 1, idx)[:, 0]
        sample_forget = self.forget[:, self.tracker.sample_of_noise][:, None, None, :]
        zb = zeta_bar
        row = {
            "step": torch.full((C,), float(self.t), dtype=self.dtype, device=self.device),
            "train_loss": logistic_loss(margin).mean(dim=1),
            "train_error": (margin <= 0).to(self.dtype).mean(dim=1),
            "signal_coef_max": kappa.amax(dim=(1, 2)),
            "noise_coef_max": zb.amax(dim=(1, 2, 3)),
            "noise_coef_min": zeta.amin(dim=(1, 2, 3)),
            "noise_coef_max_retain": torch.where(sample_forget, -math.inf, zb).amax(dim=(1, 2, 3)),
            "noise_coef_max_forget": torch.where(sample_forget, zb, -math.inf).amax(dim=(1, 2, 3)),
            "active_noise_fraction": (own_pre > 0).to(self.dtype).mean(dim=(1, 2, 3)),
        }
        row.update(self._own_class_readouts(info, own, own_pre, zeta_bar))
        for k, v in row.items():
            self.log.setdefault(k, []).append(v)
        if self.save_coefficients:
            for k, v in (("kappa", kappa), ("zeta_bar", zeta_bar), ("zeta", zeta)):
                self.log.setdefault(k, []).append(v.clone())

    def _own_class_readouts(self, info, own, own_pre, zeta_bar) -> dict[str, torch.Tensor]:
        """Per side (retain R / forget F): the fraction of own-class noise neurons (j = y_i) active at the point the
        step's gradient was taken (W + eps under SAM, W otherwise), the mean own-class noise coefficient
        zeta_bar_{y_i,r,i} (cross-class entries are 0 by construction and left out), and the mean |l'_i| at W and
        at the perturbed point (eps lowers the forget loss under NegGrad, so SAM's steps on F are smaller)."""
        C = own.shape[0]
        sample_of_noise = self.tracker.sample_of_noise
        own_noise = own[:, sample_of_noise]  # (C, N): filter set of each noise vector's sample label
        idx = own_noise[:, None, None, :].expand(C, 1, *zeta_bar.shape[2:])
        own_zeta = torch.gather(zeta_bar, 1, idx)[:, 0]  # (C, m, N)
        mult = self.layout.noise_multiplicity
        perturbed_out = network_output(self.act, *info.perturbed_preacts, mult)
        slope_at_w = torch.sigmoid(-self.labels * info.outputs)  # |l'(y f)| = 1 / (1 + e^{y f})
        slope_at_eps = torch.sigmoid(-self.labels * perturbed_out)
        active = (own_pre > 0).to(self.dtype).mean(dim=(1, 3))  # (C, n): own_pre is (C, m, n, P-1)
        zeta_per_noise = own_zeta.mean(dim=1)  # (C, N), mean over the filters r
        out = {}
        for side, members in (("retain", self.retain), ("forget", self.forget)):
            weights = members.to(self.dtype)
            count = weights.sum(dim=1).clamp(min=1)
            noise_weights = weights[:, sample_of_noise]
            out[f"active_noise_fraction_{side}"] = (active * weights).sum(dim=1) / count
            out[f"own_noise_coef_mean_{side}"] = ((zeta_per_noise * noise_weights).sum(dim=1)
                                                  / noise_weights.sum(dim=1).clamp(min=1))
            out[f"loss_slope_{side}"] = (slope_at_w * weights).sum(dim=1) / count
            out[f"loss_slope_perturbed_{side}"] = (slope_at_eps * weights).sum(dim=1) / count
        return out

    def _record_final(self, state) -> None:
        if self.total_steps in self.log_steps and len(self.log.get("step", [])) < len(self.log_steps):
            C = len(self.configs)
            weights = torch.full((C, self.cfg.n), 1.0 / self.cfg.n, dtype=self.dtype, device=self.device)
            zero = torch.zeros(C, dtype=self.dtype, device=self.device)
            rho = self.unlearn_rho if self.cfg.unlearns else self.train_rho
            _, info = sam_step(self.backend, self.act, state, self.labels, weights, zero, rho, self.mix,
                               adaptive=self.cfg.sam_adaptive)
            self._record(info)

    # ------------------------------------------------------------------ metrics
    def evaluate(self, state, prefix: str = "") -> dict[str, torch.Tensor]:
        backend = self.backend
        out = network_output(self.act, *backend.expand(backend.basis_preacts(state)), self.layout.noise_multiplicity)
        # a run whose state or outputs turned non-finite on its last update has not shown a bad loss yet
        broken = ~(torch.isfinite(state.flatten(1)).all(dim=1) & torch.isfinite(out).all(dim=1))
        self.diverged_step = torch.where((self.diverged_step < 0) & broken, self.t, self.diverged_step)
        bad = self.diverged_step >= 0
        if bad.any():
            state = torch.where(bad.view(-1, 1, 1, 1), backend.init_state(), state)
            out = torch.where(bad[:, None], 0.0, out)
        margin = self.labels * out
        correct = (margin > 0).to(self.dtype)
        nf = self.forget.sum(dim=1).to(self.dtype)
        nr = self.retain.sum(dim=1).to(self.dtype)
        forget_acc = (correct * self.forget).sum(1) / nf
        forget_flip = ((-margin > 0).to(self.dtype) * self.forget).sum(1) / nf
        metrics = {
            "train_loss": logistic_loss(margin).mean(dim=1),
            "train_error": 1 - correct.mean(dim=1),
            "retain_acc": (correct * self.retain).sum(1) / nr,
            "forget_acc": forget_acc,
            "forget_flip_acc": forget_flip,
        }
        metrics.update(self._test_error(state))
        broken = ~torch.isfinite(metrics["test_error"])  # weights too large for their test pre-activations
        self.diverged_step = torch.where((self.diverged_step < 0) & broken, self.t, self.diverged_step)
        bad = self.diverged_step >= 0
        nan = torch.tensor(float("nan"), dtype=self.dtype, device=self.device)
        return {prefix + k: torch.where(bad, nan, v) for k, v in metrics.items()}

    def _test_error(self, state) -> dict[str, torch.Tensor]:
        cfg, configs = self.cfg, self.configs
        cache: dict[tuple, Any] = {}
        draws = [cache[test_key(c)] if test_key(c) in cache else cache.setdefault(test_key(c), test_draws(c))
                 for c in configs]
        t = lambda a: torch.as_tensor(np.stack(a), dtype=self.dtype, device=self.device)  # noqa: E731
        yhat = t([dr.yhat for dr in draws])
        flipped = torch.as_tensor(np.stack([dr.flip_u for dr in draws]) < self._np_params["label_flip"][:, None],
                                  device=self.device)
        y = torch.where(flipped, -yhat, yhat)
        sigma_p = self.param("sigma_p")
        if cfg.backend == "gram":
            chunk = max(1, int(2e8 // (cfg.n_test * (cfg.P + 2) * 2 * cfg.m * 8)))
            outs = []
            for s in range(0, len(configs), chunk):
                sl = slice(s, s + chunk)
                sub = self.backend.select(sl)
                outs.append(sub.test_outputs(state[sl], self._act_slice(sl), draws[sl], sigma_p[sl],
                                             self.param("signal_strength")[sl], cfg.noise_projected,
                                             self.layout.noise_multiplicity))
            out = torch.cat(outs)
        else:
            out = self.backend.test_outputs(state, self.act, [explicit_test_noise(c) for c in configs], sigma_p,
                                            yhat, self.layout.noise_multiplicity)
        valid = torch.isfinite(out).all(dim=1)
        nan = torch.tensor(float("nan"), dtype=self.dtype, device=self.device)
        err = torch.where(valid, ((y * out) <= 0).to(self.dtype).mean(dim=1), nan)
        clean = torch.where(valid, ((yhat * out) <= 0).to(self.dtype).mean(dim=1), nan)
        return {"test_error": err, "test_error_se": torch.sqrt(err * (1 - err) / cfg.n_test),
                "test_error_clean": clean}

    def _act_slice(self, sl):
        if self.cfg.activation == "polyrelu":
            return self.act.select(sl)
        return self.act

    # ------------------------------------------------------------------ the run
    def run(self) -> list[RunResult]:
        start = time.perf_counter()
        cfg = self.cfg
        state = self.backend.init_state()
        everyone = torch.ones_like(self.forget)
        if self.pretrain_steps:
            weights = self.sampler(everyone, self.train_batch, STREAM_BATCH)
            sam_until = cfg.sam_steps or self.pretrain_steps  # sam_steps > 0: SAM early, then the base step
            zero_rho = torch.zeros_like(self.train_rho)
            for t in range(self.pretrain_steps):
                rho = self.train_rho if t < sam_until else zero_rho
                state = self.step(state, self.labels, weights(t), self.train_lr, rho)
        pre = self.evaluate(state, "pretrain_") if cfg.unlearns else {}
        if cfg.unlearns:
            state = METHODS[cfg.unlearn_method].run(self, state)
        self._record_final(state)
        final = self.evaluate(state)
        wall = (time.perf_counter() - start) / len(self.configs)
        return self._results(state, {**pre, **final}, wall)

    def _results(self, state, metrics, wall) -> list[RunResult]:
        kappa, zeta_bar, zeta = self.tracker.coefficients(self.backend.signal_norm_sq(),
                                                          self.backend.noise_norms_sq())
        metrics = {k: v.detach().cpu().numpy() for k, v in metrics.items()}
        log = {k: torch.stack(v, dim=1).detach().cpu().numpy() for k, v in self.log.items()}
        final_sig = kappa.amax(dim=(1, 2)).cpu().numpy()
        final_noise = zeta_bar.amax(dim=(1, 2, 3)).cpu().numpy()
        diverged = self.diverged_step.cpu().numpy()
        forget = self.forget.cpu().numpy()
        results = []
        for c, cfg in enumerate(self.configs):
            row = {k: float(v[c]) for k, v in metrics.items()}
            row.update(signal_coef_max=float(final_sig[c]), noise_coef_max=float(final_noise[c]),
                       diverged=bool(diverged[c] >= 0), diverged_step=int(diverged[c]), wall_s=wall)
            traj = {k: v[c] for k, v in log.items() if k not in ("kappa", "zeta_bar", "zeta")}
            traj["forget_indices"] = np.flatnonzero(forget[c])
            coefs = {k: log[k][c] for k in ("kappa", "zeta_bar", "zeta") if k in log}
            results.append(RunResult(cfg, row, traj, coefs))
        return results


def plan_chunks(configs: list[SimConfig], memory_bytes: float) -> list[list[int]]:
    """Indices of configs grouped by :func:`group_key`, each group split so a chunk fits ``memory_bytes``."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(group_key(c), []).append(i)
    chunks = []
    for idx in groups.values():
        need = bytes_per_config(configs[idx[0]], configs[idx[0]].backend)
        if need > memory_bytes:
            raise ConfigError(memory_refusal(configs[idx[0]], need, memory_bytes))
        per = max(1, int(memory_bytes // need))
        # gram: keep configurations of equal d together so data caches are reused
        idx = sorted(idx, key=lambda i: (configs[i].d, configs[i].seed))
        chunks += [idx[s:s + per] for s in range(0, len(idx), per)]
    return chunks


def human_bytes(x: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def memory_refusal(cfg: SimConfig, need: float, budget: float) -> str:
    fixes = "lower n_test or n" if cfg.backend == "gram" else "use backend=gram, or lower n_test, n or d"
    return (f"one configuration (backend={cfg.backend}, n={cfg.n}, d={cfg.d}, m={cfg.m}, n_test={cfg.n_test}) needs "
            f"about {human_bytes(need)} but the memory budget is {human_bytes(budget)}: {fixes}, or raise "
            f"--max-memory-gb")


def simulate(configs: list[SimConfig], device: str = "cpu", save_coefficients: bool = False,
             memory_bytes: float = 2 * 2**30, max_chunk: int = 4096) -> list[RunResult]:
    """Run every configuration; results come back in input order."""
    check_device(device)
    out: list[RunResult | None] = [None] * len(configs)
    for chunk in plan_chunks(configs, memory_bytes):
        for s in range(0, len(chunk), max_chunk):
            part = chunk[s:s + max_chunk]
            for i, res in zip(part, GroupRun([configs[i] for i in part], device, save_coefficients).run()):
                out[i] = res
    return out  # type: ignore[return-value]


def check_device(device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
