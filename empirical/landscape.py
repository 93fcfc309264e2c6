"""Loss landscapes around a trained or unlearned model (docs/protocol.md#metrics, "loss landscape").

The loss is evaluated on the plane ``W + α·d1 + β·d2`` spanned by two random directions, on a grid of α, β in
``[−span, span]`` (25 × 25 on [−1, 1] by default), separately on the forget set F and on the test set, in eval mode
without augmentation; :func:`landscape_summary` reduces a grid to its spread and the share of it that lies in the
centre's basin. 1-D slices along one direction come from :func:`loss_slice`, or for free from a surface's axes.

Directions (:func:`random_directions`)
    * Both are drawn as standard Gaussians from a CPU ``torch.Generator`` seeded with ``seed`` (all of d1 first, then
      all of d2, in ``model.parameters()`` order), so the same seed and model give the same directions on any device.
      Every parameter tensor is drawn even when it is later zeroed, so the ``ignore_bn_and_bias`` flag does not change
      the directions of the other tensors.
    * **Normalisation units.** ``normalization="tensor"``: a unit is a whole parameter tensor. ``"filter"`` (Li et al.
      2018, filter normalisation): for a tensor with ``dim > 1`` a unit is one slice along dim 0 (a conv filter, a
      row of a linear weight); a 1-D tensor (BN weight/bias, a bias) stays one unit in both modes.
    * **Orthogonalisation, then rescaling, unit by unit.** Within each unit the raw d2 is Gram–Schmidt orthogonalised
      against the raw d1, then both are rescaled to the norm of the parameter's unit. Rescaling a unit by a positive
      factor keeps the two unit vectors orthogonal, so the final directions are *exactly* orthogonal unit by unit and
      hence over the whole flattened vector, and *both* keep the prescribed per-unit norms. (A global Gram–Schmidt
      before the rescaling would leave the rescaled directions only approximately orthogonal; one after it would
      break d2's norms.) A unit with a single element cannot hold two orthogonal non-zero directions: d2 is zero
      there (d1 keeps its norm). A unit whose parameter is all zeros (e.g. BN β at initialisation) gets zero in both.
    * **1-D tensors.** ``ignore_bn_and_bias=False`` (default): rescaled to the tensor's norm like any other unit.
      ``True``: zero in both directions, i.e. BN affine parameters and biases stay fixed (Li et al.'s ``biasbn``).
    * Only parameters move; buffers (BN running statistics, the normalisation constants) are left alone.

Evaluation (:func:`loss_surface`, :func:`loss_slice`)
    The batches are built once and reused for every grid point. Each point's weights are set in place from the saved
    base, ``W ← (base + α·d1) + β·d2`` (``base + α·d1`` is cached per row of the grid), never by accumulating steps,
    so there is no drift. The per-point losses stay on the device and are read back once at the end. Whatever happens
    (an exception included), the parameters are copied back bitwise from the saved base and every module's
    train/eval flag is restored. ``bf16`` (CUDA only) is off by default: the basin ratio measures small differences
    from the centre's loss, which bf16 rounding would blur.

Summary (:func:`landscape_summary`)
    ``std`` is the population standard deviation (ddof = 0) of all grid losses; ``basin_ratio`` is the percentage
    (0–100) of grid points with ``|loss − loss_centre| ≤ 0.5·std``, the centre being the point α = β = 0 (so grids
    must have an odd number of points per axis); plus ``centre_loss``, ``min`` and ``max``.

    >>> d1, d2 = random_directions(model, seed=0)
    >>> surf = loss_surface(model, data, forget_idx, (d1, d2))            # surf["loss"][i, j] at (α_i, β_j)
    >>> landscape_summary(surf["loss"])                                   # {"std": ..., "basin_ratio": ..., ...}
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulations.errors import ConfigError

from .steps import autocast

NORMALIZATIONS = ("tensor", "filter")
Directions = list[torch.Tensor]


# ---------------------------------------------------------------------------------------------------------- directions

def random_directions(model: nn.Module, seed: int, normalization: str = "tensor",
                      ignore_bn_and_bias: bool = False) -> tuple[Directions, Directions]:
    """Two seeded random directions ``(d1, d2)``, lists of tensors shaped like ``list(model.parameters())`` (same
    device and dtype), orthogonal and rescaled per tensor or per filter as described in the module docstring."""
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization={normalization!r}: must be one of {NORMALIZATIONS}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed={seed!r}: must be an integer")
    if not isinstance(ignore_bn_and_bias, bool):
        raise ConfigError(f"ignore_bn_and_bias={ignore_bn_and_bias!r}: must be True or False")
    params = [p.detach() for p in model.parameters()]
    if not params:
        raise ConfigError("the model has no parameters: there is no landscape to draw")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    raw1 = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    raw2 = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    d1, d2 = [], []
    for p, g1, g2 in zip(params, raw1, raw2):
        if p.dim() <= 1 and ignore_bn_and_bias:
            d1.append(torch.zeros_like(p))
            d2.append(torch.zeros_like(p))
            continue
        units = p.shape[0] if (normalization == "filter" and p.dim() > 1) else 1
        u1, u2 = g1.reshape(units, -1), g2.reshape(units, -1)
        target = p.to("cpu", torch.float64).reshape(units, -1).norm(dim=1, keepdim=True)
        u2 = u2 - (u1 * u2).sum(1, keepdim=True) / (u1 * u1).sum(1, keepdim=True) * u1  # Gram–Schmidt per unit
        n1, n2 = u1.norm(dim=1, keepdim=True), u2.norm(dim=1, keepdim=True)
        # a single-element unit leaves (numerically) nothing orthogonal to d1: zero, not a rescaled rounding residue
        keep2 = n2 > 1e-9 * g2.reshape(units, -1).norm(dim=1, keepdim=True)
        if u1.shape[1] == 1:
            keep2 = torch.zeros_like(keep2)
        u1 = u1 * (target / n1)
        u2 = torch.where(keep2, u2 * (target / n2.clamp_min(1e-300)), torch.zeros_like(u2))
        d1.append(u1.reshape(p.shape).to(p.device, p.dtype))
        d2.append(u2.reshape(p.shape).to(p.device, p.dtype))
    return d1, d2


# ---------------------------------------------------------------------------------------------------------- evaluation

def _check_points(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 3 or value % 2 == 0:
        raise ConfigError(f"{name}={value!r}: must be an odd integer >= 3 so that the grid contains the centre 0")
    return int(value)


def _check_span(span: Any) -> float:
    if isinstance(span, bool) or not isinstance(span, (int, float, np.floating, np.integer)) \
            or not np.isfinite(span) or span <= 0:
        raise ConfigError(f"span={span!r}: must be a finite number > 0 (the grid covers [-span, span])")
    return float(span)


def _check_direction(name: str, direction: Any, params: list[torch.Tensor]) -> Directions:
    """``direction`` as a list of tensors on the parameters' devices and dtypes, or a ConfigError naming the problem."""
    if isinstance(direction, torch.Tensor) or not isinstance(direction, Sequence):
        raise ConfigError(f"{name} must be a list of tensors, one per model parameter, got {type(direction).__name__}")
    if len(direction) != len(params):
        raise ConfigError(f"{name} has {len(direction)} tensors but the model has {len(params)} parameters "
                          f"(directions must come from random_directions on the same architecture)")
    out = []
    for k, (d, p) in enumerate(zip(direction, params)):
        if not isinstance(d, torch.Tensor) or d.shape != p.shape:
            shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ConfigError(f"{name}[{k}] has shape {shape} but parameter {k} has shape {tuple(p.shape)}")
        out.append(d.detach().to(p.device, p.dtype))
    return out


def _grid(points: int, span: float) -> np.ndarray:
    """``points`` values from −span to span, symmetric, with the middle one exactly 0."""
    c = points // 2
    return span * (np.arange(points) - c) / c


def _batches(data, indices, batch_size: int, device: torch.device) -> tuple[list, int]:
    """All batches of ``indices`` (eval: no shuffle, no augmentation), built once, and the sample count."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: must be a positive integer")
    idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    if idx.dim() != 1 or idx.numel() == 0:
        raise ConfigError(f"indices must be a non-empty 1-D array of sample indices, got shape {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ConfigError(f"indices must be integers, got {idx.dtype}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= len(data):
        raise ConfigError(f"indices span [{lo}, {hi}] but the data set has {len(data)} samples")
    batches = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
               for x, y in data.batches(idx, int(batch_size), shuffle=False, augment=False)]
    return batches, int(idx.numel())


def _resolve_device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _progress_bar(progress: bool | None, total: int, desc: str):
    """A tqdm bar over ``total`` grid points, or None: off when ``progress`` is False, or when it is None and stderr
    is not a terminal (as the trainer's bar)."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="point", desc=desc, dynamic_ncols=True)


def _scan(model: nn.Module, batches: list, count: int, device: torch.device, bf16: bool, d1: Directions,
          alphas: np.ndarray, d2: Directions | None = None, betas: np.ndarray | None = None,
          bar=None) -> np.ndarray:
    """Mean cross-entropy at ``base + α_i·d1 (+ β_j·d2)`` for every grid point, shape (len(alphas), len(betas) or 1).
    Parameters and train/eval flags are restored on exit, also on an exception. ``bar``: a progress bar advanced
    by one per grid point."""
    params = list(model.parameters())
    modes = [(m, m.training) for m in model.modules()]
    with torch.no_grad():
        base = [p.detach().clone() for p in params]
        row = [b.clone() for b in base] if d2 is not None else params
        columns = betas if d2 is not None else np.zeros(1)
        losses = torch.empty(len(alphas), len(columns), dtype=torch.float64, device=device)
        try:
            model.eval()
            for i, a in enumerate(alphas):
                torch._foreach_copy_(row, base)
                torch._foreach_add_(row, d1, alpha=float(a))
                for j, b in enumerate(columns):
                    if d2 is not None:
                        torch._foreach_copy_(params, row)
                        torch._foreach_add_(params, d2, alpha=float(b))
                    total = torch.zeros((), dtype=torch.float64, device=device)
                    for x, y in batches:
                        with autocast(device, bf16):
                            logits = model(x)
                        total += F.cross_entropy(logits.float(), y, reduction="sum")
                    losses[i, j] = total
                    if bar is not None:
                        bar.update(1)
        finally:
            torch._foreach_copy_(params, base)
            for m, training in modes:
                m.training = training
    return (losses / count).cpu().numpy()


def loss_surface(model: nn.Module, data, indices, directions: tuple[Directions, Directions], grid: int = 25,
                 span: float = 1.0, batch_size: int = 1024, device: torch.device | str | None = None,
                 bf16: bool = False, progress: bool | None = None, desc: str = "landscape") -> dict[str, np.ndarray]:
    """Mean cross-entropy over ``indices`` of ``data`` (a :class:`empirical.augment.DeviceData`) on the plane
    ``W + α·d1 + β·d2``, α and β on ``grid`` points of [−span, span], in eval mode without augmentation.

    Returns ``{"alphas": (grid,), "betas": (grid,), "loss": (grid, grid)}`` with ``loss[i, j]`` at
    ``(alphas[i], betas[j])``; the centre ``loss[grid // 2, grid // 2]`` is the model's own loss. ``device`` (default:
    the parameters' device) is where the batches go and what decides bf16 autocast. The model comes back unchanged.
    ``progress``: a tqdm bar over the grid points on stderr (None: when stderr is a terminal), labelled ``desc``.
    """
    grid, span = _check_points("grid", grid), _check_span(span)
    if isinstance(directions, torch.Tensor) or not isinstance(directions, Sequence) or len(directions) != 2:
        raise ConfigError("directions must be a pair (d1, d2) of lists of tensors, as random_directions returns")
    params = list(model.parameters())
    d1, d2 = (_check_direction(name, d, params) for name, d in zip(("d1", "d2"), directions))
    device = _resolve_device(model, device)
    batches, count = _batches(data, indices, batch_size, device)
    alphas, betas = _grid(grid, span), _grid(grid, span)
    bar = _progress_bar(progress, grid * grid, desc)
    try:
        loss = _scan(model, batches, count, device, bf16, d1, alphas, d2, betas, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    return {"alphas": alphas, "betas": betas, "loss": loss}


def loss_slice(model: nn.Module, data, indices, direction: Directions, points: int = 25, span: float = 1.0,
               batch_size: int = 1024, device: torch.device | str | None = None,
               bf16: bool = False, progress: bool | None = None) -> dict[str, np.ndarray]:
    """1-D version of :func:`loss_surface` along one direction: ``{"alphas": (points,), "loss": (points,)}`` with
    ``loss[i]`` the mean cross-entropy at ``W + alphas[i]·direction``."""
    points, span = _check_points("points", points), _check_span(span)
    d = _check_direction("direction", direction, list(model.parameters()))
    device = _resolve_device(model, device)
    batches, count = _batches(data, indices, batch_size, device)
    alphas = _grid(points, span)
    bar = _progress_bar(progress, points, "landscape slice")
    try:
        loss = _scan(model, batches, count, device, bf16, d, alphas, bar=bar)[:, 0]
    finally:
        if bar is not None:
            bar.close()
    return {"alphas": alphas, "loss": loss}


# ------------------------------------------------------------------------------------------------------------- summary

def landscape_summary(loss_grid: np.ndarray) -> dict[str, float]:
    """``std`` (ddof = 0), ``basin_ratio`` (% of points with ``|loss − centre| ≤ 0.5·std``), ``centre_loss``, ``min``,
    ``max`` of a surface (2-D) or slice (1-D) whose every axis has an odd length ≥ 3; the centre is the middle point."""
    loss = np.asarray(loss_grid, dtype=np.float64)
    if loss.ndim not in (1, 2) or any(n < 3 or n % 2 == 0 for n in loss.shape):
        raise ConfigError(f"loss grid of shape {loss.shape}: must be 1-D or 2-D with an odd length >= 3 on every "
                          "axis, so that the centre α = β = 0 is a grid point")
    if not np.isfinite(loss).all():
        raise ConfigError("loss grid has non-finite values (the loss diverged): use a smaller span")
    centre = float(loss[tuple(n // 2 for n in loss.shape)])
    std = float(loss.std())
    basin = float(np.mean(np.abs(loss - centre) <= 0.5 * std) * 100.0)
    return {"std": std, "basin_ratio": basin, "centre_loss": centre, "min": float(loss.min()), "max": float(loss.max())}


def landscape(model: nn.Module, sets: Mapping[str, tuple[Any, Any]], seed: int, grid: int = 25, span: float = 1.0,
              normalization: str = "tensor", ignore_bn_and_bias: bool = False, batch_size: int = 1024,
              device: torch.device | str | None = None, bf16: bool = False,
              progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """The whole measurement of docs/protocol.md#metrics: one pair of directions, then per named set (e.g. ``{"forget":
    (train_data, forget_idx), "test": (test_data, None-or-indices)}``) the surface, its summary and its two axis slices
    (``slice_alpha`` = loss along d1 at β = 0, ``slice_beta`` along d2 at α = 0; read off the grid, no extra cost).
    ``progress``: one tqdm bar per set over its grid points (None: when stderr is a terminal)."""
    if not sets:
        raise ConfigError("sets is empty: name at least one (data, indices) pair, e.g. the forget and test sets")
    directions = random_directions(model, seed, normalization, ignore_bn_and_bias)
    out = {}
    for name, (data, indices) in sets.items():
        idx = np.arange(len(data)) if indices is None else indices
        surf = loss_surface(model, data, idx, directions, grid, span, batch_size, device, bf16, progress=progress,
                            desc=f"landscape {name} ({grid}x{grid})")
        c = grid // 2
        out[name] = {**surf, "summary": landscape_summary(surf["loss"]),
                     "slice_alpha": surf["loss"][:, c].copy(), "slice_beta": surf["loss"][c, :].copy()}
    return out
