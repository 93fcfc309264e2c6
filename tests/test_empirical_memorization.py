"""Memorization scores by subset training (docs/protocol.md#forget-sets) on the generated fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_empirical_trainer import fixture_root, tiny  # noqa: F401 - the shared generated CIFAR fixture

from empirical.__main__ import main
from empirical.data import forget_retain_split, load_cifar, load_split, memorization_scores, split_train_val
from empirical.memorization import estimate, holdout_design
from empirical.trainer import load_trained
from simulations.config import ConfigError


def test_holdout_design_is_balanced_and_seeded():
    d = holdout_design(500, 10, 0.7, seed=1)
    assert d.shape == (10, 500) and ((~d).sum(axis=0) == 3).all()  # every image left out of exactly 3 models
    assert abs(d.mean() - 0.7) < 1e-12 and 0.6 < d.mean(axis=1).min() and d.mean(axis=1).max() < 0.8
    assert np.array_equal(d, holdout_design(500, 10, 0.7, seed=1))
    assert not np.array_equal(d, holdout_design(500, 10, 0.7, seed=2))
    for models, fraction in ((3, 0.9), (2, 0.1), (1, 0.5)):
        with pytest.raises(ConfigError, match="held out"):
            holdout_design(10, models, fraction, 0)


def test_scores_are_the_in_minus_out_accuracy_and_feed_the_forget_split(fixture_root, tmp_path, capsys):  # noqa: F811
    cfg = tiny(fixture_root, epochs=1)
    record = estimate(cfg, tmp_path / "mem", models=3, fraction=0.67, seed=4, progress=False)
    z = np.load(tmp_path / "mem" / "scores.npz")
    arrays = load_cifar("cifar10", fixture_root)
    train_idx, val_idx = split_train_val(arrays.train_y, seed=cfg.seed, val_fraction=cfg.val_fraction)
    scores = z["scores"]
    assert np.isnan(scores[val_idx]).all() and np.isfinite(scores[train_idx]).all()  # pickles: original order
    assert (z["counts_in"][train_idx] == 2).all() and (z["counts_out"][train_idx] == 1).all()
    assert np.array_equal(z["labels"], arrays.train_y)
    # each score is a difference of two accuracies over the 3 models: multiples of 1/2 minus multiples of 1
    assert np.all(np.abs(scores[train_idx]) <= 1) and np.allclose((scores[train_idx] * 2) % 1, 0)
    # recompute every score from the saved models and their subsets, image by image
    runs = [json.loads((tmp_path / "mem" / f"model_{k}" / "record.json").read_text()) for k in range(3)]
    assert record["model_test_acc"] == [r["test_acc"] for r in runs]
    correct, member = [], []
    for k in range(3):
        model, _, prepared, _ = load_trained(tmp_path / "mem" / f"model_{k}", torch.device("cpu"))
        model.eval()
        with torch.no_grad():
            x = next(prepared.data.batches(torch.as_tensor(train_idx), len(train_idx)))[0]
            correct.append(model(x).argmax(1).numpy() == arrays.train_y[train_idx])
        member.append(np.isin(train_idx, load_split(tmp_path / "mem" / f"split_{k}.npz")["retain"]))
    correct, member = np.array(correct), np.array(member)
    for j in range(len(train_idx)):
        expected = correct[member[:, j], j].mean() - correct[~member[:, j], j].mean()
        assert scores[train_idx[j]] == pytest.approx(expected)
    # the file is a valid memorization score source for the forget split
    aligned, what = memorization_scores(arrays, tmp_path / "mem" / "scores.npz")
    forget, _ = forget_retain_split(train_idx, arrays.train_y, "memorization", size=20, scores=aligned, level="high")
    assert np.all(aligned[forget].min() >= np.sort(aligned[train_idx])[-20]) and "scores.npz" in what
    # a rerun reuses the finished models and gives the same scores
    estimate(cfg, tmp_path / "mem", models=3, fraction=0.67, seed=4, progress=False)
    assert np.array_equal(np.load(tmp_path / "mem" / "scores.npz")["scores"], scores, equal_nan=True)
    assert main(["memorization", "--set", "epochs=1", "--data-root", fixture_root, "--models", "2", "--fraction",
                 "0.9", "--out", str(tmp_path / "bad")]) == 2
    assert "held out" in capsys.readouterr().err
