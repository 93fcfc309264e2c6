"""Memorization scores estimated by the project itself (docs/protocol.md#forget-sets): subset training.

    python -m empirical memorization --preset quick --models 16 --fraction 0.7 --out results/mem
    python -m empirical pretrain --preset quick --set forget_kind=memorization \\
        --set memorization_scores=results/mem/scores.npz --out results/pre

``mem_i = mean accuracy on i of the models trained with i − mean accuracy on i of the models trained without i``
(Feldman & Zhang's estimator, with eval-mode top-1 correctness as the accuracy). Each of the K models is trained
with the chosen preset (``retrain`` stage) on a subset of the 45k training split. The design is balanced: every
training image is left out of exactly ``m = round(K (1 − fraction))`` models, chosen at random (seeded), and kept
in the other K − m, so every score is defined once 1 ≤ m ≤ K − 1 (independent random subsets would leave some
images never held out when K is small). Each model's subset is therefore about ``fraction`` of the split.

Each model lives in ``OUT/model_k`` (a rerun skips finished models: the trainer resumes from their checkpoints);
``OUT/scores.npz`` holds ``scores`` (float64, one per image of the original CIFAR training order, NaN for images
outside the training split, e.g. the validation images), ``labels`` (the same order), ``counts_in``,
``counts_out``, and the settings; it is what ``memorization_scores=PATH`` reads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.errors import ConfigError
from simulations.provenance import provenance
from simulations.runfolder import RunFolder

from .config import TrainConfig


def holdout_design(n: int, models: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean (models, n): ``design[k, i]`` is True when image i is in model k's training subset. Every image is
    held out of exactly ``round(models (1 − fraction))`` models, chosen uniformly at random."""
    held = round(models * (1 - fraction))
    if not 1 <= held <= models - 1:
        raise ConfigError(f"models={models}, fraction={fraction}: each image must be held out of at least one model "
                          f"and kept by at least one (held out of {held}); use more models or another fraction")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n, models)), axis=1)[:, :held]  # per image, the models that leave it out
    design = np.ones((models, n), dtype=bool)
    design[order.T, np.arange(n)[None, :]] = False
    return design


def estimate(cfg: TrainConfig, out: Path, models: int = 16, fraction: float = 0.7, seed: int = 0,
             progress: bool | None = None, force: bool = False) -> dict[str, Any]:
    """Train the K subset models (module docstring) and write ``out/scores.npz`` and ``out/record.json``. The folder
    follows the run-folder contract (:mod:`simulations.runfolder`); ``force`` replaces an estimate of other settings.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction={fraction}: must lie in (0, 1)")
    if not (isinstance(models, int) and models >= 2):
        raise ConfigError(f"models={models}: need at least 2 models (each image held out of one, kept by another)")
    if not (isinstance(seed, int) and seed >= 0):
        raise ConfigError(f"seed={seed}: must be an integer >= 0")
    from simulations.provenance import empirical_numerics_version

    from .data import load_cifar

    data = load_cifar(cfg.dataset, cfg.data_root or None, limit_per_class=cfg.limit_per_class or None).digest
    identity = {"config": cfg.hash, "models": models, "fraction": fraction, "seed": seed,
                "numerics": empirical_numerics_version(), "data": data}
    outputs = ("scores.npz", "record.json", *(f"model_{k}" for k in range(models)),
               *(f"split_{k}.npz" for k in range(models)))
    with RunFolder(Path(out), "memorization", identity, force=force, outputs=outputs) as folder:
        return _estimate(cfg, Path(out), models, fraction, seed, progress, folder)


def _estimate(cfg: TrainConfig, out: Path, models: int, fraction: float, seed: int, progress, folder) -> dict:
    from .data import load_cifar, save_split, split_train_val
    from .metrics import model_outputs
    from .trainer import load_trained, resolve_device, train

    device = resolve_device(cfg)
    arrays = load_cifar(cfg.dataset, cfg.data_root or None, limit_per_class=cfg.limit_per_class or None)
    if (arrays.train_index < 0).any():
        raise ConfigError(f"the training order of {arrays.source} is unknown, so scores cannot be written in the "
                          "original order")
    train_idx, val_idx = split_train_val(arrays.train_y, seed=cfg.seed, val_fraction=cfg.val_fraction)
    design = holdout_design(len(train_idx), models, fraction, seed)
    folder.begin()
    correct = np.zeros((models, len(train_idx)), dtype=bool)
    for k in range(models):
        folder = out / f"model_{k}"
        kept = train_idx[design[k]]
        save_split(out / f"split_{k}.npz", train=train_idx, val=val_idx, forget=train_idx[~design[k]], retain=kept,
                   seed=cfg.seed, design_seed=seed, model=k, dataset=cfg.dataset, n_train=len(arrays.train_y),
                   description=f"memorization subset {k} of {models} (fraction {fraction}, seed {seed})")
        run_cfg = cfg.replace(split_file=str(out / f"split_{k}.npz"), seed=cfg.seed + k)
        train(run_cfg, folder, stage="retrain", progress=progress)
        model, _, prepared, _ = load_trained(folder, device, cfg.data_root)
        result = model_outputs(model, prepared.data, torch.as_tensor(train_idx, device=device), device,
                               bf16=False)
        correct[k] = result.probs.argmax(axis=1) == result.labels
    counts_in, counts_out = design.sum(axis=0), (~design).sum(axis=0)
    acc_in = np.where(design, correct, 0).sum(axis=0) / counts_in
    acc_out = np.where(~design, correct, 0).sum(axis=0) / counts_out
    n_original = int(arrays.train_index.max()) + 1
    scores = np.full(n_original, np.nan)
    labels = np.full(n_original, -1, dtype=np.int64)
    labels[arrays.train_index] = arrays.train_y
    positions = arrays.train_index[train_idx]
    scores[positions] = acc_in - acc_out
    full_in, full_out = np.zeros(n_original, np.int64), np.zeros(n_original, np.int64)
    full_in[positions], full_out[positions] = counts_in, counts_out
    buf = io.BytesIO()
    np.savez(buf, scores=scores, labels=labels, counts_in=full_in, counts_out=full_out, models=models,
             fraction=fraction, seed=seed)
    atomic_write_bytes(out / "scores.npz", buf.getvalue())
    test_acc = [json.loads((out / f"model_{k}" / "record.json").read_text())["test_acc"] for k in range(models)]
    record = {"config": cfg.to_dict(), "models": models, "fraction": fraction, "seed": seed, "device": str(device),
              "provenance": provenance(str(device)), "data_source": arrays.source,
              "scores": str(out / "scores.npz"), "mean_score": float(np.nanmean(scores)), "model_test_acc": test_acc,
              "estimator": "mem = accuracy of the models trained with the image - of those trained without it "
                           "(eval-mode top-1)"}
    atomic_write_json(out / "record.json", record)
    return record
