"""What each empirical configuration field and preset means: the text behind ``--set`` help, ``python -m empirical
fields`` and ``python -m empirical presets``. Tests check that every field of :class:`~empirical.config.TrainConfig`,
of :class:`~empirical.unlearn.CommonSettings` and of every method's settings has a line here, so a new field cannot
ship undocumented. Unknown ``--set`` keys get a "did you mean" from :func:`simulations.fields.suggest`."""

from __future__ import annotations

import dataclasses
from typing import Any

TRAIN_FIELD_HELP: dict[str, str] = {
    "dataset": "cifar10 or cifar100",
    "data_root": "CIFAR folder or archive; empty: $SAM_UNLEARNING_DATA or the shared data folder beside the repository",
    "limit_per_class": "0: all images; else the first k images of each class (train and test)",
    "arch": "network: resnet18, resnet34, resnet50 or vgg16_bn (CIFAR variants)",
    "width": "width multiplier: channels of the first stage (64 is the standard ResNet-18)",
    "optimizer": "pretraining optimizer: sgd, sam or asam (SAM/ASAM wrap the same SGD)",
    "rho": "SAM/ASAM radius",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay of SGD",
    "batch_size": "training batch size",
    "epochs": "training epochs",
    "warmup_epochs": "linear warmup of the learning rate over this many epochs (may be fractional)",
    "schedule": "learning-rate schedule after warmup: cosine (to 0) or constant",
    "label_smoothing": "label smoothing of the cross-entropy",
    "seed": "seed of the initial weights, the shuffling and the augmentation",
    "val_fraction": "share of the training images held out for validation (0.1: 45k/5k on CIFAR)",
    "forget_kind": "forget set: random, class (one class) or memorization (by memorization score)",
    "forget_size": "|F|, images in the forget set",
    "forget_class": "the class to forget (forget_kind=class)",
    "forget_level": "forget_kind=memorization: the forget_size highest (high), closest to 0.5 (mid) or lowest (low) "
                    "scores",
    "memorization_scores": "empty: the proxy 1 - C-score from the data folder; else a .npy/.npz score file",
    "split_file": "a split.npz of an earlier run: reuse its train/val/forget/retain indices exactly",
    "forget_seed": "seed of the random forget set",
    "device": "auto (cuda when available), cpu or cuda",
    "bf16": "bf16 autocast on CUDA for SGD steps (evaluation is always fp32)",
    "sam_bf16": "SAM/ASAM steps in bf16 too (default fp32/TF32: bf16 blurs the SAM correction)",
    "channels_last": "channels_last memory format (faster on GPUs and CPUs)",
    "compile": "torch.compile of the model's forward",
    "cuda_graphs": "capture the whole step (both SAM passes, the update) once as a CUDA graph, replay it (CUDA only)",
}

UNLEARN_FIELD_HELP: dict[str, str] = {
    "method": "unlearning method: ft, ga, rl, neggrad, l1_sparse, scrub, salun or sharp_minmax",
    # shared by every method (empirical.unlearn.CommonSettings)
    "optimizer": "unlearning optimizer: sgd, sam or asam",
    "base": "the base optimizer inside SAM: sgd (momentum) or adamw (the released code)",
    "rho": "SAM radius (sharp_minmax: of the retain/min part)",
    "lamb": "SAM mix lambda of g + lambda (g(W+eps) - g)",
    "lr": "learning rate; < 0: the method's default (records store the value used)",
    "epochs": "epochs; 0: the method's default (records store the value used)",
    "steps_per_epoch": "> 0: each phase of an epoch stops after this many batches (a CPU-scale budget); 0: full passes",
    "batch_size": "batch size of the retain and forget passes",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "forget_bn": "train (forget batches move BatchNorm statistics) or eval",
    "schedule": "learning-rate schedule: constant or cosine",
    "seed": "seed of the shuffling, the augmentation and the random labels",
    "device": "auto (cuda when available), cpu or cuda",
    "bf16": "bf16 autocast on CUDA for SGD steps",
    "sam_bf16": "SAM/ASAM steps in bf16 too (default fp32/TF32)",
    "channels_last": "channels_last memory format",
    "data_root": "empty: the source run's data root",
    "split_file": "empty: the source run's split; else another forget set over the same train/val split",
    # the methods' own settings (empirical.methods)
    "alpha": "weight of the retain loss: alpha L(R) - (1 - alpha) L(F)",
    "rl_exclude_true": "Random Label: draw the new label from the other classes only",
    "l1_weight": "gamma_0, the initial L1 weight",
    "scrub_msteps": "epochs that begin with a max-step pass over F",
    "scrub_temperature": "distillation temperature T",
    "scrub_beta": "weight of the KL term of the min-step",
    "scrub_gamma": "weight of the CE term of the min-step",
    "mask_fraction": "q, the fraction of parameters in the saliency mask",
    "mask_rule": "largest |G| (the paper) or smallest (the authors' code)",
    "mask_mode": "paper (masked-out entries frozen) or authors (the released code's masking)",
    "forget_rho": "radius of the forget/max part; < 0: the same as rho",
}

PRESET_HELP: dict[str, str] = {
    "smoke": "seconds on a CPU: a narrow ResNet-18 (width 8) on 40 images per class, 5 epochs",
    "quick": "minutes on one H100: ResNet-18 at full width, 40 epochs at batch 512",
    "cpu": "the CPU-scale protocol: ResNet-18 width 16, 2,000 images per class, 12 epochs (the protocol's SAM "
           "pretraining 18), |F| = 1200; not the paper's setting",
    "paper": "the paper's recipe: SGD momentum 0.9, wd 5e-4, lr 0.1, batch 256, cosine over 200 epochs",
}


def train_fields_table() -> str:
    """One line per training field (``--set`` of pretrain, retrain, memorization, protocol): name, type, default,
    meaning."""
    from simulations.fields import describe_fields

    from .config import FIELD_TYPES, TrainConfig

    return describe_fields(TrainConfig().to_dict(), FIELD_TYPES, TRAIN_FIELD_HELP)


def unlearn_fields() -> dict[str, tuple[type, Any, str]]:
    """Every unlearning field (``unlearn --set``, ``protocol --unlearn-set``): name → (type, default, meaning); a
    method's own setting names the methods that have it."""
    from .methods import METHODS
    from .unlearn import COMMON_FIELDS, CommonSettings

    out: dict[str, tuple[type, Any, str]] = {"method": (str, "neggrad", UNLEARN_FIELD_HELP["method"])}
    defaults = dataclasses.asdict(CommonSettings())
    for name, typ in COMMON_FIELDS.items():
        out[name] = (typ, defaults[name], UNLEARN_FIELD_HELP.get(name, ""))
    owners: dict[str, list[str]] = {}
    for method, unit in METHODS.items():
        for f in dataclasses.fields(unit.settings):
            owners.setdefault(f.name, []).append(method)
            if f.name not in out:
                typ = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
                out[f.name] = (typ, f.default, UNLEARN_FIELD_HELP.get(f.name, ""))
    for name, methods in owners.items():
        typ, default, text = out[name]
        out[name] = (typ, default, f"{text} [{', '.join(methods)}]")
    return out


def unlearn_fields_table() -> str:
    """One line per unlearning field: name, type, default, meaning (a method's own setting: [its methods])."""
    from simulations.fields import describe_fields

    fields = unlearn_fields()
    return describe_fields({k: v[1] for k, v in fields.items()}, {k: v[0] for k, v in fields.items()},
                           {k: v[2] for k, v in fields.items()})


def presets_text() -> str:
    """``python -m empirical presets``: the training presets (``--preset``: their changes to the defaults) and the
    protocol's unlearning presets."""
    from .config import PRESETS
    from .protocol import EVAL_PRESETS, PRETRAIN_PRESETS, UNLEARN_PRESETS

    lines = ["training presets (pretrain, retrain, memorization, protocol --preset): changes to the defaults"]
    for name, changes in PRESETS.items():
        lines.append(f"  {name:6s} {PRESET_HELP.get(name, '')}")
        lines.append(f"         {changes or '(none: the defaults are the paper recipe)'}")
    lines.append("unlearning presets (protocol --preset; scoped like --unlearn-set, which wins)")
    for name, changes in UNLEARN_PRESETS.items():
        lines.append(f"  {name:6s} {changes}")
    lines.append("  (other presets: none, every method's own defaults)")
    lines.append("pretraining per optimizer (protocol --preset; below --set, scoped OPT.key=value or not)")
    for name, changes in PRETRAIN_PRESETS.items():
        lines.append(f"  {name:6s} {changes}")
    lines.append("evaluation (protocol --preset; --retain-sample wins)")
    for name, changes in EVAL_PRESETS.items():
        lines.append(f"  {name:6s} {changes}")
    return "\n".join(lines)
