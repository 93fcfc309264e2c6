"""Unlearning metrics (docs/protocol.md#metrics) against hand computations, brute force and synthetic attacks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from empirical.augment import DeviceData
from empirical.config import TrainConfig
from empirical.metrics import (
    MetricError,
    avg_gap,
    classwise,
    entanglement_var,
    entanglement_wp,
    mia_efficacy,
    mia_features,
    model_outputs,
    shadow_in_indices,
    tow,
    tow_mia,
)
from empirical.models import build_model
from empirical.trainer import accuracy

RT = {"retain": 99.9, "forget": 92.5, "test": 92.5}


def test_tow_and_its_signed_variant():
    assert tow(RT, RT) == 1.0
    acc = {"retain": 97.9, "forget": 96.5, "test": 90.5}
    assert tow(acc, RT) == pytest.approx(0.98 * 0.96 * 0.98)
    # signed (authors' code): FA below retrain and TA above it are rewarded, so it can exceed 1
    better = {"retain": 99.9, "forget": 90.5, "test": 93.5}
    assert tow(better, RT, signed=True) == pytest.approx(1.02 * 1.01) and tow(better, RT) == pytest.approx(0.98 * 0.99)
    assert tow(acc, RT, signed=True) == pytest.approx(0.98 * 0.96 * 0.98)  # all three on the penalised side
    with pytest.raises(MetricError, match="forget"):
        tow({"retain": 1, "test": 2}, RT)
    with pytest.raises(MetricError, match="percent"):
        tow({"retain": 0.99, "forget": 0.9, "test": 1.5 * 100}, RT)


def test_tow_mia_and_avg_gap():
    acc = {"retain": 98.9, "forget": 95.5, "test": 91.5}
    assert tow_mia(acc, 0.30, RT, 0.20) == pytest.approx(0.99 * 0.90 * 0.99)
    assert avg_gap(acc, 0.30, RT, 0.20) == pytest.approx((3.0 + 1.0 + 1.0 + 10.0) / 4)
    with pytest.raises(MetricError, match="fraction"):
        tow_mia(acc, 30.0, RT, 0.2)


def test_mia_features_match_their_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 5, 7)
    f = mia_features(probs, labels)
    for i in range(7):
        p, y = probs[i], labels[i]
        m = -(1 - p[y]) * np.log(p[y]) - sum(p[c] * np.log(1 - p[c]) for c in range(5) if c != y)
        assert f["m_entropy"][i, 0] == pytest.approx(m)
        assert f["entropy"][i, 0] == pytest.approx(-(p * np.log(p)).sum())
        assert f["confidence"][i, 0] == p[y] and f["correctness"][i, 0] == float(p.argmax() == y)
    assert f["prob"].shape == (7, 5)
    with pytest.raises(MetricError, match="labels"):
        mia_features(probs, labels + 5)


def _probs(n, confidence, rng, classes=10):
    """Softmax-like rows whose true-label probability is about ``confidence``."""
    labels = rng.integers(0, classes, n)
    p_y = np.clip(rng.normal(confidence, 0.05, n), 0.01, 0.99)
    rest = rng.dirichlet(np.ones(classes - 1), n) * (1 - p_y)[:, None]
    probs = np.empty((n, classes))
    for i in range(n):
        probs[i] = np.insert(rest[i], labels[i], p_y[i])
    return probs, labels


def test_mia_efficacy_separates_members_from_non_members():
    rng = np.random.default_rng(1)
    members, non_members = _probs(300, 0.95, rng), _probs(300, 0.40, rng)
    remembered, forgotten = _probs(100, 0.95, rng), _probs(100, 0.40, rng)
    features = ("confidence", "entropy", "m_entropy")
    a = mia_efficacy(members, non_members, remembered, features=features, seed=3)
    b = mia_efficacy(members, non_members, forgotten, features=features, seed=3)
    for name in features:
        assert a[name] < 0.1 and b[name] > 0.9, (name, a[name], b[name])
    assert mia_efficacy(members, non_members, forgotten, features=features, seed=3) == b  # seeded
    with pytest.raises(MetricError, match="unknown MIA feature"):
        mia_efficacy(members, non_members, forgotten, features=("loss",))
    with pytest.raises(MetricError, match="empty"):
        mia_efficacy(members, non_members, (np.zeros((0, 10)), np.zeros(0, int)))


def test_shadow_in_is_a_seeded_random_sample_of_the_retain_set():
    retain = np.arange(100, 5000, 3)
    s = shadow_in_indices(retain, 500, seed=4)
    assert len(s) == 500 and np.isin(s, retain).all() and len(np.unique(s)) == 500
    assert not np.array_equal(s, retain[:500])  # not the first ones in index order (docs/protocol.md item 6)
    assert np.array_equal(s, shadow_in_indices(retain, 500, seed=4))
    assert len(shadow_in_indices(retain[:10], 500, seed=4)) == 10


def test_entanglement_var_by_hand():
    rng = np.random.default_rng(2)
    r, f = rng.normal(size=(20, 4)), rng.normal(size=(9, 4)) + 1.5
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    mu = np.vstack([rn, fn]).mean(0)
    within = np.mean([np.sum((x - rn.mean(0)) ** 2) for x in rn]) + np.mean([np.sum((x - fn.mean(0)) ** 2) for x in fn])
    between = 0.5 * (np.sum((rn.mean(0) - mu) ** 2) + np.sum((fn.mean(0) - mu) ** 2))
    assert entanglement_var(r, f) == pytest.approx(within / between)
    assert entanglement_var(r * 7.0, f) == pytest.approx(within / between)  # features are L2-normalised first
    separated = entanglement_var(rng.normal(size=(50, 4)) * 0.01 + [1, 0, 0, 0],
                                 rng.normal(size=(50, 4)) * 0.01 + [0, 1, 0, 0])
    mixed = entanglement_var(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)))
    assert separated < 0.01 < 10 < mixed
    with pytest.raises(MetricError, match="width"):
        entanglement_var(r, f[:, :3])


def test_entanglement_wp_is_an_exact_transport_distance():
    rng = np.random.default_rng(5)
    r, f = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    cost = np.linalg.norm(rn[:, None] - fn[None], axis=2)
    best = min(np.mean([cost[i, j] for i, j in enumerate(perm)]) for perm in itertools.permutations(range(5)))
    assert entanglement_wp(r, f) == pytest.approx(max(0.0, 1 - best / cost.max()))
    assert entanglement_wp(r, r.copy()) == pytest.approx(1.0)  # the same points: fully entangled
    assert entanglement_wp(np.tile([1.0, 0, 0], (6, 1)), np.tile([-1.0, 0, 0], (4, 1))) == 0.0  # antipodal
    big_r, big_f = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    assert entanglement_wp(big_r, big_f, max_points=50, seed=1) == entanglement_wp(big_r, big_f, max_points=50, seed=1)
    with pytest.raises(MetricError, match="max_points"):
        entanglement_wp(r, f, max_points=0)


def test_classwise_entanglement_weights_classes_by_size():
    rng = np.random.default_rng(6)
    r, f = rng.normal(size=(30, 4)), rng.normal(size=(12, 4))
    yr, yf = np.repeat([0, 1, 2], 10), np.repeat([0, 1], 6)
    per = [entanglement_var(r[yr == c], f[yf == c]) for c in (0, 1)]
    assert classwise(entanglement_var, r, yr, f, yf) == pytest.approx((16 * per[0] + 16 * per[1]) / 32)
    assert classwise(entanglement_wp, r, yr, f, yf, max_points=4) == pytest.approx(
        np.mean([entanglement_wp(r[yr == c], f[yf == c], max_points=4) for c in (0, 1)]))
    with pytest.raises(MetricError, match="no class"):
        classwise(entanglement_var, r, yr, f, yf + 5)


def test_model_outputs_agree_with_the_trainer_accuracy():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4, "cifar10")
    rng = np.random.default_rng(7)
    data = DeviceData(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40))
    idx = torch.arange(3, 40, 2)
    model.train()
    out = model_outputs(model, data, idx, torch.device("cpu"), batch_size=8)
    assert model.training  # mode restored
    assert out.probs.shape == (len(idx), 10) and np.allclose(out.probs.sum(1), 1, atol=1e-5)
    assert out.features.shape == (len(idx), model.feature_dim)
    assert np.array_equal(out.labels, data.labels[idx].numpy())
    cfg = TrainConfig(device="cpu", bf16=False, channels_last=False)
    assert out.accuracy == pytest.approx(100 * accuracy(model, data, idx, torch.device("cpu"), cfg))
    with pytest.raises(MetricError, match="empty"):
        model_outputs(model, data, torch.zeros(0, dtype=torch.long), torch.device("cpu"))
