"""Unlearning methods on a pretrained CIFAR model (spec/empirical.md §2, §6).

    python -m empirical unlearn --from results/pre --method neggrad --set alpha=0.99 --out results/neggrad

Every method starts from the model of an earlier ``pretrain`` run (its ``checkpoint.pt``) and uses that run's split
exactly (its ``split.npz``: the same retain set R and forget set F). Each runs with SGD or with the project's one SAM
optimizer ("SAM as unlearn algorithm": ``optimizer=sam|asam``); starting from an SGD- or a SAM-pretrained model is
the choice of ``--from`` ("SAM as pretrain"). Every optimizer here is :class:`empirical.sam.SAM` around the base
optimizer — with ``rho = 0`` it is the base optimizer bit for bit — so masks work the same way for all methods.

Methods (defaults: the RUM grid of spec §2):

========== ================================================================================ ======= ======
method     objective                                                                        lr      epochs
========== ================================================================================ ======= ======
ft         CE on R                                                                          0.01    10
ga         −CE on F                                                                         1e-4    5
rl         CE on R ∪ F, F relabelled uniformly at random each epoch (``rl_exclude_true``)   0.1     10
neggrad    α CE(R batch) − (1−α) CE(F batch) per step; an epoch is one pass over R          0.01    5
l1_sparse  CE on R + α_t ||θ||₁, α_t = α (1 − t/T) decays linearly to 0                     0.01    10
scrub      per epoch: while epoch < ``scrub_msteps``, a max-step pass over F minimising −KL;  5e-3    5
           then a min-step pass over R on γ CE + β KL; KL = T² KL(p_teacher ‖ p_student) at
           temperature T against the frozen original model (γ 0.99, β 0.001, T 4: a guess)
salun      rl with the update restricted to the saliency mask M                             0.1     10
sharp_min  per step: SAM-min on α CE(R) over W_R = ¬M, then SAM-max on −(1−α) CE(F) over   0.01    5
max        W_F = M (``forget_rho`` = 0 gives "SAM on the retain loss only"; ``optimizer=sgd``
           gives the ablation "masked NegGrad with SGD on both parts")
========== ================================================================================ ======= ======

Mask (salun, sharp_minmax): G = Σ over F batches of ∇θ[−CE(F batch)] with the model in eval mode; M = 1 on the
fraction ``mask_fraction`` of entries with the largest |G|, ranked over all parameters together (``mask_rule``
"smallest" is the authors' code, spec §6 item 2). The mask is saved with the forget set's id. Masked entries are
frozen entirely: no gradient, no weight decay, no momentum (spec §6 item 3's default).

Choices of spec §6, as options: ``base`` sgd (default) or adamw (the released code, item 1); ``forget_bn`` "train"
(default: forget batches move BatchNorm statistics, as the methods do) or "eval" (item 5).
The learning-rate schedule is constant by default (``schedule=cosine`` to anneal): the spec does not say — a guess.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simulations.config import ConfigError, parse_assignments
from simulations.provenance import atomic_write_bytes, atomic_write_json, ensure_writable_dir, provenance

from .config import TrainConfig, check_fields, field_types
from .data import load_split, save_split
from .steps import autocast, optimizer_step

METHODS = ("ft", "ga", "rl", "neggrad", "l1_sparse", "scrub", "salun", "sharp_minmax")
DEFAULTS = {  # method: (lr, epochs), spec §2 (RUM's grid)
    "ft": (0.01, 10), "ga": (1e-4, 5), "rl": (0.1, 10), "neggrad": (0.01, 5), "l1_sparse": (0.01, 10),
    "scrub": (5e-3, 5), "salun": (0.1, 10), "sharp_minmax": (0.01, 5),
}
MASKED = ("salun", "sharp_minmax")
CHOICES = {"method": METHODS, "optimizer": ("sgd", "sam", "asam"), "base": ("sgd", "adamw"),
           "mask_rule": ("largest", "smallest"), "forget_bn": ("train", "eval"), "schedule": ("constant", "cosine"),
           "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class UnlearnConfig:
    method: str = "neggrad"
    optimizer: str = "sgd"  # sgd | sam | asam: the unlearning optimizer
    base: str = "sgd"  # the base optimizer inside SAM: sgd (momentum) or adamw (spec §6 item 1)
    rho: float = 0.1  # SAM radius (sharp_minmax: of the retain/min part)
    forget_rho: float = -1.0  # sharp_minmax: radius of the forget/max part; < 0: the same as rho
    lamb: float = 1.0  # SAM mix λ
    lr: float = -1.0  # < 0: the method's default
    epochs: int = 0  # 0: the method's default
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = 0.99  # neggrad, sharp_minmax: weight of the retain loss; l1_sparse: initial L1 weight
    mask_fraction: float = 0.3  # salun, sharp_minmax: q
    mask_rule: str = "largest"
    rl_exclude_true: bool = False
    scrub_msteps: int = 4  # scrub: epochs that begin with a max-step pass over F
    scrub_temperature: float = 4.0
    scrub_beta: float = 0.001  # scrub: weight of the KL term of the min-step (a guess: the SCRUB code's default)
    scrub_gamma: float = 0.99  # scrub: weight of the CE term of the min-step (likewise)
    forget_bn: str = "train"
    schedule: str = "constant"
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    data_root: str = ""  # empty: the source run's data root
    split_file: str = ""  # empty: the source run's split; else another forget set over the same train/val split

    def __post_init__(self) -> None:
        check_fields(self, CHOICES, non_negative=("rho", "lamb", "momentum", "weight_decay", "alpha", "epochs",
                                                  "scrub_msteps", "scrub_beta", "scrub_gamma"),
                     positive=("batch_size",))
        if not self.scrub_temperature > 0:
            raise ConfigError(f"scrub_temperature={self.scrub_temperature}: must be > 0")
        if not 0 < self.mask_fraction <= 1:
            raise ConfigError(f"mask_fraction={self.mask_fraction}: must lie in (0, 1]")
        if self.method in ("neggrad", "sharp_minmax") and not self.alpha <= 1:
            raise ConfigError(f"alpha={self.alpha}: {self.method} weighs α L(R) − (1−α) L(F), so α lies in [0, 1]")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr >= 0 else DEFAULTS[self.method][0]

    @property
    def num_epochs(self) -> int:
        return self.epochs if self.epochs > 0 else DEFAULTS[self.method][1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = field_types(UnlearnConfig)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    return parse_assignments(items, FIELD_TYPES)


# ------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def bn_eval(model: torch.nn.Module, enabled: bool = True):
    """BatchNorm layers in eval mode inside the block (normalise with, and leave, the running statistics)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if enabled else []
    modes = [m.training for m in norms]
    try:
        for m in norms:
            m.eval()
        yield
    finally:
        for m, mode in zip(norms, modes):
            m.train(mode)


def forget_id(forget_idx: np.ndarray) -> str:
    """A short id of a forget set (its sorted indices), saved with masks and records."""
    return hashlib.sha256(np.sort(np.asarray(forget_idx, dtype=np.int64)).tobytes()).hexdigest()[:16]


def saliency_mask(model: torch.nn.Module, data, forget_idx: torch.Tensor, fraction: float, rule: str = "largest",
                  batch_size: int = 256, device: torch.device | None = None,
                  bf16: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(masks, G)``: G = Σ over F batches of ∇θ[−CE(F batch)] (eval mode, no augmentation) and the boolean masks
    selecting the ``fraction`` of entries with the largest (``rule="smallest"``: smallest) |G| over all parameters
    together. One list entry per parameter, in ``model.parameters()`` order; the model is left as it was."""
    device = device or next(model.parameters()).device
    params = list(model.parameters())
    grads = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    try:
        for x, y in data.batches(forget_idx, batch_size, shuffle=False, augment=False):
            with autocast(device, bf16):
                loss = -F.cross_entropy(model(x), y, reduction="mean")
            batch_grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
            torch._foreach_add_(grads, [d.float() for d in batch_grads])
    finally:
        model.train(was_training)
    flat = torch.cat([g.abs().reshape(-1) for g in grads])
    k = max(1, round(fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.topk(flat, k, largest=rule == "largest", sorted=False).indices] = True
    masks, start = [], 0
    for p in params:
        masks.append(chosen[start:start + p.numel()].view_as(p))
        start += p.numel()
    return masks, grads


def _optimizer(cfg: UnlearnConfig, model: torch.nn.Module, rho: float, sign: str = "min"):
    from .sam import SAM

    if cfg.base == "adamw":
        base, kwargs = torch.optim.AdamW, dict(lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        base, kwargs = torch.optim.SGD, dict(lr=cfg.learning_rate, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
    rho = rho if cfg.optimizer != "sgd" else 0.0
    return SAM(model.parameters(), base, rho=rho, adaptive=cfg.optimizer == "asam", sign=sign, lamb=cfg.lamb,
               **kwargs)


def _endless(data, idx: torch.Tensor, batch_size: int, generator: torch.Generator):
    while True:
        yield from data.batches(idx, batch_size, shuffle=True, augment=True, generator=generator)


def random_labels(labels: torch.Tensor, idx: torch.Tensor, num_classes: int, generator: torch.Generator,
                  exclude_true: bool = False) -> torch.Tensor:
    """A copy of ``labels`` with the entries at ``idx`` drawn uniformly from the classes (from the other classes
    when ``exclude_true``)."""
    out = labels.clone()
    if exclude_true:
        shift = torch.randint(1, num_classes, (len(idx),), generator=generator, device=generator.device)
        out[idx] = (labels[idx] + shift.to(labels.device)) % num_classes
    else:
        out[idx] = torch.randint(0, num_classes, (len(idx),), generator=generator,
                                 device=generator.device).to(labels.device)
    return out


# ---------------------------------------------------------------------------------------------------- run
def load_source(source: Path, cfg: UnlearnConfig, device: torch.device):
    """The pretrained model, its training config, the prepared data with the source run's exact split, its record."""
    from .trainer import load_trained

    return load_trained(source, device, cfg.data_root, channels_last=cfg.channels_last,
                        split=Path(cfg.split_file) if cfg.split_file else None)


def unlearn(cfg: UnlearnConfig, source: Path, out: Path, progress: bool | None = None) -> dict[str, Any]:
    """Run ``cfg.method`` on the model of the pretrain run in ``source``; write ``out/record.json`` (config, seed,
    provenance, source, forget-set id, per-epoch losses and times, accuracies in percent before and after) and
    ``out/model.pt`` (and ``out/mask.pt`` for masked methods)."""
    from .trainer import _layout, accuracy, resolve_device

    device = resolve_device(TrainConfig(device=cfg.device))
    out = ensure_writable_dir(Path(out))
    model, train_cfg, prepared, source_record = load_source(source, cfg, device)
    retain, forget = prepared.retain_idx, prepared.forget_idx
    if cfg.batch_size > len(retain):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(retain)} retain images; lower batch_size")
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    fid = forget_id(prepared.forget_idx.cpu().numpy())
    used = load_split(cfg.split_file or Path(source) / "split.npz")
    save_split(out / "split.npz", **{k: v for k, v in used.items() if k != "description"},
               description=f"{used['description']} [the split of this unlearning run]")
    layout = lambda x: _layout(x, cfg, device)  # noqa: E731
    ce = lambda x, y: F.cross_entropy(model(layout(x)), y)  # noqa: E731

    def loss_on(x, y, sign=1.0, forget_pass=False):
        with autocast(device, cfg.bf16), bn_eval(model, forget_pass and cfg.forget_bn == "eval"):
            return sign * ce(x, y)

    masks = None
    if cfg.method in MASKED:
        masks, _ = saliency_mask(model, prepared.data, forget, cfg.mask_fraction, cfg.mask_rule, cfg.batch_size,
                                 device, cfg.bf16)
        buf = io.BytesIO()
        torch.save({"masks": [m.cpu() for m in masks], "forget_id": fid, "fraction": cfg.mask_fraction,
                    "rule": cfg.mask_rule, "source": str(source)}, buf)
        atomic_write_bytes(out / "mask.pt", buf.getvalue())

    epochs = cfg.num_epochs
    forget_batch = min(cfg.batch_size, len(forget))
    union = torch.cat([retain, forget])

    def phases(epoch: int) -> list[tuple[str, torch.Tensor, int]]:
        """What one epoch passes over: (step kind, indices, batch size) in order."""
        if cfg.method == "ga":
            return [("ga", forget, forget_batch)]
        if cfg.method in ("rl", "salun"):
            return [("relabelled", union, cfg.batch_size)]
        if cfg.method == "scrub":
            return ([("scrub_max", forget, forget_batch)] if epoch < cfg.scrub_msteps else []) + \
                [("scrub_min", retain, cfg.batch_size)]
        return [(cfg.method, retain, cfg.batch_size)]

    total = max(1, sum(math.ceil(len(idx) / b) for e in range(epochs) for _, idx, b in phases(e)))
    optimizers = [_optimizer(cfg, model, cfg.rho)]
    if cfg.method == "sharp_minmax":
        forget_rho = cfg.rho if cfg.forget_rho < 0 else cfg.forget_rho
        optimizers.append(_optimizer(cfg, model, forget_rho, sign="max"))
        optimizers[0].set_mask([~m for m in masks])  # W_R: the unmasked entries
        optimizers[1].set_mask(masks)  # W_F
    elif cfg.method == "salun":
        optimizers[0].set_mask(masks)
    factor = (lambda s: 1.0) if cfg.schedule == "constant" else (lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in optimizers]
    # the forget batches of neggrad / sharp_minmax have a generator of their own, so the retain batches are the
    # ones fine-tuning with the same seed would see
    forget_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    forget_stream = _endless(prepared.data, forget, forget_batch, forget_generator)
    params = list(model.parameters())
    history: dict[str, list] = {"epoch_seconds": [], "loss": []}

    teacher = None
    if cfg.method == "scrub":  # the frozen original model
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def distill(x, y, forget_pass=False):
        """(CE, KL) of the student on a batch; KL = T² KL(p_teacher ‖ p_student) at temperature T (SCRUB)."""
        with autocast(device, cfg.bf16), bn_eval(model, forget_pass and cfg.forget_bn == "eval"):
            logits = model(layout(x))
            with torch.no_grad():
                target = teacher(layout(x))
            t = cfg.scrub_temperature
            kl = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.softmax(target.float() / t, dim=1),
                          reduction="batchmean") * t * t
            return F.cross_entropy(logits, y), kl

    def one_step(kind: str, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        opt = optimizers[0]
        if kind == "ga":
            return optimizer_step(opt, model, lambda: loss_on(x, y, -1.0, forget_pass=True))
        if kind in ("ft", "relabelled"):
            return optimizer_step(opt, model, lambda: loss_on(x, y))
        if kind == "l1_sparse":
            weight = cfg.alpha * (1 - step / total)
            # ||θ||₁ as one reduction over the concatenated parameters (not two kernels per tensor)
            return optimizer_step(opt, model, lambda: loss_on(x, y) + weight * torch.linalg.vector_norm(
                torch.cat([p.reshape(-1) for p in params]), 1))
        if kind == "scrub_max":
            return optimizer_step(opt, model, lambda: -distill(x, y, forget_pass=True)[1])
        if kind == "scrub_min":
            def objective():
                ce_loss, kl = distill(x, y)
                return cfg.scrub_gamma * ce_loss + cfg.scrub_beta * kl

            return optimizer_step(opt, model, objective)
        xf, yf = next(forget_stream)  # neggrad, sharp_minmax: a retain batch and a forget batch per step
        if kind == "neggrad":
            return optimizer_step(opt, model, lambda: cfg.alpha * loss_on(x, y)
                             - (1 - cfg.alpha) * loss_on(xf, yf, forget_pass=True))
        retain_loss = optimizer_step(opt, model, lambda: cfg.alpha * loss_on(x, y))
        return retain_loss + optimizer_step(optimizers[1], model,
                                       lambda: -(1 - cfg.alpha) * loss_on(xf, yf, forget_pass=True))

    step = 0
    model.train()
    for epoch in range(epochs):
        began = time.perf_counter()
        losses = []
        for kind, idx, batch_size in phases(epoch):
            labels = None
            if kind == "relabelled":
                labels = random_labels(prepared.data.labels, forget, prepared.num_classes, generator,
                                       cfg.rl_exclude_true)
            for x, y in prepared.data.batches(idx, batch_size, shuffle=True, augment=True, generator=generator,
                                              labels=labels):
                loss = one_step(kind, x, y, step)
                losses.append(loss)
                for s in schedules:
                    s.step()
                step += 1
        losses = torch.stack(losses).float()
        if not bool(torch.isfinite(losses).all()):
            raise ConfigError(f"{cfg.method}: the loss became NaN/inf in epoch {epoch}; lower lr (no model.pt or "
                              "record.json was written)")
        if device.type == "cuda":
            torch.cuda.synchronize()
        history["epoch_seconds"].append(time.perf_counter() - began)
        history["loss"].append(float(losses.mean()))
        line = f"{cfg.method} epoch {epoch + 1}/{epochs}  loss {history['loss'][-1]:.4f}  " \
               f"{history['epoch_seconds'][-1]:.2f} s"
        if progress is not False:
            print(line, file=sys.stderr, flush=True)

    def acc(data, idx):
        return 100.0 * accuracy(model, data, idx, device, train_cfg.replace(bf16=cfg.bf16,
                                                                           channels_last=cfg.channels_last))

    test_idx = torch.arange(len(prepared.test), device=device)
    after = {"retain": acc(prepared.data, retain), "forget": acc(prepared.data, forget),
             "test": acc(prepared.test, test_idx), "val": acc(prepared.data, prepared.val_idx)}
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "forget_id": fid}, buf)
    atomic_write_bytes(out / "model.pt", buf.getvalue())
    record = {
        "method": cfg.method, "config": cfg.to_dict(), "lr": cfg.learning_rate, "epochs": epochs, "seed": cfg.seed,
        "source": str(source), "source_config": train_cfg.to_dict(), "forget_id": fid,
        "forget_size": int(len(forget)), "retain_size": int(len(retain)), "device": str(device),
        "provenance": provenance(str(device)), "epoch_seconds": history["epoch_seconds"], "loss": history["loss"],
        "accuracy": after, "source_accuracy": {k: 100.0 * source_record[f"{k}_acc"] for k in after},
        "model": str(out / "model.pt"), "mask": str(out / "mask.pt") if masks is not None else None,
    }
    atomic_write_json(out / "record.json", record)
    return record
