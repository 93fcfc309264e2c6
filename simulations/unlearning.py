"""Unlearning objectives of docs/model.md#unlearning-objectives, registered by name.

Each method is a function ``method(run, state) -> state`` that drives ``run.step`` (one optimizer step over the
batch of configurations, see :class:`simulations.engine.GroupRun`). Objectives are weighted sums of per-sample
logistic losses, so a method only chooses per-sample weights ``a_i``, labels and, for Sharp MinMax, masks.
Per-configuration hyperparameters come from the config fields listed in ``uses``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .data import STREAM_BATCH, STREAM_RELABEL, hash_uniform


@dataclass(frozen=True)
class UnlearningMethod:
    name: str
    run: Callable
    uses: tuple[str, ...]
    description: str


METHODS: dict[str, UnlearningMethod] = {}


def register(name: str, uses: tuple[str, ...], description: str):
    def wrap(fn):
        METHODS[name] = UnlearningMethod(name, fn, uses, description)
        return fn

    return wrap


@register("neggrad", ("alpha", "unlearn_optimizer", "unlearn_lr", "unlearn_steps"),
          "L = alpha L(R) - (1 - alpha) L(F): descent on a retain batch, ascent on a forget batch [seen]")
def neggrad(run, state):
    retain = run.sampler(run.retain, run.unlearn_batch, STREAM_BATCH + 100)
    forget = run.sampler(run.forget, run.unlearn_batch, STREAM_BATCH + 200)
    alpha = run.param("alpha")[:, None]
    for t in range(run.cfg.unlearn_steps):
        weights = alpha * retain(t) - (1 - alpha) * forget(t)
        state = run.step(state, run.labels, weights, run.unlearn_lr, run.unlearn_rho)
    return state


@register("ga", ("unlearn_optimizer", "unlearn_lr", "unlearn_steps"), "gradient ascent on L(F)")
def gradient_ascent(run, state):
    forget = run.sampler(run.forget, run.unlearn_batch, STREAM_BATCH + 200)
    for t in range(run.cfg.unlearn_steps):
        state = run.step(state, run.labels, -forget(t), run.unlearn_lr, run.unlearn_rho)
    return state


@register("ft", ("unlearn_optimizer", "unlearn_lr", "unlearn_steps"), "fine-tune on the retain set: L(R)")
def fine_tune(run, state):
    retain = run.sampler(run.retain, run.unlearn_batch, STREAM_BATCH + 100)
    for t in range(run.cfg.unlearn_steps):
        state = run.step(state, run.labels, retain(t), run.unlearn_lr, run.unlearn_rho)
    return state


def relabelled(run) -> torch.Tensor:
    """Forget samples get the opposite label (``flip``) or a uniformly random one (``uniform``)."""
    if run.cfg.forget_target == "flip":
        target = -run.labels
    else:
        u = hash_uniform(STREAM_RELABEL, run.keys, 0, run.cfg.n)
        target = torch.as_tensor(u < 0.5, device=run.labels.device).to(run.labels.dtype) * 2 - 1
    return torch.where(run.forget, target, run.labels)


@register("rl", ("forget_target", "unlearn_optimizer", "unlearn_lr", "unlearn_steps"),
          "Random Label: train on F relabelled (flip: -y, uniform: random) together with R [seen]")
def random_label(run, state):
    labels = relabelled(run)
    everyone = run.sampler(torch.ones_like(run.forget), run.unlearn_batch, STREAM_BATCH + 300)
    for t in range(run.cfg.unlearn_steps):
        state = run.step(state, labels, everyone(t), run.unlearn_lr, run.unlearn_rho)
    return state


@register("retrain", ("optimizer", "lr", "steps", "rho", "sam_steps"),
          "retrain on R from fresh initial filters with the pretraining recipe (the gold standard)")
def retrain(run, state):
    state = run.restart_from_retrain_init()
    retain = run.sampler(run.retain, run.train_batch, STREAM_BATCH + 400)
    sam_until = run.cfg.sam_steps or run.cfg.steps  # the pretraining's schedule: SAM for the first sam_steps only
    zero_rho = torch.zeros_like(run.train_rho)
    for t in range(run.cfg.steps):
        state = run.step(state, run.labels, retain(t), run.train_lr, run.train_rho if t < sam_until else zero_rho)
    return state


def forget_part_mask(run, state):
    """Sharp MinMax split [seen]: the forget part W_F is the ``mask_fraction`` of parameters with the largest
    forget-gradient magnitude |grad L(F)|, ranked per filter (norm of the filter's gradient) or per coordinate."""
    weights = run.forget.to(state.dtype) / run.forget.sum(dim=1, keepdim=True).clamp_min(1)
    grad = run.gradient(state, run.labels, weights)
    C = grad.shape[0]
    if run.cfg.mask_granularity == "filter":
        score = run.backend.filter_sq_norm(grad).reshape(C, -1)
    else:
        score = grad.abs().reshape(C, -1)
    count = max(1, math.ceil(run.cfg.mask_fraction * score.shape[1]))
    top = torch.topk(score, count, dim=1).indices
    mask = torch.zeros_like(score).scatter_(1, top, 1.0)
    return mask.view(grad.shape[:3]) if run.cfg.mask_granularity == "filter" else mask.view(grad.shape)


@register("sharp_minmax", ("alpha", "mask_fraction", "mask_granularity", "rho", "sam_lambda", "unlearn_lr",
                           "unlearn_steps"),
          "retain part: SAM-min on alpha L(R); forget part: SAM-max on -(1-alpha) L(F); retain then forget [seen]")
def sharp_minmax(run, state):
    forget_mask = forget_part_mask(run, state)
    retain_mask = 1 - forget_mask
    coordinate = run.cfg.mask_granularity == "coordinate"
    retain = run.sampler(run.retain, run.unlearn_batch, STREAM_BATCH + 100)
    forget = run.sampler(run.forget, run.unlearn_batch, STREAM_BATCH + 200)
    alpha = run.param("alpha")[:, None]
    lam = run.param("sam_lambda")
    rho = run.param("rho")
    for t in range(run.cfg.unlearn_steps):
        masks = dict(coordinate_mask=retain_mask) if coordinate else dict(filter_mask=retain_mask)
        state = run.step(state, run.labels, alpha * retain(t), run.unlearn_lr, rho, mix=lam, **masks)
        masks = dict(coordinate_mask=forget_mask) if coordinate else dict(filter_mask=forget_mask)
        state = run.step(state, run.labels, -(1 - alpha) * forget(t), run.unlearn_lr, rho, mix=-lam, count=False,
                         **masks)
    return state
