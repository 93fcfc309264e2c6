"""Unlearning methods on a pretrained CIFAR model (docs/protocol.md#unlearning-methods).

    python -m empirical unlearn --from results/pre --method neggrad --set alpha=0.99 --out results/neggrad

Every method starts from the model of an earlier ``pretrain`` run (its ``checkpoint.pt``) and uses that run's split
exactly (its ``split.npz``: the same retain set R and forget set F). Each runs with SGD or with the project's one SAM
optimizer ("SAM as unlearn algorithm": ``optimizer=sam|asam``); starting from an SGD- or a SAM-pretrained model is
the choice of ``--from`` ("SAM as pretrain"). Every optimizer here is :class:`empirical.sam.SAM` around the base
optimizer — with ``rho = 0`` it is the base optimizer bit for bit — so masks work the same way for all methods.

The methods themselves — their settings, phases and steps — are a registry in :mod:`empirical.methods` (the table
of objectives, learning rates and epochs is there); this module is the configuration and the one generic loop.
Settings are flat: shared ones (:class:`CommonSettings`) and the method's own, e.g. ``alpha`` for neggrad or
``l1_weight`` for l1_sparse; a setting the method does not have is refused.

Mask (salun, sharp_minmax): G = Σ over F batches of ∇θ[−CE(F batch)] with the model in eval mode; M = 1 on the
fraction ``mask_fraction`` of entries with the largest |G|, ranked over all parameters together (``mask_rule``
"smallest" is the authors' code, docs/protocol.md item 2). The mask is saved with the forget set's id. ``mask_mode``
paper (default) freezes masked-out entries entirely; authors is the released code's masking (item 3).

Precision: SAM/ASAM steps run in fp32 (TF32 on CUDA) unless ``sam_bf16=true``; evaluation is always fp32.
Departures of docs/protocol.md#departures-from-the-authors-code, as options: ``base`` sgd (default) or adamw (the
released code, item 1); ``forget_bn`` "train" (default: forget batches move BatchNorm statistics, as the methods do) or
"eval" (item 5).
The learning-rate schedule is constant by default (``schedule=cosine`` to anneal): neither the paper nor the code
says — a guess.
"""

from __future__ import annotations

import contextlib
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

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.config import parse_assignments, parse_value
from simulations.errors import ConfigError
from simulations.provenance import provenance
from simulations.runfolder import RunFolder

from .config import TrainConfig, check_fields, field_types, stable_hash
from .data import load_split, save_split
from .methods import METHODS, check_settings, get_method, setting_fields  # noqa: F401 - METHODS re-exported
from .steps import autocast, optimizer_step

COMMON_CHOICES = {"optimizer": ("sgd", "sam", "asam"), "base": ("sgd", "adamw"), "forget_bn": ("train", "eval"),
                  "schedule": ("constant", "cosine"), "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class CommonSettings:
    """Settings every method shares (the optimizer, the data, the device); a method's own settings live in its
    dataclass in :mod:`empirical.methods`."""
    optimizer: str = "sgd"  # sgd | sam | asam: the unlearning optimizer
    base: str = "sgd"  # the base optimizer inside SAM: sgd (momentum) or adamw (docs/protocol.md item 1)
    rho: float = 0.1  # SAM radius (sharp_minmax: of the retain/min part)
    lamb: float = 1.0  # SAM mix λ
    lr: float = -1.0  # < 0: the method's default
    epochs: int = 0  # 0: the method's default
    steps_per_epoch: int = 0  # > 0: each phase of an epoch stops after this many batches (a CPU-scale budget)
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    forget_bn: str = "train"
    schedule: str = "constant"
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA for SGD steps
    sam_bf16: bool = False  # SAM/ASAM steps in bf16 too (default fp32/TF32: docs/protocol.md#precision)
    channels_last: bool = True
    data_root: str = ""  # empty: the source run's data root
    split_file: str = ""  # empty: the source run's split; else another forget set over the same train/val split

    def __post_init__(self) -> None:
        check_fields(self, COMMON_CHOICES, non_negative=("rho", "lamb", "momentum", "weight_decay", "epochs",
                                                         "steps_per_epoch"),
                     positive=("batch_size",))


COMMON_FIELDS = field_types(CommonSettings)


class UnlearnConfig:
    """The configuration of one unlearning run: ``method``, the :class:`CommonSettings` and the method's own
    settings, given flat (``UnlearnConfig(method="neggrad", alpha=0.99, optimizer="sam")``). A setting the method
    does not have is refused (e.g. NegGrad's ``alpha`` for ``l1_sparse``). Immutable; ``replace`` makes a copy."""

    def __init__(self, method: str = "neggrad", **fields: Any):
        unit = get_method(method)
        own_fields = {f.name for f in dataclasses.fields(unit.settings)}
        unknown = [k for k in fields if k not in COMMON_FIELDS and k not in own_fields]
        if unknown:
            own = ", ".join(sorted(own_fields)) or "none"
            raise ConfigError(f"{', '.join(unknown)}: not a setting of {method} (its own settings: {own}; shared "
                              f"settings: {', '.join(COMMON_FIELDS)})")
        common = CommonSettings(**{k: v for k, v in fields.items() if k in COMMON_FIELDS})
        settings = unit.settings(**{k: v for k, v in fields.items() if k in own_fields})
        check_settings(method, settings)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "common", common)
        object.__setattr__(self, "settings", settings)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __getattr__(self, name: str) -> Any:
        for part in ("common", "settings"):
            inner = self.__dict__.get(part)
            if inner is not None and name in {f.name for f in dataclasses.fields(inner)}:
                return getattr(inner, name)
        raise AttributeError(name)

    def __eq__(self, other) -> bool:
        return isinstance(other, UnlearnConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"UnlearnConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr >= 0 else get_method(self.method).lr

    @property
    def num_epochs(self) -> int:
        return self.epochs if self.epochs > 0 else get_method(self.method).epochs

    @property
    def sam(self) -> bool:
        return self.optimizer in ("sam", "asam")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self.common), **dataclasses.asdict(self.settings)}

    def resolved(self) -> dict[str, Any]:
        """:meth:`to_dict` with the values the run uses: the placeholders ``lr < 0`` and ``epochs = 0`` replaced by
        the method's defaults. What records and ``--print-config`` show; the identity hashes :meth:`to_dict`."""
        return {**self.to_dict(), "lr": self.learning_rate, "epochs": self.num_epochs}

    def replace(self, **changes: Any) -> UnlearnConfig:
        return UnlearnConfig(**{**self.to_dict(), **changes})


def field_types_of(method: str) -> dict[str, type]:
    """The typed fields of ``method`` (shared and its own), for the ``--set`` parser."""
    return {"method": str, **COMMON_FIELDS, **setting_fields()[method]}


ALL_FIELDS = {"method": str, **COMMON_FIELDS, **{k: v for fs in setting_fields().values() for k, v in fs.items()}}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` → typed overrides (shared fields and every method's own)."""
    return parse_assignments(items, ALL_FIELDS)


def scoped_overrides(items: list[str] | None) -> dict[str, Any]:
    """The protocol's ``--unlearn-set``: ``key=value`` (for every chosen method that has the field) or
    ``method.key=value`` (for that method only) → ``{"key": v, "neggrad.alpha": v, ...}``, typed."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--unlearn-set {item!r}: expected key=value or method.key=value")
        key, text = (t.strip() for t in item.split("=", 1))
        if "." in key:
            method, name = key.split(".", 1)
            get_method(method)
            out[key] = parse_value(name, text, field_types_of(method))
        else:
            out[key] = parse_value(key, text, ALL_FIELDS)
    return out


def resolve_scoped(overrides: dict[str, Any], methods: list[str], strict: bool = True) -> dict[str, dict[str, Any]]:
    """Per chosen method, the settings that apply to it: shared fields always; an unscoped field of a method's own
    only for the methods that have it; ``method.key`` only for that method. A field none of the chosen methods has,
    or a scope not among them, is refused."""
    own = setting_fields()
    per = {m: {} for m in methods}
    for key, value in overrides.items():
        if "." in key:
            method, name = key.split(".", 1)
            if method not in per:
                if not strict:
                    continue
                raise ConfigError(f"--unlearn-set {key}: {method} is not among the chosen methods "
                                  f"({', '.join(methods)})")
            if name not in own[method] and name not in COMMON_FIELDS:
                raise ConfigError(f"--unlearn-set {key}: {name} is not a setting of {method} (its own settings: "
                                  f"{', '.join(own[method]) or 'none'})")
            continue
        if key in COMMON_FIELDS:
            for m in methods:
                per[m][key] = value
            continue
        having = [m for m in methods if key in own[m]]
        if not having and strict:
            raise ConfigError(f"--unlearn-set {key}: none of the chosen methods ({', '.join(methods)}) has this "
                              "setting")
        for m in having:
            per[m][key] = value
    for key, value in overrides.items():  # scoped settings win over unscoped ones
        if "." in key:
            method, name = key.split(".", 1)
            if method in per:
                per[method][name] = value
    return per


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


UNLEARN_OUTPUTS = ("record.json", "model.pt", "mask.pt", "split.npz", "metrics.json")


def unlearn_identity(cfg: UnlearnConfig, source: Path) -> dict[str, Any]:
    """What an unlearning run folder is the result of: its configuration, its source run (the folder and that run's
    own identity: its configuration, numerics and data), the empirical numerics' code version and, with
    ``split_file``, the indices of that split."""
    from simulations.provenance import empirical_numerics_version
    from simulations.runfolder import read_identity

    digest = stable_hash(cfg.to_dict(), LATER_FIELDS)
    found = read_identity(Path(source))
    identity = {"config": digest, "source": str(Path(source).resolve()),
                "source_identity": (found or {}).get("identity"), "numerics": empirical_numerics_version()}
    if cfg.split_file:
        identity["split"] = str(load_split(cfg.split_file).get("indices_sha256", ""))[:16]
    return identity


# settings added after unlearning runs were made: they count in the identity only when they differ from this default
LATER_FIELDS = {"steps_per_epoch": 0}


def unlearn(cfg: UnlearnConfig, source: Path, out: Path, progress: bool | None = None,
            force: bool = False, record_accuracy: bool = True) -> dict[str, Any]:
    """Run ``cfg.method`` on the model of the pretrain run in ``source``; write ``out/record.json`` (config, seed,
    provenance, source, forget-set id, per-epoch losses and times, accuracies in percent before and after) and
    ``out/model.pt`` (and ``out/mask.pt`` for masked methods). ``record_accuracy=False`` leaves the accuracies
    after unlearning out of the record (``null``): the protocol's evaluation computes them right after, in the same
    fp32 way.

    The folder follows the run-folder contract (:mod:`simulations.runfolder`): ``out`` may not be ``source``, and a
    folder holding another unlearning run is refused unless ``force`` (which removes its outputs, its stale
    ``metrics.json`` included)."""
    out = Path(out)
    with RunFolder(out, "unlearn", unlearn_identity(cfg, source), sources=[source], force=force,
                   outputs=UNLEARN_OUTPUTS, fix="add --force to replace it (its record, model and metrics are "
                   "removed)") as folder:
        return _unlearn(cfg, Path(source), out, folder, progress, record_accuracy)


class UnlearnRun:
    """What a method's ``setup``, ``phases`` and ``step`` see (:mod:`empirical.methods`): the model, the data, the
    settings ``cfg`` (shared) and ``s`` (the method's own), the optimizers, and the helpers below."""

    def __init__(self, cfg: UnlearnConfig, model, prepared, device: torch.device, generator: torch.Generator):
        self.cfg, self.s, self.model, self.prepared, self.device = cfg, cfg.settings, model, prepared, device
        self.generator = generator
        self.retain, self.forget = prepared.retain_idx, prepared.forget_idx
        self.union = torch.cat([self.retain, self.forget])
        self.forget_batch = min(cfg.batch_size, len(self.forget))
        self.params = list(model.parameters())
        self.masks: list[torch.Tensor] | None = None
        self.optimizers: list = []
        self.teacher = None
        self.total = 1
        # the forget batches of neggrad / sharp_minmax have a generator of their own, so the retain batches are the
        # ones fine-tuning with the same seed would see
        forget_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self._forget_stream = _endless(prepared.data, self.forget, self.forget_batch, forget_generator)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        from .trainer import _layout

        return _layout(x, self.cfg, self.device)

    def precision(self):
        """bf16 autocast on CUDA for SGD steps (``bf16``); SAM/ASAM steps in fp32/TF32 unless ``sam_bf16`` (bf16
        blurs the SAM correction: docs/protocol.md#precision)."""
        return autocast(self.device, self.cfg.bf16 and (not self.cfg.sam or self.cfg.sam_bf16))

    def forget_bn(self, forget_pass: bool):
        return bn_eval(self.model, forget_pass and self.cfg.forget_bn == "eval")

    def loss_on(self, x, y, sign: float = 1.0, forget_pass: bool = False) -> torch.Tensor:
        """``sign · CE`` of a batch (BatchNorm in eval mode on forget passes with ``forget_bn=eval``)."""
        with self.precision(), self.forget_bn(forget_pass):
            return sign * F.cross_entropy(self.model(self.layout(x)), y)

    def optimizer(self, rho: float, sign: str = "min"):
        return _optimizer(self.cfg, self.model, rho, sign)

    def step_on(self, optimizer, objective) -> torch.Tensor:
        return optimizer_step(optimizer, self.model, objective)

    def next_forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self._forget_stream)

    def random_labels(self) -> torch.Tensor:
        return random_labels(self.prepared.data.labels, self.forget, self.prepared.num_classes, self.generator,
                             self.s.rl_exclude_true)


def _unlearn(cfg: UnlearnConfig, source: Path, out: Path, folder: RunFolder, progress: bool | None,
             record_accuracy: bool = True) -> dict:
    from .trainer import accuracy, resolve_device

    method = get_method(cfg.method)
    device = resolve_device(TrainConfig(device=cfg.device))
    model, train_cfg, prepared, source_record = load_source(source, cfg, device)
    retain, forget = prepared.retain_idx, prepared.forget_idx
    if cfg.batch_size > len(retain):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(retain)} retain images; lower batch_size")
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    fid = forget_id(prepared.forget_idx.cpu().numpy())
    used = load_split(cfg.split_file or Path(source) / "split.npz")
    made_on = (folder.identity.get("source_identity") or {}).get("data")
    if made_on and prepared.data_digest != made_on:
        raise ConfigError(f"the data read for this run (digest {prepared.data_digest}) are not the data the model in "
                          f"{source} was trained on (digest {made_on}); point data_root at that run's data")
    folder.begin()
    (out / "metrics.json").unlink(missing_ok=True)  # metrics of an earlier model of this folder are stale now
    run = UnlearnRun(cfg, model, prepared, device, generator)
    if method.masked:
        run.masks, _ = saliency_mask(model, prepared.data, forget, cfg.mask_fraction, cfg.mask_rule,
                                     cfg.batch_size, device, cfg.bf16)
        buf = io.BytesIO()
        torch.save({"masks": [m.cpu() for m in run.masks], "forget_id": fid, "fraction": cfg.mask_fraction,
                    "rule": cfg.mask_rule, "mode": cfg.mask_mode, "source": str(source)}, buf)
        atomic_write_bytes(out / "mask.pt", buf.getvalue())

    epochs = cfg.num_epochs
    limit = cfg.steps_per_epoch or math.inf  # batches per phase and epoch

    def phase_steps(p) -> int:
        return int(min(math.ceil(len(p.indices) / p.batch_size), limit))

    run.total = max(1, sum(phase_steps(p) for e in range(epochs) for p in method.phases(run, e)))
    run.optimizers = method.setup(run)
    total = run.total
    factor = (lambda s: 1.0) if cfg.schedule == "constant" else (lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in run.optimizers]
    history: dict[str, list] = {"epoch_seconds": [], "loss": []}

    step = 0
    model.train()
    for epoch in range(epochs):
        began = time.perf_counter()
        losses = []
        for phase in method.phases(run, epoch):
            labels = phase.relabel() if phase.relabel is not None else None
            for k, (x, y) in enumerate(prepared.data.batches(phase.indices, phase.batch_size, shuffle=True,
                                                             augment=True, generator=generator, labels=labels)):
                if k >= limit:
                    break
                losses.append(method.step(run, phase, x, y, step))
                for s in schedules:
                    s.step()
                step += 1
        losses = torch.stack(losses).float()
        if not bool(torch.isfinite(losses).all()):
            raise ConfigError(f"{cfg.method}: the loss became NaN/inf in epoch {epoch}; lower lr (no model.pt, "
                              "split.npz or record.json was written)")
        if device.type == "cuda":
            torch.cuda.synchronize()
        history["epoch_seconds"].append(time.perf_counter() - began)
        history["loss"].append(float(losses.mean()))
        line = f"{cfg.method} epoch {epoch + 1}/{epochs}  loss {history['loss'][-1]:.4f}  " \
               f"{history['epoch_seconds'][-1]:.2f} s"
        if progress is not False:
            print(line, file=sys.stderr, flush=True)

    def acc(data, idx):  # evaluation is always fp32 (docs/protocol.md#precision)
        return 100.0 * accuracy(model, data, idx, device, train_cfg.replace(bf16=False,
                                                                           channels_last=cfg.channels_last))

    test_idx = torch.arange(len(prepared.test), device=device)
    after = {"retain": acc(prepared.data, retain), "forget": acc(prepared.data, forget),
             "test": acc(prepared.test, test_idx), "val": acc(prepared.data, prepared.val_idx)} \
        if record_accuracy else None
    save_split(out / "split.npz", **{k: v for k, v in used.items() if k != "description"},
               description=f"{used['description']} [the split of this unlearning run]")
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": cfg.resolved(), "forget_id": fid}, buf)
    atomic_write_bytes(out / "model.pt", buf.getvalue())
    record = {
        "method": cfg.method, "config": cfg.resolved(), "config_hash": folder.identity.get("config"),
        "lr": cfg.learning_rate, "epochs": epochs, "seed": cfg.seed,
        "source": str(source), "source_config": train_cfg.to_dict(), "forget_id": fid,
        "forget_size": int(len(forget)), "retain_size": int(len(retain)), "device": str(device),
        "provenance": provenance(str(device)), "epoch_seconds": history["epoch_seconds"], "loss": history["loss"],
        "accuracy": after, "steps": step,
        "source_accuracy": {k: 100.0 * source_record[f"{k}_acc"] for k in ("retain", "forget", "test", "val")},
        "model": str(out / "model.pt"), "mask": str(out / "mask.pt") if run.masks is not None else None,
    }
    atomic_write_json(out / "record.json", record)
    return record
