"""Pretraining and retraining on CIFAR with the data on the device (docs/protocol.md#pretraining-and-retraining).

One loop for both stages: ``pretrain`` trains on the 45k training split, ``retrain`` on the retain set R only (the
gold standard of unlearning), with the same recipe. The loop keeps the data as uint8 on the device with batched
crop/flip, uses bf16 autocast and channels_last on CUDA, never calls ``.item()`` per step, and checkpoints
atomically after every epoch so an interrupted run resumes to the same result.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.errors import ConfigError
from simulations.provenance import provenance
from simulations.runfolder import RunFolder

from .config import TrainConfig
from .steps import GraphedStep, make_step, steps_in_bf16

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The loss turned NaN/inf; the last good checkpoint is kept."""


def resolve_device(cfg: TrainConfig) -> torch.device:
    """The run's device; on CUDA also lets cuDNN time its convolution algorithms for the fixed batch shapes
    (``torch.backends.cudnn.benchmark``) and allows TF32 for the float32 matmuls and convolutions left outside
    bf16 autocast."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA GPU is visible here; use --set device=cpu (or auto)")
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


@dataclass
class Prepared:
    data: Any  # DeviceData of the training images
    test: Any  # DeviceData of the test images
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    forget_idx: torch.Tensor
    retain_idx: torch.Tensor
    num_classes: int
    source: str
    split: dict | None = None  # the keywords of save_split for this run's split.npz (written by save_prepared_split)
    data_digest: str = ""  # the dataset's content digest (CifarArrays.digest)

    def identity(self) -> dict[str, str]:
        """The data identity of a run on this preparation: the dataset's content and the split's indices."""
        from .data import indices_digest

        return {"data": self.data_digest, "split": indices_digest(self.split)[:16]}


def prepare_data(cfg: TrainConfig, device: torch.device, out: Path | None = None) -> Prepared:
    """Load CIFAR, split 90/10 per class (seeded) and choose the forget set — or take all four index sets from
    ``cfg.split_file``, checked against the data — and, with ``out``, save the indices with their seeds, the dataset
    and the training-set size in ``out/split.npz`` (else :func:`save_prepared_split` writes it later, after every
    check of the run has passed)."""
    from .augment import DeviceData
    from .data import (
        check_split,
        forget_retain_split,
        load_cifar,
        load_split,
        memorization_scores,
        save_split,
        split_train_val,
    )

    arrays = load_cifar(cfg.dataset, cfg.data_root or None, limit_per_class=cfg.limit_per_class or None)
    if cfg.split_file:
        split = load_split(cfg.split_file)
        check_split(split, len(arrays.train_y), cfg.split_file, dataset=cfg.dataset)
        train_idx, val_idx, forget_idx, retain_idx = (split[k] for k in ("train", "val", "forget", "retain"))
        kept = {k: v for k, v in split.items() if k != "description"}
        to_save = {**kept, "dataset": cfg.dataset, "n_train": len(arrays.train_y),
                   "description": f"{split['description']} [from {cfg.split_file}]"}
    else:
        train_idx, val_idx = split_train_val(arrays.train_y, seed=cfg.seed, val_fraction=cfg.val_fraction)
        scores, what = None, f"forget {cfg.forget_kind}"
        if cfg.forget_kind == "memorization":
            scores, source = memorization_scores(arrays, cfg.memorization_scores or None, cfg.data_root or None)
            what = f"forget {cfg.forget_level}-memorization by {source}"
        forget_idx, retain_idx = forget_retain_split(train_idx, arrays.train_y, kind=cfg.forget_kind,
                                                     size=cfg.forget_size, seed=cfg.forget_seed,
                                                     cls=cfg.forget_class, scores=scores, level=cfg.forget_level)
        extra = {"forget_scores": scores[forget_idx]} if scores is not None else {}
        to_save = dict(train=train_idx, val=val_idx, forget=forget_idx, retain=retain_idx, seed=cfg.seed,
                       forget_seed=cfg.forget_seed, **extra, dataset=cfg.dataset, n_train=len(arrays.train_y),
                       description=f"{cfg.dataset} ({arrays.source}); {what}, |F| = {len(forget_idx)}")
    if out is not None:
        save_split(out / "split.npz", **to_save)
    to = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)  # noqa: E731
    train, test = DeviceData(arrays.train_x, arrays.train_y, device), DeviceData(arrays.test_x, arrays.test_y, device)
    return Prepared(train, test, to(train_idx), to(val_idx), to(forget_idx), to(retain_idx), len(arrays.classes),
                    arrays.source, to_save, arrays.digest)


def save_prepared_split(prepared: Prepared, path: Path, note: str = "") -> None:
    """Write the split a run was prepared with (see :func:`prepare_data`)."""
    from .data import save_split

    kwargs = dict(prepared.split)
    if note:
        kwargs["description"] = f"{kwargs['description']} {note}"
    save_split(path, **kwargs)


def learning_rate_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup over ``warmup`` steps, then cosine to 0 (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, fused: bool | None = None):
    """SGD (momentum, weight decay), or SAM/ASAM around it. On CUDA the update is the fused SGD kernel; with
    ``cuda_graphs`` the learning rate is a 0-dim device tensor that the schedule fills in place, so a captured step
    reads the current value at every replay. ``fused=False`` keeps torch's default SGD kernels (the baseline)."""
    from .sam import SAM

    kwargs = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if device.type == "cuda" if fused is None else fused:
        kwargs["fused"] = True
    if cfg.cuda_graphs:
        kwargs["lr"] = torch.tensor(cfg.lr, dtype=torch.float32, device=device)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), **kwargs)
    return SAM(model.parameters(), torch.optim.SGD, rho=cfg.rho, adaptive=cfg.optimizer == "asam", **kwargs)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data, indices: torch.Tensor, device: torch.device, cfg: TrainConfig,
             batch_size: int | None = None) -> float:
    """Top-1 accuracy in eval mode without augmentation, always in fp32 (one host sync at the end); ``batch_size``
    None: :func:`empirical.metrics.eval_batch_size`."""
    from .metrics import eval_batch_size

    if len(indices) == 0:
        return float("nan")
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in data.batches(indices, batch_size or eval_batch_size(device), shuffle=False, augment=False):
        logits = model(_layout(x, cfg, device))
        correct += (logits.argmax(dim=1) == y).sum()
    return correct.item() / len(indices)


def _layout(x: torch.Tensor, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _load_checkpoint(path: Path, cfg: TrainConfig, stage: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a corrupt checkpoint
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}); delete it or "
                          f"choose another --out") from None
    keys = {"model", "optimizer", "schedule", "generator", "history", "epoch"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise ConfigError(f"checkpoint {path} is not a checkpoint of this trainer; delete it or choose another --out")
    if state.get("config_hash") != cfg.hash or state.get("stage") != stage:
        raise ConfigError(f"checkpoint {path} belongs to another run (stage {state.get('stage')!r}, config hash "
                          f"{state.get('config_hash')!r}, this run {cfg.hash!r}); choose another --out or delete it")
    return state


def train(cfg: TrainConfig, out: Path, stage: str = "pretrain", progress: bool | None = None,
          max_epochs: int | None = None, graph_capture: bool | None = None, force: bool = False) -> dict[str, Any]:
    """Train (``stage`` pretrain: on the training split; retrain: on R) and write ``out/record.json``.

    Resumes from ``out/checkpoint.pt`` when it was written by the same configuration and stage. ``max_epochs``
    stops early (for tests of resumption) without writing the final record. ``graph_capture=False`` runs a
    ``cuda_graphs`` configuration through the graphed step without capturing (a rehearsal on a CPU, for tests).
    The folder follows the run-folder contract (:mod:`simulations.runfolder`); ``force`` replaces a run of other
    settings there."""
    if stage not in ("pretrain", "retrain"):
        raise ConfigError(f"unknown stage {stage!r}; choose pretrain or retrain")
    device = resolve_device(cfg)
    if cfg.cuda_graphs and device.type != "cuda" and graph_capture is not False:
        raise ConfigError(f"cuda_graphs=true needs a CUDA device (this run is on {device}); drop cuda_graphs")
    out = Path(out)
    prepared = prepare_data(cfg, device)
    with RunFolder(out, stage, train_identity(cfg, prepared), force=force,
                   outputs=(CHECKPOINT, "record.json", "split.npz"),
                   fix="add --force to replace it (its checkpoint and record are removed)") as folder:
        return _train(cfg, out, stage, folder, prepared, progress, max_epochs, graph_capture)


def train_identity(cfg: TrainConfig, prepared: Prepared) -> dict[str, str]:
    """What a training run folder is the result of: its configuration, the empirical numerics' code version
    (:func:`simulations.provenance.empirical_numerics_version`) and its data (:meth:`Prepared.identity`)."""
    from simulations.provenance import empirical_numerics_version

    return {"config": cfg.hash, "numerics": empirical_numerics_version(), **prepared.identity()}


def _train(cfg: TrainConfig, out: Path, stage: str, folder: RunFolder, prepared: Prepared, progress, max_epochs,
           graph_capture) -> dict:
    from .models import build_model

    device = resolve_device(cfg)
    train_idx = prepared.train_idx if stage == "pretrain" else prepared.retain_idx
    if cfg.batch_size > len(train_idx):
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(train_idx)} training images of this "
                          f"{stage}; lower batch_size")
    # every check before the first byte: a checkpoint of another run is refused here, a bad model or optimizer below
    state = None if folder.replacing else _load_checkpoint(out / CHECKPOINT, cfg, stage)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, prepared.num_classes, cfg.width, cfg.dataset).to(device)
    if cfg.channels_last:  # faster on CPUs too (docs/protocol.md#speed: 107 vs 152 ms per step at width 16)
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, device)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total, warmup = steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate_factor(s, total, warmup, cfg.schedule))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation, on the device
    history: dict[str, list] = {"epoch_seconds": [], "train_loss": [], "val_acc": []}
    start_epoch = 0
    folder.begin()
    save_prepared_split(prepared, out / "split.npz")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # a tensor learning rate comes back on the CPU
            if torch.is_tensor(group["lr"]):
                group["lr"] = group["lr"].to(device)
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        history, start_epoch = state["history"], state["epoch"] + 1
    # a captured step reads these very tensors: keep them in the param groups whatever the scheduler does
    lr_tensors = [g["lr"] for g in optimizer.param_groups] if cfg.cuda_graphs else []
    step_fn = make_step(model, optimizer, device, bf16=steps_in_bf16(cfg.bf16, cfg.optimizer, cfg.sam_bf16),
                        label_smoothing=cfg.label_smoothing,
                        compile=cfg.compile, cuda_graphs=cfg.cuda_graphs, batch_size=cfg.batch_size,
                        capture=graph_capture)
    bar = _progress(progress, cfg.epochs, start_epoch, stage)
    last_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, max_epochs)
    for epoch in range(start_epoch, last_epoch):
        model.train()
        began = time.perf_counter()
        losses = []
        for x, y in prepared.data.batches(train_idx, cfg.batch_size, shuffle=True, augment=True,
                                          generator=generator):
            losses.append(step_fn(_layout(x, cfg, device), y))
            schedule.step()
            if lr_tensors:
                _keep_lr_tensors(optimizer, lr_tensors)
        losses = torch.stack(losses).float()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0]) + epoch * steps_per_epoch
            kept = (f"the last good checkpoint {out / CHECKPOINT} is kept (epoch {epoch - 1})" if epoch > 0
                    else "no epoch finished, so no checkpoint was written")
            raise TrainingDiverged(f"loss became NaN/inf at step {bad} (epoch {epoch}); {kept}; lower lr or rho")
        if device.type == "cuda":
            torch.cuda.synchronize()
        history["epoch_seconds"].append(time.perf_counter() - began)
        history["train_loss"].append(float(losses.mean()))
        history["val_acc"].append(accuracy(model, prepared.data, prepared.val_idx, device, cfg))
        _save_checkpoint(out / CHECKPOINT, cfg, stage, epoch, model, optimizer, schedule, generator, history)
        line = (f"{stage} epoch {epoch + 1}/{cfg.epochs}  loss {history['train_loss'][-1]:.4f}  "
                f"val_acc {history['val_acc'][-1]:.4f}  {history['epoch_seconds'][-1]:.2f} s")
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(line.split("  ", 1)[1])
        else:
            print(line, file=sys.stderr, flush=True)
    if bar is not None:
        bar.close()
    if max_epochs is not None and last_epoch < cfg.epochs:
        return {"stopped_at_epoch": last_epoch}
    record = {
        "stage": stage, "config": cfg.to_dict(), "config_hash": cfg.hash, "seed": cfg.seed, "device": str(device),
        "provenance": provenance(str(device)), "data_source": prepared.source, "epochs": cfg.epochs,
        "epoch_seconds": history["epoch_seconds"], "train_loss": history["train_loss"],
        "val_acc_history": history["val_acc"],
        "train_acc": accuracy(model, prepared.data, train_idx, device, cfg),
        "val_acc": accuracy(model, prepared.data, prepared.val_idx, device, cfg),
        "test_acc": accuracy(model, prepared.test, torch.arange(len(prepared.test), device=device), device, cfg),
        "retain_acc": accuracy(model, prepared.data, prepared.retain_idx, device, cfg),
        "forget_acc": accuracy(model, prepared.data, prepared.forget_idx, device, cfg),
        "checkpoint": str(out / CHECKPOINT), "split": str(out / "split.npz"),
        "step_mode": _step_mode(cfg, step_fn),
    }
    atomic_write_json(out / "record.json", record)
    return record


def _keep_lr_tensors(optimizer, lr_tensors: list[torch.Tensor]) -> None:
    """torch's schedulers fill a tensor learning rate in place (torch >= 2.6 or so); an older one assigns a new
    tensor, which a captured graph would never read. Put the value into the captured tensor and the tensor back."""
    for group, tensor in zip(optimizer.param_groups, lr_tensors):
        if group["lr"] is not tensor:
            tensor.fill_(group["lr"])
            group["lr"] = tensor


def _step_mode(cfg: TrainConfig, step_fn) -> str:
    if isinstance(step_fn, GraphedStep):
        return f"cuda graphs: {step_fn.status} ({step_fn.replays} replays, {step_fn.eager_calls} eager steps)"
    return "eager + torch.compile" if cfg.compile else "eager"


def _save_checkpoint(path: Path, cfg, stage, epoch, model, optimizer, schedule, generator, history) -> None:
    buf = io.BytesIO()
    torch.save({"config_hash": cfg.hash, "stage": stage, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "generator": generator.get_state(), "history": history}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _progress(progress: bool | None, total: int, start: int, stage: str):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="epoch", desc=stage, dynamic_ncols=True)


def load_trained(run: Path, device: torch.device, data_root: str = "", weights: Path | None = None,
                 channels_last: bool = True, split: Path | None = None):
    """``(model, train_cfg, prepared, record)`` of a finished pretrain/retrain run folder: its configuration, its data
    with the run's exact split (``run/split.npz``) and its model with the weights of ``weights`` (default: the run's
    checkpoint; e.g. an unlearned ``model.pt`` of the same architecture). One clear error if anything is missing.

    ``split``: another split file to prepare the data with — another forget set of the same model. Its train and
    val indices must be the run's (the model was trained on exactly those)."""
    from .data import load_split
    from .models import build_model

    run = Path(run)
    weights = Path(weights) if weights is not None else run / CHECKPOINT
    for path in (run / "record.json", run / "split.npz", weights, *([Path(split)] if split else [])):
        if not path.is_file():
            raise ConfigError(f"{path} is missing: expected the --out folder of a finished pretrain or retrain run")
    if split is not None and Path(split) != run / "split.npz":
        own, other = load_split(run / "split.npz"), load_split(split)
        if not all(np.array_equal(own[k], other[k]) for k in ("train", "val")):
            raise ConfigError(f"split {split} has other train/val indices than {run / 'split.npz'}: the model of "
                              f"{run} was trained on another set; only the forget/retain partition may differ")
    record = load_record(run)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    train_cfg = TrainConfig(**{k: v for k, v in record["config"].items() if k in known})
    train_cfg = train_cfg.replace(split_file=str(split or run / "split.npz"), cuda_graphs=False, compile=False,
                                  device=device.type, **({"data_root": data_root} if data_root else {}))
    prepared = prepare_data(train_cfg, device)
    model = build_model(train_cfg.arch, prepared.num_classes, train_cfg.width, train_cfg.dataset).to(device)
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched weight file
        raise ConfigError(f"cannot load the model of {weights} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, train_cfg, prepared, record


def load_record(out: Path) -> dict:
    """The ``record.json`` of a run folder; a missing, truncated or foreign one is one clear error."""
    path = Path(out) / "record.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: expected the --out folder of a finished run") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable or truncated ({type(exc).__name__}); rerun that stage") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ConfigError(f"{path} is not the record of a run (no config); rerun that stage")
    return record
