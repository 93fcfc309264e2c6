"""Unlearning objectives of docs/model.md#unlearning-objectives: consistency between methods and the direction each one
moves the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import assert_results_close, drive, model_gradient, tiny

from simulations import simulate
from simulations.data import STREAM_BATCH
from simulations.engine import GroupRun
from simulations.unlearning import METHODS


def test_every_configurable_method_is_registered():
    from simulations.config import CHOICES

    assert set(CHOICES["unlearn_method"]) - {"none"} == set(METHODS)


@pytest.mark.parametrize("backend", ["gram", "weights"])
@pytest.mark.parametrize("unlearn_optimizer", ["gd", "sgd", "sam"])
def test_neggrad_endpoints_are_gradient_ascent_and_fine_tuning(backend, unlearn_optimizer):
    """alpha = 0: L = -L(F) is gradient ascent on F; alpha = 1: L = L(R) is fine-tuning on R."""
    base = tiny(backend=backend, unlearn_method="neggrad", unlearn_optimizer=unlearn_optimizer, batch_size=3,
                forget_size=4, rho=0.2)
    ascent = simulate([base.replace(alpha=0.0), base.replace(unlearn_method="ga")])
    assert_results_close(*ascent, atol=1e-12)
    tune = simulate([base.replace(alpha=1.0), base.replace(unlearn_method="ft")])
    assert_results_close(*tune, atol=1e-12)
    middle = simulate([base.replace(alpha=0.5)])[0]
    assert not np.isclose(middle.metrics["train_loss"], ascent[0].metrics["train_loss"], rtol=1e-6)


def _losses(run, state, labels=None):
    n = run.cfg.n
    weights = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    _, per_sample, _, _, _ = model_gradient(run, state, run.labels if labels is None else labels, weights)
    forget = run.forget[0]
    return float(per_sample[0, forget].mean()), float(per_sample[0, ~forget].mean())


def _pretrained_and_unlearned(cfg):
    run = GroupRun([cfg])
    pretrained = run.backend.init_state()
    weights = run.sampler(torch.ones_like(run.forget), run.train_batch, STREAM_BATCH)
    for t in range(run.pretrain_steps):
        pretrained = run.step(pretrained, run.labels, weights(t), run.train_lr, run.train_rho)
    unlearned = METHODS[cfg.unlearn_method].run(run, pretrained)
    return run, pretrained, unlearned


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_methods_move_the_losses_the_stated_way(backend):
    common = dict(backend=backend, label_flip=0.2, forget_size=3, unlearn_steps=10)
    # gradient ascent raises the forget loss
    run, before, after = _pretrained_and_unlearned(tiny(unlearn_method="ga", **common))
    assert _losses(run, after)[0] > _losses(run, before)[0]
    # fine-tuning lowers the retain loss
    run, before, after = _pretrained_and_unlearned(tiny(unlearn_method="ft", **common))
    assert _losses(run, after)[1] < _losses(run, before)[1]
    # NegGrad raises the forget loss while keeping the retain loss low
    run, before, after = _pretrained_and_unlearned(tiny(unlearn_method="neggrad", alpha=0.5, **common))
    f_before, r_before = _losses(run, before)
    f_after, r_after = _losses(run, after)
    assert f_after > f_before and r_after < 2 * r_before + 0.05
    # Random Label (flip) lowers the loss of the forget samples under their flipped labels
    run, before, after = _pretrained_and_unlearned(tiny(unlearn_method="rl", forget_target="flip", **common))
    flipped = torch.where(run.forget, -run.labels, run.labels)
    assert _losses(run, after, flipped)[0] < _losses(run, before, flipped)[0]


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_retrain_ignores_the_pretraining(backend):
    """Retraining starts from fresh filters: its final state is the same whether or not the model was pretrained."""
    base = tiny(backend=backend, unlearn_method="retrain", optimizer="sgd", batch_size=4, forget_size=3)
    after_pretraining, from_scratch = simulate([base, base.replace(regime="from_scratch")])
    final = {k: v for k, v in after_pretraining.metrics.items() if not k.startswith("pretrain_") and k != "wall_s"}
    for key, value in final.items():
        np.testing.assert_allclose(from_scratch.metrics[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    # and it differs from merely fine-tuning the pretrained model
    tuned = simulate([base.replace(unlearn_method="ft", unlearn_steps=base.steps, unlearn_lr=base.lr,
                                   unlearn_optimizer="sgd")])[0]
    assert not np.isclose(tuned.metrics["train_loss"], after_pretraining.metrics["train_loss"], rtol=1e-6)


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_forget_set_selection(backend):
    cfg = tiny(backend=backend, n=40, label_flip=0.3, forget_size=4, forget_select="noisy")
    run = GroupRun([cfg])
    assert int(run.forget.sum()) == 4 and int(run.flipped.sum()) >= 4
    assert bool((run.forget <= run.flipped).all())  # the label-flipped samples are chosen first
    random_sel = GroupRun([cfg.replace(forget_select="random")])
    assert int(random_sel.forget.sum()) == 4
    res = simulate([cfg.replace(unlearn_method="ft")])[0]
    np.testing.assert_array_equal(res.trajectory["forget_indices"], np.flatnonzero(run.forget[0].numpy()))


@pytest.mark.parametrize("granularity", ["filter", "coordinate"])
def test_sharp_minmax_masks_split_the_parameters(granularity):
    """W_F is the mask_fraction of filters (coordinates) with the largest forget gradient; the retain step moves
    only W_R and the forget step only W_F (alpha = 0 silences the retain step, alpha = 1 the forget step)."""
    cfg = tiny(backend="weights", unlearn_method="sharp_minmax", mask_granularity=granularity, rho=0.2,
               mask_fraction=0.5)
    run = GroupRun([cfg])
    pretrained = run.backend.init_state()
    for _ in range(run.pretrain_steps):
        pretrained = run.step(pretrained, run.labels, torch.full((1, cfg.n), 1 / cfg.n, dtype=torch.float64),
                              run.train_lr, run.train_rho)
    from simulations.unlearning import forget_part_mask

    mask = forget_part_mask(run, pretrained)
    expected_shape = (1, 2, cfg.m) if granularity == "filter" else tuple(pretrained.shape)
    assert tuple(mask.shape) == expected_shape
    assert int(mask.sum()) == int(np.ceil(0.5 * np.prod(expected_shape[1:])))
    forget_weights = run.forget.double() / run.forget.sum()
    *_, grad = model_gradient(run, pretrained, run.labels, forget_weights)
    score = grad.norm(dim=-1) if granularity == "filter" else grad.abs()
    assert float(score[mask == 1].min()) >= float(score[mask == 0].max())  # W_F: the largest |grad L(F)|
    for alpha, still in ((0.0, 0), (1.0, 1)):
        unlearned = drive(GroupRun([cfg.replace(alpha=alpha)]))
        moved = (unlearned - pretrained).abs()
        if granularity == "filter":
            moved = moved.sum(dim=-1)
        assert float(moved[mask == still].max()) < 1e-12, alpha
        assert float(moved[mask != still].max()) > 1e-6, alpha


@pytest.mark.parametrize("target", ["uniform", "flip"])
def test_random_label_targets_are_made_on_the_runs_device(target):
    """The RL relabelling with torch's default device on ``meta`` (a CPU stand-in for a CUDA run)."""
    from _helpers import assert_same_with_meta_default

    cfg = tiny(backend="gram", unlearn_method="rl", forget_target=target, regime="pretrain_then_unlearn",
               forget_size=4, label_flip=0.2)
    assert_same_with_meta_default([cfg, cfg.replace(seed=6)])
