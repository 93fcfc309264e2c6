"""The signal–noise data model (docs/model.md#data-model) and its exact low-dimensional sampling
(docs/model.md#the-two-backends).

Randomness is organised so that results are reproducible one configuration at a time and comparisons are paired:

* everything about the training set and the initial filters is drawn from a numpy generator keyed by
  :func:`data_key` (seed, n, d, P, m and the noise options), in *standard* units and scaled per configuration.
  Two configurations that differ only in optimizer, signal strength, sigma_p, sigma_0, label_flip, learning rate
  or unlearning method therefore see the same noise vectors, labels and initial filters at the same seed;
* per-step randomness (SGD batches, forget-set choice, random relabelling) comes from a counter-based hash
  (:func:`hash_uniform`), so a configuration's draws do not depend on which other configurations share its batch.

By rotation invariance the signal is placed on the first axis, ``mu = ||mu|| e_1``. The model sums over patches,
so the signal patch's position is immaterial; it is stored as patch 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SimConfig

# stream tags keep the independent random streams of one seed apart
_STREAM_DATA, _STREAM_EXPLICIT, _STREAM_TEST, _STREAM_TEST_EXPLICIT, _STREAM_EXPLICIT_RETRAIN = 1, 2, 3, 4, 5
STREAM_FORGET, STREAM_BATCH, STREAM_RELABEL = 11, 12, 13


def data_key(cfg: SimConfig) -> tuple:
    """The fields that determine the standard-unit training data and initial filters."""
    return (cfg.seed, cfg.n, cfg.d, cfg.P, cfg.m, cfg.noise_projected, cfg.shared_noise)


def test_key(cfg: SimConfig) -> tuple:
    return (cfg.seed, cfg.n_test, cfg.m, cfg.P, cfg.shared_noise)


def _rng(stream: int, key: tuple) -> np.random.Generator:
    return np.random.default_rng([stream, *(int(k) for k in key)])


@dataclass
class StandardData:
    """Training labels and a unit-scale embedding of {noise vectors, initial filters, retraining filters}.

    ``first[k]`` is vector k's coordinate along ``mu`` and ``rest[k]`` its coordinates in an orthonormal frame
    of the remaining ``d - 1`` dimensions, truncated to rank (exact: only inner products matter). Rows are
    ``N`` noise vectors (unit variance per coordinate; scale by sigma_p), then ``2m`` initial filters and ``2m``
    retraining filters (scale by sigma_0). ``yhat`` is the true label, ``flip_u`` a uniform per sample: the
    observed label is flipped where ``flip_u < label_flip``. With ``filter_bias``, ``bias`` holds the standard
    normal biases of the initial and the retraining filters (4m,), scaled by sigma_0 like the filters.
    """

    yhat: np.ndarray  # (n,) +-1
    flip_u: np.ndarray  # (n,)
    first: np.ndarray  # (k,)
    rest: np.ndarray  # (k, r)
    n_noise: int
    m: int
    bias: np.ndarray | None = None  # (4m,) with filter_bias

    def gram(self) -> np.ndarray:
        """Unit-scale Gram matrix of all k vectors (including the coordinate along mu)."""
        return np.outer(self.first, self.first) + self.rest @ self.rest.T


def bartlett_factor(rng: np.random.Generator, k: int, dof: int) -> np.ndarray:
    """Lower-triangular ``A`` with ``A A^T ~ Wishart_k(dof, I)`` (Bartlett decomposition), ``dof >= k``.

    The rows of ``A`` are then k vectors whose inner products have the law of k i.i.d. ``N(0, I_dof)`` vectors.
    """
    a = np.tril(rng.standard_normal((k, k)), -1)
    a[np.diag_indices(k)] = np.sqrt(rng.chisquare(dof - np.arange(k)))
    return a


def standard_data(cfg: SimConfig) -> StandardData:
    """Draw the training set and initial filters of ``cfg`` in standard units without d-dimensional vectors
    (unless ``d - 1`` is smaller than the number of vectors, where drawing them is cheap)."""
    rng = _rng(_STREAM_DATA, data_key(cfg))
    yhat = rng.choice(np.array([-1.0, 1.0]), size=cfg.n)
    flip_u = rng.random(cfg.n)
    n_noise = cfg.n_noise_vectors
    k = n_noise + 4 * cfg.m
    first = rng.standard_normal(k)
    if cfg.noise_projected:
        first[:n_noise] = 0.0
    dof = cfg.d - 1
    if dof >= k:
        rest = bartlett_factor(rng, k, dof)
    else:
        rest = rng.standard_normal((k, max(dof, 0)))
    bias = rng.standard_normal(4 * cfg.m) if cfg.filter_bias else None  # drawn last: the rest is unchanged
    return StandardData(yhat=yhat, flip_u=flip_u, first=first, rest=rest, n_noise=n_noise, m=cfg.m, bias=bias)


def _init_draw(rng: np.random.Generator, rule: str, shape) -> np.ndarray:
    """Initial weights in standard units: ``gaussian`` N(0, 1) (scaled by sigma_0), ``torch_uniform`` U(-1, 1)
    (scaled by 1/sqrt(d): PyTorch's default init of a Conv1d/Linear layer with fan_in = d, weights and bias)."""
    return rng.standard_normal(shape) if rule == "gaussian" else rng.uniform(-1.0, 1.0, shape)


@dataclass
class ExplicitData:
    """d-dimensional vectors for the weights backend, in standard units (mu = e_1 direction)."""

    yhat: np.ndarray  # (n,)
    flip_u: np.ndarray  # (n,)
    noise: np.ndarray  # (N, d) unit variance per coordinate (first coordinate 0 when projected)
    init: np.ndarray  # (2m, d) standard units of init_rule, ordered (j=+1: r=0..m-1, j=-1: ...)
    key: tuple  # data_key, for the retraining filters drawn on demand
    bias: np.ndarray | None = None  # (2m,) initial filter biases (filter_bias), same rule and scale as ``init``
    init_rule: str = "gaussian"  # config ``init``: standard normal, or U(-1, 1) scaled by 1/sqrt(d)

    @property
    def m(self) -> int:
        return self.init.shape[0] // 2

    def _retrain_draw(self) -> None:
        if not hasattr(self, "_retrain"):
            rng = _rng(_STREAM_EXPLICIT_RETRAIN, self.key)
            self._retrain = _init_draw(rng, self.init_rule, self.init.shape)
            self._retrain_bias = None if self.bias is None else _init_draw(rng, self.init_rule, self.bias.shape)

    def retrain_init(self) -> np.ndarray:
        """Fresh initial filters (2m, d) for retraining from scratch (their own random stream)."""
        self._retrain_draw()
        return self._retrain

    def retrain_bias(self) -> np.ndarray | None:
        """Fresh initial biases (2m,) of the retraining filters (None without filter_bias)."""
        self._retrain_draw()
        return self._retrain_bias

    def standard(self, m: int) -> StandardData:
        """The same vectors in the StandardData layout (so the gram backend can run on them exactly)."""
        vecs = np.concatenate([self.noise, self.init, self.retrain_init()], axis=0)
        bias = None if self.bias is None else np.concatenate([self.bias, self.retrain_bias()])
        return StandardData(yhat=self.yhat, flip_u=self.flip_u, first=vecs[:, 0].copy(), rest=vecs[:, 1:].copy(),
                            n_noise=self.noise.shape[0], m=m, bias=bias)


def explicit_data(cfg: SimConfig) -> ExplicitData:
    """Draw the training set with full d-dimensional noise vectors and filters. Labels equal :func:`standard_data`'s."""
    rng = _rng(_STREAM_DATA, data_key(cfg))
    yhat = rng.choice(np.array([-1.0, 1.0]), size=cfg.n)
    flip_u = rng.random(cfg.n)
    rng = _rng(_STREAM_EXPLICIT, data_key(cfg))
    noise = rng.standard_normal((cfg.n_noise_vectors, cfg.d))
    if cfg.noise_projected:
        noise[:, 0] = 0.0
    init = _init_draw(rng, cfg.init, (2 * cfg.m, cfg.d))
    bias = _init_draw(rng, cfg.init, 2 * cfg.m) if cfg.filter_bias else None  # drawn last: the rest is unchanged
    return ExplicitData(yhat=yhat, flip_u=flip_u, noise=noise, init=init, key=data_key(cfg), bias=bias,
                        init_rule=cfg.init)


@dataclass
class TestDraws:
    """Fresh test samples for the gram backend: labels and standard normals for the 2m noise pre-activations
    of each noise patch (transformed per configuration by a square root of their covariance)."""

    yhat: np.ndarray  # (n_test,)
    flip_u: np.ndarray  # (n_test,)
    normals: np.ndarray  # (n_test, patches, 2m)


def test_draws(cfg: SimConfig) -> TestDraws:
    rng = _rng(_STREAM_TEST, test_key(cfg))
    yhat = rng.choice(np.array([-1.0, 1.0]), size=cfg.n_test)
    flip_u = rng.random(cfg.n_test)
    patches = 1 if cfg.shared_noise else cfg.P - 1
    normals = rng.standard_normal((cfg.n_test, patches, 2 * cfg.m))
    return TestDraws(yhat=yhat, flip_u=flip_u, normals=normals)


def explicit_test_noise(cfg: SimConfig, chunk: int = 2048):
    """Yield chunks ``(start, noise)`` of d-dimensional test noise vectors, shape (rows, patches, d), unit scale."""
    rng = _rng(_STREAM_TEST_EXPLICIT, (*test_key(cfg), cfg.d, cfg.noise_projected))
    patches = 1 if cfg.shared_noise else cfg.P - 1
    for start in range(0, cfg.n_test, chunk):
        rows = min(chunk, cfg.n_test - start)
        noise = rng.standard_normal((rows, patches, cfg.d))
        if cfg.noise_projected:
            noise[:, :, 0] = 0.0
        yield start, noise


# ---------------------------------------------------------------------- counter-based hashing

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(stream: int, seeds: np.ndarray, counter: int, n: int) -> np.ndarray:
    """Uniforms in [0, 1) of shape (len(seeds), n), a pure function of (stream, seed, counter, index)."""
    seeds = np.asarray(seeds, dtype=np.uint64)[:, None]
    idx = np.arange(n, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        x = _splitmix64(np.uint64(stream) * np.uint64(0x100000001B3) + seeds)
        x = _splitmix64(x ^ (np.uint64(counter) * np.uint64(0xD1B54A32D192ED03)))
        x = _splitmix64(x + idx * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
