"""Configuration of one pretraining or retraining run (docs/protocol.md#presets): a frozen dataclass, presets,
overrides.

The ``paper`` preset is the paper's recipe: SGD momentum 0.9, weight decay 5e-4, lr 0.1, batch 256, cosine over
200 epochs, seed 2; SAM/ASAM wrap the same SGD. ``smoke`` runs on a CPU in seconds on a few hundred images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, fields
from typing import Any

from simulations.config import parse_assignments
from simulations.errors import ConfigError

CHOICES = {
    "dataset": ("cifar10", "cifar100"),
    "optimizer": ("sgd", "sam", "asam"),
    "schedule": ("cosine", "constant"),
    "device": ("auto", "cpu", "cuda"),
    "forget_kind": ("random", "class", "memorization"),
    "forget_level": ("high", "mid", "low"),
}


def check_fields(config: Any, choices: dict[str, tuple[str, ...]], non_negative: tuple[str, ...] = (),
                 positive: tuple[str, ...] = (), prefix: str = "") -> None:
    """Type-check a frozen config dataclass (ints become floats where a float is declared), its choice fields
    and its ranges; raise one :class:`ConfigError` naming the field (as ``prefix + name``)."""
    for f in fields(config):
        value = getattr(config, f.name)
        want = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(config, f.name, value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{prefix}{f.name}={value!r}: expected {want.__name__}")
        if want is float and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name}={value!r}: must be a finite number (NaN and inf have no meaning here)")
        if f.name in choices and value not in choices[f.name]:
            raise ConfigError(f"{prefix}{f.name}={value!r}: choose one of {', '.join(choices[f.name])}")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"{prefix}{name}={getattr(config, name)}: must be >= 0")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"{prefix}{name}={getattr(config, name)}: must be a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "cifar10"
    data_root: str = ""  # empty: $SAM_UNLEARNING_DATA or the shared data folder beside the repository
    limit_per_class: int = 0  # 0: all images; else the first k images of each class (train and test)
    arch: str = "resnet18"
    width: int = 64
    optimizer: str = "sgd"
    rho: float = 0.1
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs: int = 200
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    seed: int = 2
    val_fraction: float = 0.1
    forget_kind: str = "random"
    forget_size: int = 3000
    forget_class: int = 0
    forget_level: str = "high"  # forget_kind=memorization: the size highest / closest to 0.5 / lowest scores
    memorization_scores: str = ""  # empty: proxy 1 - C-score from the data folder; else a .npy/.npz score file
    split_file: str = ""  # a split.npz of an earlier run: reuse its train/val/forget/retain indices exactly
    forget_seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA only, SGD steps (evaluation is always fp32)
    sam_bf16: bool = False  # SAM/ASAM steps in bf16 too (default fp32/TF32: docs/protocol.md#precision)
    channels_last: bool = True
    compile: bool = False  # torch.compile of the model's forward
    cuda_graphs: bool = False  # capture the whole step (both SAM passes, the update) once and replay it (CUDA only)

    def __post_init__(self) -> None:
        check_fields(self, CHOICES, non_negative=("lr", "rho", "weight_decay", "momentum", "warmup_epochs",
                                                  "label_smoothing", "limit_per_class", "forget_size", "forget_class",
                                                  "seed", "forget_seed"), positive=("batch_size", "epochs", "width"))
        if self.compile and self.cuda_graphs:
            raise ConfigError("compile and cuda_graphs together are not supported; choose one")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction}: must lie in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """A stable hash of the configuration. Fields added after runs were made (:data:`LATER_FIELDS`) count only
        when they differ from their default, so the run folders made before keep their identity."""
        return stable_hash(self.to_dict(), LATER_FIELDS)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


LATER_FIELDS = {"sam_bf16": False}  # field: default, for the hash (TrainConfig.hash)


def stable_hash(settings: dict[str, Any], later: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the sorted settings; a field of ``later`` (added after runs were made) counts
    only when it differs from the default given there, so the folders made before keep their identity."""
    items = {k: v for k, v in settings.items() if not (k in later and v == later[k])}
    return hashlib.sha256(repr(sorted(items.items())).encode()).hexdigest()[:16]


def field_types(cls) -> dict[str, type]:
    """Field name → Python type of a config dataclass (for the typed ``--set`` parser)."""
    return {f.name: {"int": int, "float": float, "bool": bool, "str": str}[f.type] for f in fields(cls)}


FIELD_TYPES = field_types(TrainConfig)

PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a CPU: a narrow ResNet-18 on 40 images per class
    "smoke": dict(limit_per_class=40, width=8, epochs=5, batch_size=64, lr=0.05, forget_size=40, bf16=False,
                  channels_last=False),
    # minutes on one H100: ResNet-18 at full width to >= 93 % test accuracy (a guess until a GPU run says: 40 epochs
    # rather than 30 leave margin for the JPEG copy's lower accuracy; lr 0.2 is the paper's 0.1 scaled to batch 512)
    "quick": dict(epochs=40, batch_size=512, lr=0.2, warmup_epochs=1.0, label_smoothing=0.1),
    # the CPU-scale protocol of the 2-core machine (docs/protocol.md#presets): ResNet-18 at width 16, channels_last,
    # a class-balanced subset of 2,000 images per class (18k train / 2k val; the full 10k test set), |F| = 1200
    # (6.7 % of the training split, as 3000 of 45k), 12 epochs at batch 128 with one warmup epoch. Not the paper's
    # setting: say so.
    # SAM's radius is 0.05 (Foret et al.'s CIFAR-10 value): at rho 0.1 the 12-epoch SAM model underfit (test 73.0 %
    # against SGD's 76.4 %, final train loss 0.72 against 0.58; docs/protocol-cpu.md)
    "cpu": dict(limit_per_class=2000, width=16, epochs=12, batch_size=128, lr=0.1, warmup_epochs=1.0,
                forget_size=1200, bf16=False, channels_last=True, rho=0.05),
    # the paper's recipe (docs/protocol.md#pretraining-and-retraining)
    "paper": dict(),
}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` → typed overrides of :class:`TrainConfig` fields."""
    return parse_assignments(items, FIELD_TYPES)


def make_config(preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    if preset not in PRESETS:
        from simulations.fields import suggest

        raise ConfigError(f"unknown preset {preset!r}{suggest(preset, PRESETS)}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **(overrides or {})})
