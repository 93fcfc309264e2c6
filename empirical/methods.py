"""The unlearning methods as a registry (docs/protocol.md#unlearning-methods): each method is a small unit — its
hyperparameter dataclass (defaults from the paper and RUM; guesses say so), its learning rate and epochs (RUM's grid),
the phases an epoch passes over, and its step. :func:`empirical.unlearn.unlearn` is one generic loop over these units.

========== ================================================================================ ======= ======
method     objective                                                                        lr      epochs
========== ================================================================================ ======= ======
ft         CE on R                                                                          0.01    10
ga         −CE on F                                                                         1e-4    5
rl         CE on R ∪ F, F relabelled uniformly at random each epoch (``rl_exclude_true``)   0.1     10
neggrad    α CE(R batch) − (1−α) CE(F batch) per step; an epoch is one pass over R          0.01    5
l1_sparse  CE on R + γ_t ||θ||₁, γ_t = γ₀ (1 − t/T) decays linearly to 0 (``l1_weight`` γ₀)    0.01    10
scrub      per epoch: while epoch < ``scrub_msteps``, a max-step pass over F minimising −KL;  5e-3    5
           then a min-step pass over R on γ CE + β KL; KL = T² KL(p_teacher ‖ p_student)
salun      rl with the update restricted to the saliency mask M                             0.1     10
sharp_     per step: SAM-min on α CE(R) over W_R = ¬M, then SAM-max on −(1−α) CE(F) over   0.01    5
minmax     W_F = M (``forget_rho`` = 0: "SAM on the retain loss only"; ``optimizer=sgd``:
           the ablation "masked NegGrad with SGD on both parts")
========== ================================================================================ ======= ======

Masks (salun, sharp_minmax), ``mask_mode`` (docs/protocol.md#departures-from-the-authors-code, item 3):

* ``paper`` (default): masked-out entries are frozen entirely for that optimizer's step — no gradient, no weight
  decay, no momentum — so W_R and W_F really are disjoint;
* ``authors``: the released code's behaviour: the mask multiplies the gradient at W + ε (SAM) or the gradient
  (SGD) before the update; weight decay and momentum act on every entry, and both optimizers of Sharp MinMax own all
  parameters (decay applied twice per iteration). With λ = 1 the sharpness-max step then gives ``2 g_F`` outside
  W_F: the split does not isolate anything. Provided so their numbers can be set beside ours.

To add a method: a settings dataclass (or :class:`NoSettings`), a :class:`Method` subclass with ``name``, ``lr``,
``epochs``, ``phases`` and ``step``, decorated with :func:`register`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from simulations.errors import ConfigError

from .config import check_fields


@dataclass(frozen=True)
class Phase:
    """What part of an epoch passes over: a step ``kind``, the indices, the batch size, and (RL, SalUn) a function
    drawing the labels of this pass (called right before it)."""
    kind: str
    indices: torch.Tensor
    batch_size: int
    relabel: Callable[[], torch.Tensor] | None = None


@dataclass(frozen=True)
class NoSettings:
    """A method without hyperparameters of its own."""


@dataclass(frozen=True)
class RLSettings:
    # an option of docs/protocol.md#unlearning-methods
    rl_exclude_true: bool = False  # draw the new label from the other classes only


@dataclass(frozen=True)
class NegGradSettings:
    alpha: float = 0.99  # weight of the retain loss; the paper sweeps 0.9–0.999 (0.99: a guess inside that range)


@dataclass(frozen=True)
class L1SparseSettings:
    l1_weight: float = 5e-4  # γ₀, the initial L1 weight; 1e-4…5e-4 swept (5e-4: a guess, sweep it)


@dataclass(frozen=True)
class ScrubSettings:
    scrub_msteps: int = 4  # epochs that begin with a max-step pass over F (docs/protocol.md#unlearning-methods)
    scrub_temperature: float = 4.0  # T (docs/protocol.md#unlearning-methods)
    scrub_beta: float = 0.001  # weight of the KL term of the min-step (a guess: the SCRUB code's default)
    scrub_gamma: float = 0.99  # weight of the CE term of the min-step (a guess, likewise)


@dataclass(frozen=True)
class SalUnSettings:
    mask_fraction: float = 0.3  # q (the paper: 0.3 on CIFAR-100)
    mask_rule: str = "largest"  # largest |G| (the paper); smallest: the authors' code (docs/protocol.md item 2)
    mask_mode: str = "paper"  # paper | authors (module docstring; docs/protocol.md item 3)
    rl_exclude_true: bool = False


@dataclass(frozen=True)
class SharpMinMaxSettings:
    alpha: float = 0.99  # weight of the retain loss (a guess, as NegGrad's)
    mask_fraction: float = 0.3  # q
    mask_rule: str = "largest"
    mask_mode: str = "paper"
    forget_rho: float = -1.0  # radius of the forget/max part; < 0: the same as rho


SETTING_CHOICES = {"mask_rule": ("largest", "smallest"), "mask_mode": ("paper", "authors")}


def check_settings(method: str, settings: Any) -> None:
    """Types, choices and ranges of a method's settings; one ConfigError naming the field."""
    present = tuple(n for n in ("l1_weight", "scrub_msteps", "scrub_beta", "scrub_gamma") if hasattr(settings, n))
    check_fields(settings, SETTING_CHOICES, non_negative=present, prefix=f"{method}.")
    if getattr(settings, "scrub_temperature", 1.0) <= 0:
        raise ConfigError(f"{method}.scrub_temperature={settings.scrub_temperature}: must be > 0")
    if not 0 < getattr(settings, "mask_fraction", 0.5) <= 1:
        raise ConfigError(f"{method}.mask_fraction={settings.mask_fraction}: must lie in (0, 1]")
    if hasattr(settings, "alpha") and not 0 <= settings.alpha <= 1:
        raise ConfigError(f"alpha={settings.alpha}: {method} weighs α L(R) − (1−α) L(F), so α lies in [0, 1]")


class Method:
    """One unlearning method. ``run`` is the :class:`empirical.unlearn.UnlearnRun` of the generic loop: the model,
    the data, the settings (``run.s``), the optimizers, ``run.loss_on`` and ``run.next_forget``."""
    name = ""
    settings: type = NoSettings
    lr = 0.0
    epochs = 0
    masked = False  # computes the saliency mask before the first step

    def setup(self, run) -> list[torch.optim.Optimizer]:
        """The optimizers (one by default, on every parameter, the unlearning optimizer at ``rho``)."""
        return [run.optimizer(run.cfg.rho)]

    def phases(self, run, epoch: int) -> list[Phase]:
        return [Phase(self.name, run.retain, run.cfg.batch_size)]

    def step(self, run, phase: Phase, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError


METHODS: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method={name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


@register
class FineTune(Method):
    name, lr, epochs = "ft", 0.01, 10

    def step(self, run, phase, x, y, step):
        return run.step_on(run.optimizers[0], lambda: run.loss_on(x, y))


@register
class GradientAscent(Method):
    name, lr, epochs = "ga", 1e-4, 5

    def phases(self, run, epoch):
        return [Phase("forget", run.forget, run.forget_batch)]

    def step(self, run, phase, x, y, step):
        return run.step_on(run.optimizers[0], lambda: run.loss_on(x, y, -1.0, forget_pass=True))


@register
class RandomLabels(Method):
    name, settings, lr, epochs = "rl", RLSettings, 0.1, 10

    def phases(self, run, epoch):
        return [Phase("relabelled", run.union, run.cfg.batch_size, relabel=lambda: run.random_labels())]

    def step(self, run, phase, x, y, step):
        return run.step_on(run.optimizers[0], lambda: run.loss_on(x, y))


@register
class NegGrad(Method):
    name, settings, lr, epochs = "neggrad", NegGradSettings, 0.01, 5

    def step(self, run, phase, x, y, step):
        xf, yf = run.next_forget()
        alpha = run.s.alpha
        return run.step_on(run.optimizers[0], lambda: alpha * run.loss_on(x, y)
                           - (1 - alpha) * run.loss_on(xf, yf, forget_pass=True))


@register
class L1Sparse(Method):
    name, settings, lr, epochs = "l1_sparse", L1SparseSettings, 0.01, 10

    def step(self, run, phase, x, y, step):
        weight = run.s.l1_weight * (1 - step / run.total)
        params = run.params
        # ||θ||₁ as one reduction over the concatenated parameters (not two kernels per tensor)
        return run.step_on(run.optimizers[0], lambda: run.loss_on(x, y) + weight * torch.linalg.vector_norm(
            torch.cat([p.reshape(-1) for p in params]), 1))


@register
class Scrub(Method):
    name, settings, lr, epochs = "scrub", ScrubSettings, 5e-3, 5

    def setup(self, run):
        run.teacher = copy.deepcopy(run.model).eval()  # the frozen original model
        for p in run.teacher.parameters():
            p.requires_grad_(False)
        return super().setup(run)

    def phases(self, run, epoch):
        return ([Phase("scrub_max", run.forget, run.forget_batch)] if epoch < run.s.scrub_msteps else []) + \
            [Phase("scrub_min", run.retain, run.cfg.batch_size)]

    @staticmethod
    def distill(run, x, y, forget_pass=False):
        """(CE, KL) of the student on a batch; KL = T² KL(p_teacher ‖ p_student) at temperature T (SCRUB)."""
        with run.precision(), run.forget_bn(forget_pass):
            logits = run.model(run.layout(x))
            with torch.no_grad():
                target = run.teacher(run.layout(x))
            t = run.s.scrub_temperature
            kl = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.softmax(target.float() / t, dim=1),
                          reduction="batchmean") * t * t
            return F.cross_entropy(logits, y), kl

    def step(self, run, phase, x, y, step):
        if phase.kind == "scrub_max":
            return run.step_on(run.optimizers[0], lambda: -self.distill(run, x, y, forget_pass=True)[1])

        def objective():
            ce_loss, kl = self.distill(run, x, y)
            return run.s.scrub_gamma * ce_loss + run.s.scrub_beta * kl

        return run.step_on(run.optimizers[0], objective)


@register
class SalUn(RandomLabels):
    name, settings, lr, epochs, masked = "salun", SalUnSettings, 0.1, 10, True

    def setup(self, run):
        optimizers = super().setup(run)
        optimizers[0].set_mask(run.masks, freeze=run.s.mask_mode == "paper")
        return optimizers


@register
class SharpMinMax(Method):
    name, settings, lr, epochs, masked = "sharp_minmax", SharpMinMaxSettings, 0.01, 5, True

    def setup(self, run):
        forget_rho = run.cfg.rho if run.s.forget_rho < 0 else run.s.forget_rho
        retain_opt, forget_opt = run.optimizer(run.cfg.rho), run.optimizer(forget_rho, sign="max")
        freeze = run.s.mask_mode == "paper"
        retain_opt.set_mask([~m for m in run.masks], freeze=freeze)  # W_R: the unmasked entries
        forget_opt.set_mask(run.masks, freeze=freeze)  # W_F
        return [retain_opt, forget_opt]

    def step(self, run, phase, x, y, step):
        xf, yf = run.next_forget()
        alpha = run.s.alpha
        retain_loss = run.step_on(run.optimizers[0], lambda: alpha * run.loss_on(x, y))
        return retain_loss + run.step_on(run.optimizers[1],
                                         lambda: -(1 - alpha) * run.loss_on(xf, yf, forget_pass=True))


def setting_fields() -> dict[str, dict[str, type]]:
    """Method → {setting name: type}."""
    types = {"int": int, "float": float, "bool": bool, "str": str}
    return {name: {f.name: types[f.type] for f in dataclasses.fields(m.settings)} for name, m in METHODS.items()}
