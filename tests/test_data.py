"""The data model (docs/model.md#data-model) and its exact low-dimensional sampling
(docs/model.md#the-two-backends)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny

from simulations.data import bartlett_factor, explicit_data, explicit_test_noise, hash_uniform, standard_data
from simulations.engine import GroupRun

# ---------------------------------------------------------------------- noise orthogonal to the signal


@pytest.mark.parametrize("shared", [True, False])
def test_projected_noise_is_orthogonal_to_signal(shared):
    cfg = tiny(P=3, shared_noise=shared, noise_projected=True)
    ex = explicit_data(cfg)
    assert ex.noise.shape == (cfg.n_noise_vectors, cfg.d)
    assert np.all(ex.noise[:, 0] == 0.0)
    assert np.all(ex.noise[:, 1:] != 0.0)
    st = standard_data(cfg)
    assert np.all(st.first[: cfg.n_noise_vectors] == 0.0)
    assert np.all(st.first[cfg.n_noise_vectors:] != 0.0)  # filters are not projected
    for _, chunk in explicit_test_noise(cfg.replace(n_test=50)):
        assert np.all(chunk[..., 0] == 0.0)


@pytest.mark.parametrize("shared", [True, False])
def test_unprojected_noise_has_a_signal_component(shared):
    cfg = tiny(P=3, shared_noise=shared, noise_projected=False)
    assert np.all(explicit_data(cfg).noise[:, 0] != 0.0)
    assert np.all(standard_data(cfg).first[: cfg.n_noise_vectors] != 0.0)
    for _, chunk in explicit_test_noise(cfg.replace(n_test=50)):
        assert np.all(chunk[..., 0] != 0.0)


def test_noise_projection_reaches_the_trained_model():
    """The weights backend's patches: signal patch on e_1 only, noise patches with <xi, mu> = 0 when projected."""
    for projected in (True, False):
        run = GroupRun([tiny(backend="weights", noise_projected=projected)])
        X = run.backend.X[0].view(run.cfg.n, 2, run.cfg.d)
        assert torch.all(X[:, 0, 1:] == 0)
        assert torch.equal(X[:, 0, 0], run.yhat[0] * run.cfg.signal_strength)
        assert bool(torch.all(X[:, 1, 0] == 0)) is projected


# ---------------------------------------------------------------------- labels


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3])
def test_label_flip_rate(p):
    """Observed labels of the simulator's runs are flipped at rate p (100 seeds x 200 samples)."""
    configs = [tiny(n=200, d=2, m=1, label_flip=p, forget_size=0, seed=s) for s in range(100)]
    run = GroupRun(configs)
    flipped = run.labels != run.yhat
    assert torch.equal(flipped, run.flipped)
    total = flipped.numel()
    rate = float(flipped.double().mean())
    sd = np.sqrt(max(p * (1 - p), 1e-12) / total)
    assert abs(rate - p) <= 4 * sd + 1e-12
    # true labels are Rademacher
    assert abs(float((run.yhat > 0).double().mean()) - 0.5) <= 4 * np.sqrt(0.25 / total)
    assert set(np.unique(run.yhat.numpy())) == {-1.0, 1.0}


def test_standard_and_explicit_data_share_labels():
    cfg = tiny(label_flip=0.2)
    st, ex = standard_data(cfg), explicit_data(cfg)
    np.testing.assert_array_equal(st.yhat, ex.yhat)
    np.testing.assert_array_equal(st.flip_u, ex.flip_u)
    # the data of a seed does not depend on the fields that only scale it
    other = explicit_data(cfg.replace(signal_strength=3.0, sigma_p=2.0, label_flip=0.0, lr=0.01))
    np.testing.assert_array_equal(ex.noise, other.noise)
    np.testing.assert_array_equal(ex.init, other.init)
    assert not np.array_equal(ex.noise, explicit_data(cfg.replace(seed=1)).noise)


# ---------------------------------------------------------------------- Bartlett / Wishart


def test_bartlett_factor_has_wishart_moments():
    k, dof, draws = 4, 10, 20_000
    rng = np.random.default_rng(123)
    A = np.stack([bartlett_factor(rng, k, dof) for _ in range(draws)])
    assert np.all(np.triu(A, 1) == 0)
    assert np.all(np.diagonal(A, axis1=1, axis2=2) > 0)
    S = A @ A.transpose(0, 2, 1)
    mean = S.mean(0)
    # Wishart_k(dof, I): E S = dof I, Var S_ii = 2 dof, Var S_ij = dof (i != j)
    se = np.sqrt(np.where(np.eye(k, dtype=bool), 2 * dof, dof) / draws)
    assert np.all(np.abs(mean - dof * np.eye(k)) <= 4 * se), mean
    var = S.var(0)
    expected = np.where(np.eye(k, dtype=bool), 2.0 * dof, float(dof))
    np.testing.assert_allclose(var, expected, rtol=0.1)


def _gram_statistics(grams: np.ndarray, n_noise: int):
    """Mean diagonal of noise / filter blocks and the variance of off-diagonal entries of each block pair."""
    noise, filt = slice(0, n_noise), slice(n_noise, None)
    diag = np.diagonal(grams, axis1=1, axis2=2)
    off_nn = grams[:, noise, noise][:, ~np.eye(n_noise, dtype=bool)]
    cross = grams[:, noise, filt].reshape(len(grams), -1)
    return dict(noise_sq=diag[:, noise].mean(), filter_sq=diag[:, filt].mean(), noise_noise_var=off_nn.var(),
                noise_noise_mean=off_nn.mean(), noise_filter_var=cross.var(), noise_filter_mean=cross.mean())


@pytest.mark.parametrize("projected", [True, False])
@pytest.mark.parametrize("d", [20, 5])  # d = 5: d - 1 < k, the vectors are drawn explicitly
def test_standard_gram_statistics_match_explicit_vectors(projected, d):
    seeds = 3000
    base = tiny(n=3, m=1, d=d, noise_projected=projected)
    n_noise = base.n_noise_vectors
    st = np.stack([standard_data(base.replace(seed=s)).gram() for s in range(seeds)])
    ex = np.stack([explicit_data(base.replace(seed=s)).standard(1).gram() for s in range(seeds)])
    a, b = _gram_statistics(st, n_noise), _gram_statistics(ex, n_noise)
    noise_dim = d - 1 if projected else d
    # closed forms: ||xi||^2 ~ chi2(noise_dim), ||w0||^2 ~ chi2(d), <xi, xi'> and <xi, w0> have variance noise_dim
    for stats in (a, b):
        assert abs(stats["noise_sq"] - noise_dim) < 4 * np.sqrt(2 * noise_dim / (seeds * n_noise))
        assert abs(stats["filter_sq"] - d) < 4 * np.sqrt(2 * d / (seeds * 4))
        assert abs(stats["noise_noise_mean"]) < 4 * np.sqrt(noise_dim / seeds)
        assert abs(stats["noise_filter_mean"]) < 4 * np.sqrt(noise_dim / seeds)
        np.testing.assert_allclose(stats["noise_noise_var"], noise_dim, rtol=0.12)
        np.testing.assert_allclose(stats["noise_filter_var"], noise_dim, rtol=0.12)
    np.testing.assert_allclose(a["noise_sq"], b["noise_sq"], rtol=0.05)
    np.testing.assert_allclose(a["noise_filter_var"], b["noise_filter_var"], rtol=0.15)


# ---------------------------------------------------------------------- counter-based hashing


def test_hash_uniform_is_deterministic_uniform_and_keyed():
    seeds = np.array([0, 1, 2**62 + 5], dtype=np.uint64)
    u = hash_uniform(12, seeds, 7, 50_000)
    assert u.shape == (3, 50_000)
    assert u.dtype == np.float64
    np.testing.assert_array_equal(u, hash_uniform(12, seeds, 7, 50_000))
    assert u.min() >= 0.0 and u.max() < 1.0
    # roughly uniform: 20 equal bins, chi-square with 19 dof (mean 19, sd ~6.2) far below 60
    for row in u:
        counts = np.histogram(row, bins=20, range=(0, 1))[0]
        chi2 = ((counts - len(row) / 20) ** 2 / (len(row) / 20)).sum()
        assert chi2 < 60, chi2
        assert abs(row.mean() - 0.5) < 4 * np.sqrt(1 / 12 / len(row))
    # rows of different seeds, other counters and other streams differ (and are not correlated)
    assert not np.array_equal(u[0], u[1])
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.03
    assert not np.array_equal(u, hash_uniform(12, seeds, 8, 50_000))
    assert not np.array_equal(u, hash_uniform(13, seeds, 7, 50_000))
    # a seed's draws do not depend on the other seeds in the call, and a prefix is a prefix
    np.testing.assert_array_equal(hash_uniform(12, seeds[1:2], 7, 100)[0], u[1, :100])
