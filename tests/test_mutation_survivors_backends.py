"""Tests written for survivors of mutation testing of ``simulations/backends.py`` (docs/testing.md).

Each pins a defining property with exact or hand-computed values: the memory estimate's formula, the squared norms
and Gram readouts of both backends on the same explicit vectors, ``select`` / ``with_init``, and the gram backend's
Monte-Carlo test outputs on hand-chosen standard normals.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny

from simulations import data as sim_data
from simulations.backends import bytes_per_config
from simulations.data import explicit_data
from simulations.engine import GroupRun
from simulations.model import Activation


# ---------------------------------------------------------------- the memory estimate, by hand
@pytest.mark.parametrize("backend, overrides, expected", [
    # float64, P = 3 independent noise patches: m2 = 6, ps = 3, patches = 30, K = 21, k = 32, n_test = 5000
    # train = 8 (2*441 + 8*6*21 + 10*6*30) + 8 * 3 * 32^2 = 29520 + 24576; test = 8 * 5000 * 5 * 6 * 3
    ("gram", dict(P=3, shared_noise=False, n_test=5000), (29520 + 24576 + 3_600_000) * 1.5),
    # train = 8 (30*30*2 + 6*30*8 + 10*6*30 + 30*30) = 47520; test = 8 * min(5000, 2048) * 4 * 30
    ("weights", dict(P=3, shared_noise=False, n_test=5000), (47520 + 1_966_080) * 1.5),
    # float32, shared noise: ps = 2, patches = 20, K = 11, k = 22, n_test = 100 (< 2048)
    # train = 4 (2*121 + 8*6*11 + 10*6*20) + 8 * 3 * 22^2 = 7880 + 11616; test = 4 * 100 * 4 * 6 * 3
    ("gram", dict(P=3, shared_noise=True, n_test=100, precision="float32"), (7880 + 11616 + 28800) * 1.5),
    # train = 4 (20*30*2 + 6*30*8 + 10*6*20 + 20*20) = 16960; test = 4 * 100 * 3 * 30
    ("weights", dict(P=3, shared_noise=True, n_test=100, precision="float32"), (16960 + 36000) * 1.5),
])
def test_bytes_per_config_by_hand(backend, overrides, expected):
    cfg = tiny(n=10, d=30, m=3, backend=backend, **overrides)
    got = bytes_per_config(cfg, backend)
    assert isinstance(got, float)
    assert got == expected


# ---------------------------------------------------------------- both backends on the same explicit vectors
def _runs(**overrides):
    """A weights and a gram run of one configuration on the same explicit vectors, and the basis {mu, sigma_p xi}."""
    cfg_w = tiny(backend="weights", **overrides)
    vectors = explicit_data(cfg_w)
    run_w = GroupRun([cfg_w], explicit=[vectors])
    run_g = GroupRun([cfg_w.replace(backend="gram")], explicit=[vectors])
    basis = torch.zeros((cfg_w.n_noise_vectors + 1, cfg_w.d), dtype=torch.float64)
    basis[0, 0] = cfg_w.signal_strength
    basis[1:] = cfg_w.sigma_p * torch.as_tensor(vectors.noise).reshape(cfg_w.n_noise_vectors, cfg_w.d)
    return cfg_w, run_w, run_g, basis


@pytest.mark.parametrize("shared", [True, False])
def test_sq_norms_agree_between_backends_and_with_the_definition(shared):
    cfg, run_w, run_g, basis = _runs(P=3, shared_noise=shared)
    bw, bg = run_w.backend, run_g.backend
    gen = torch.Generator().manual_seed(0)
    coef = torch.randn(bg.shape, generator=gen, dtype=torch.float64)  # a direction in coefficients on B
    direction_w = torch.einsum("cjrk,kd->cjrd", coef, basis)  # the same direction in R^{2m x d}
    expected = (direction_w ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(bw.sq_norm(direction_w), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(bg.sq_norm(coef), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(bg.sq_norm(coef, bg.lin(coef)), expected, rtol=1e-10, atol=0)
    # a lin passed in is used as given
    torch.testing.assert_close(bg.sq_norm(coef, 2 * bg.lin(coef)), 2 * expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(bw.sq_norm(direction_w, None), expected, rtol=1e-12, atol=0)
    # per filter
    per_filter = (direction_w ** 2).sum(dim=-1)
    torch.testing.assert_close(bw.filter_sq_norm(direction_w), per_filter, rtol=1e-12, atol=0)
    torch.testing.assert_close(bg.filter_sq_norm(coef), per_filter, rtol=1e-10, atol=0)
    assert bg.sq_norm(coef).shape == (1,) and bg.filter_sq_norm(coef).shape == (1, 2, cfg.m)


@pytest.mark.parametrize("shared", [True, False])
def test_norm_readouts_and_filter_gram_agree(shared):
    cfg, run_w, run_g, basis = _runs(P=3, shared_noise=shared)
    bw, bg = run_w.backend, run_g.backend
    torch.testing.assert_close(bg.signal_norm_sq(), torch.tensor([cfg.signal_strength ** 2], dtype=torch.float64))
    torch.testing.assert_close(bw.signal_norm_sq(), torch.tensor([cfg.signal_strength ** 2], dtype=torch.float64))
    noise_sq = (basis[1:] ** 2).sum(-1)[None]
    torch.testing.assert_close(bg.noise_norms_sq(), noise_sq, rtol=1e-12, atol=0)
    assert bg.noise_norms_sq().shape == (1, cfg.n_noise_vectors)
    # the weights backend's: one per stored noise patch (with shared noise the stored patch is the one vector)
    torch.testing.assert_close(bw.noise_norms_sq(), noise_sq, rtol=1e-12, atol=0)
    gen = torch.Generator().manual_seed(1)
    coef = torch.randn(bg.shape, generator=gen, dtype=torch.float64)
    W = bw.W0 + torch.einsum("cjrk,kd->cjrd", coef, basis)
    Wf = W.reshape(1, 2 * cfg.m, cfg.d)
    torch.testing.assert_close(bg.filter_gram(coef), Wf @ Wf.transpose(1, 2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bg.filter_e1(coef), W[..., 0], rtol=1e-10, atol=1e-12)
    assert bg.filter_biases(coef) is None
    torch.testing.assert_close(bg.coefficients_on_basis(coef), coef, rtol=0, atol=0)


def test_gram_select_and_with_init():
    cfgs = [tiny(backend="gram", seed=s, sigma_0=0.05 * (s + 1), signal_strength=1.0 + s) for s in range(3)]
    run = GroupRun(cfgs)
    b = run.backend
    sub = b.select(torch.tensor([2, 0]))
    for name in ("G", "H", "Q0", "init_e1", "basis_e1"):
        torch.testing.assert_close(getattr(sub, name), getattr(b, name)[[2, 0]], rtol=0, atol=0)
    assert sub.layout is b.layout and sub.filter_bias is b.filter_bias and sub.K == b.K
    assert sub.shape == (2,) + b.shape[1:]
    other = GroupRun([c.replace(seed=c.seed + 10) for c in cfgs]).backend
    mixed = b.with_init(other)
    for name in ("H", "Q0", "init_e1"):
        assert getattr(mixed, name) is getattr(other, name)
    for name in ("G", "basis_e1"):
        assert getattr(mixed, name) is getattr(b, name)
    assert mixed.layout is b.layout and mixed.filter_bias == b.filter_bias


# ---------------------------------------------------------------- gram test outputs on hand-chosen normals
def _outputs_setup(filter_bias, projected):
    cfg = tiny(backend="gram", m=2, P=3, filter_bias=filter_bias, sigma_0=0.4, noise_projected=projected)
    run = GroupRun([cfg])
    state = run.backend.init_state()
    gen = torch.Generator().manual_seed(3)
    state = state + 0.3 * torch.randn(state.shape, generator=gen, dtype=torch.float64)
    return cfg, run, state


@pytest.mark.parametrize("filter_bias", [False, True])
@pytest.mark.parametrize("projected", [False, True])
def test_gram_test_outputs_at_zero_normals_are_the_signal_part_by_hand(filter_bias, projected):
    """With all standard normals 0 the noise pre-activations are the biases: the output is exact."""
    cfg, run, state = _outputs_setup(filter_bias, projected)
    b, m = run.backend, cfg.m
    yhat = np.array([1.0, -1.0, 1.0])
    draws = sim_data.TestDraws(yhat=yhat, flip_u=np.zeros(3), normals=np.zeros((3, 2, 2 * m)))
    act = Activation("relu")
    sigma_p = torch.tensor([cfg.sigma_p], dtype=torch.float64)
    signal = torch.tensor([cfg.signal_strength], dtype=torch.float64)
    out = b.test_outputs(state, act, [draws], sigma_p, signal, projected, 2.0)
    e1 = b.filter_e1(state)[0].reshape(2 * m)
    bias = b.filter_biases(state)[0].reshape(2 * m) if filter_bias else torch.zeros(2 * m, dtype=torch.float64)
    readout = torch.tensor([1 / m] * m + [-1 / m] * m, dtype=torch.float64)
    expected = []
    for y in yhat:
        sig = torch.relu(y * cfg.signal_strength * e1 + bias) @ readout
        noise = 2 * (torch.relu(bias) @ readout) * 2.0  # two noise patches, multiplicity 2
        expected.append(float(sig + noise))
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("projected", [False, True])
def test_gram_test_outputs_sum_over_plus_minus_normals_is_the_covariance_diagonal(projected):
    """sigma(z) = z^2 (polyrelu, q = 2) gives sigma(z) + sigma(-z) = z^2: summed over the normals +-e_k, the noise
    part of the output is sum_f readout_f Cov_ff, whatever square root of the covariance is used."""
    cfg, run, state = _outputs_setup(False, projected)
    b, m = run.backend, cfg.m
    k = 2 * m
    eye = np.eye(k)
    normals = np.concatenate([eye, -eye])[:, None, :].repeat(2, axis=1)  # (2k, 2 noise patches, 2m)
    yhat = np.ones(2 * k)
    draws = sim_data.TestDraws(yhat=yhat, flip_u=np.zeros(2 * k), normals=normals)
    act = Activation("polyrelu", torch.tensor([2.0], dtype=torch.float64))
    sigma_p = torch.tensor([cfg.sigma_p], dtype=torch.float64)
    signal = torch.tensor([cfg.signal_strength], dtype=torch.float64)
    out = b.test_outputs(state, act, [draws], sigma_p, signal, projected, 1.0)
    e1 = b.filter_e1(state)[0].reshape(k)
    cov = b.filter_gram(state)[0]
    if projected:
        cov = cov - torch.outer(e1, e1)
    cov = cfg.sigma_p ** 2 * cov
    readout = torch.tensor([1 / m] * m + [-1 / m] * m, dtype=torch.float64)
    sig = torch.relu(cfg.signal_strength * e1) ** 2 @ readout
    noise_total = 2 * float(torch.diagonal(cov) @ readout)  # two noise patches
    np.testing.assert_allclose(float(out[0].sum()), 2 * k * float(sig) + noise_total, rtol=1e-10, atol=1e-13)


def test_gram_test_outputs_nan_only_for_the_overflowing_configuration():
    cfgs = [tiny(backend="gram", m=2, seed=s) for s in range(2)]
    run = GroupRun(cfgs)
    b, m = run.backend, 2
    state = b.init_state()
    state[1, 0, 0, 1] = 1e200  # the Gram overflows in configuration 1 only
    draws = sim_data.TestDraws(yhat=np.array([1.0, -1.0]), flip_u=np.zeros(2), normals=np.zeros((2, 1, 2 * m)))
    out = b.test_outputs(state, Activation("relu"), [draws, draws], torch.tensor([0.8, 0.8], dtype=torch.float64),
                         torch.tensor([1.5, 1.5], dtype=torch.float64), True, 1.0)
    assert torch.isfinite(out[0]).all()
    assert torch.isnan(out[1]).all()


# ---------------------------------------------------------------- dynamics agree, with and without filter biases
def _to_weights(coef, basis, bias):
    """A gram displacement (coefficients on B, then the bias coordinate) as a displacement in R^{2m x (d(+1))}."""
    K = basis.shape[0]
    on_b = torch.einsum("cjrk,kd->cjrd", coef[..., :K], basis)
    return torch.cat([on_b, coef[..., K:]], dim=-1) if bias else on_b


@pytest.mark.parametrize("bias, shared", [(False, False), (True, False), (True, True)])
def test_directions_lin_norms_and_descent_agree(bias, shared):
    from _helpers import joined
    cfg, run_w, run_g, basis = _runs(P=3, shared_noise=shared, filter_bias=bias, sigma_0=0.3)
    bw, bg, m, n = run_w.backend, run_g.backend, cfg.m, cfg.n
    assert bg.filter_bias is bias and bw.filter_bias is bias
    assert bg.shape[-1] == cfg.n_noise_vectors + 1 + int(bias) and bw.shape[-1] == cfg.d + int(bias)
    assert bw.d == cfg.d
    gen = torch.Generator().manual_seed(5)
    state_g = 0.2 * torch.randn(bg.shape, generator=gen, dtype=torch.float64)
    state_w = bw.init_state() + _to_weights(state_g, basis, bias)
    assert torch.equal(bg.init_state(), torch.zeros(bg.shape, dtype=torch.float64))
    torch.testing.assert_close(joined(bg.expand(bg.basis_preacts(state_g))),
                               joined(bw.expand(bw.basis_preacts(state_w))), rtol=1e-10, atol=1e-12)
    pn = 1 if shared else cfg.P - 1
    coef = (torch.randn((1, 2, m, n), generator=gen, dtype=torch.float64),
            torch.randn((1, 2, m, n, pn), generator=gen, dtype=torch.float64))
    torch.testing.assert_close(_to_weights(bg.direction(coef), basis, bias), bw.direction(coef), rtol=1e-10,
                               atol=1e-12)
    lin_g, sq_g = bg.gradient_lin_and_sq_norm(coef)
    lin_w, sq_w = bw.gradient_lin_and_sq_norm(coef)
    torch.testing.assert_close(joined(bg.expand(lin_g)), joined(bw.expand(lin_w)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sq_g, sq_w, rtol=1e-10, atol=0)
    torch.testing.assert_close(sq_w, (bw.direction(coef) ** 2).sum(dim=(1, 2, 3)), rtol=1e-10, atol=0)
    torch.testing.assert_close(joined(bw.expand(bw.lin(bw.direction(coef)))), joined(bw.expand(lin_w)), rtol=1e-10,
                               atol=1e-12)
    new_g, info_g = bg.descend(state_g, coef)
    new_w, info_w = bw.descend(state_w, coef)
    assert info_g is None
    torch.testing.assert_close(bw.init_state() + _to_weights(new_g, basis, bias), new_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new_w, state_w - bw.direction(coef), rtol=1e-12, atol=1e-14)
    if not bias:  # the weights backend reports the step on B
        torch.testing.assert_close(info_w, new_g - state_g, rtol=1e-12, atol=1e-14)
        # gram: a signal coefficient already on the basis (3-d) gives the same step
        on_b = (coef[0] * bg.layout.yhat[:, None, None, :]).sum(-1)
        torch.testing.assert_close(bg.descend(state_g, (on_b, coef[1]))[0], new_g, rtol=1e-12, atol=1e-14)
    # readouts of the filters
    Wf = new_w[..., :cfg.d].reshape(1, 2 * m, cfg.d)
    torch.testing.assert_close(bg.filter_gram(new_g), Wf @ Wf.transpose(1, 2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bg.filter_e1(new_g), new_w[..., 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bg.coefficients_on_basis(new_g), new_g[..., :basis.shape[0]], rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(bg.filter_biases(new_g), new_w[..., cfg.d], rtol=1e-12, atol=1e-14)
    # a coordinate mask: ones is the plain step (no basis step reported), zeros on e_1 keeps that coordinate
    mask = torch.ones(bw.shape, dtype=torch.float64)
    masked, info = bw.descend(state_w, coef, coordinate_mask=mask)
    assert info is None
    torch.testing.assert_close(masked, new_w, rtol=1e-12, atol=1e-14)
    mask[..., 0] = 0
    masked = bw.descend(state_w, coef, coordinate_mask=mask)[0]
    assert torch.equal(masked[..., 0], state_w[..., 0])
    torch.testing.assert_close(masked[..., 1:], new_w[..., 1:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bias", [False, True])
def test_retrain_init_agrees_between_backends(bias):
    cfg, run_w, run_g, basis = _runs(P=3, shared_noise=False, filter_bias=bias, sigma_0=0.3, unlearn_method="retrain")
    w0_before = run_w.backend.init_state()
    start_w = run_w.restart_from_retrain_init()
    start_g = run_g.restart_from_retrain_init()
    assert not torch.allclose(start_w, w0_before)  # another draw
    gen = torch.Generator().manual_seed(7)
    state_g = start_g + 0.2 * torch.randn(start_g.shape, generator=gen, dtype=torch.float64)
    state_w = start_w + _to_weights(state_g - start_g, basis, bias)
    from _helpers import patch_preacts
    torch.testing.assert_close(patch_preacts(run_g.backend, state_g), patch_preacts(run_w.backend, state_w),
                               rtol=1e-10, atol=1e-12)
    Wf = state_w[..., :cfg.d].reshape(1, 2 * cfg.m, cfg.d)
    torch.testing.assert_close(run_g.backend.filter_gram(state_g), Wf @ Wf.transpose(1, 2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(run_g.backend.filter_e1(state_g), state_w[..., 0], rtol=1e-10, atol=1e-12)
    if bias:
        torch.testing.assert_close(run_g.backend.filter_biases(state_g), state_w[..., cfg.d], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- test outputs: several configurations, by hand
def _f_by_hand(w, b, y, s, noise_pre, q, mult):
    """f for one test sample: w (2m, d) filters, b (2m,) biases, y label, noise_pre (Pn, 2m) noise pre-activations
    without bias; sigma = relu^q, readout +1/m for j = +1 and -1/m for j = -1."""
    m = w.shape[0] // 2
    readout = np.array([1 / m] * m + [-1 / m] * m)
    sig = np.maximum(y * s * w[:, 0] + b, 0) ** q
    noise = (np.maximum(noise_pre + b, 0) ** q).sum(0)
    return float(readout @ sig + mult * (readout @ noise))


@pytest.mark.parametrize("bias", [False, True])
def test_weights_test_outputs_by_hand_in_chunks(bias):
    cfgs = [tiny(backend="weights", m=2, P=3, shared_noise=False, filter_bias=bias, seed=s, sigma_0=0.4,
                 signal_strength=1.0 + s, activation="polyrelu", q=3.0 - s) for s in range(2)]  # q 3 and 2
    run = GroupRun(cfgs)
    b = run.backend
    gen = torch.Generator().manual_seed(11)
    state = b.init_state() + 0.3 * torch.randn(b.shape, generator=gen, dtype=torch.float64)
    rng = np.random.default_rng(0)
    T, d = 5, cfgs[0].d
    noises = [rng.standard_normal((T, 2, d)) for _ in cfgs]
    yhat = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    chunks = [[(0, nz[:3]), (3, nz[3:])] for nz in noises]  # two chunks per configuration
    sigma_p = torch.tensor([0.8, 1.3], dtype=torch.float64)
    out = b.test_outputs(state, run.act, chunks, sigma_p, yhat, 1.5)
    assert out.shape == (2, T)
    for c in range(2):
        W = state[c].reshape(4, -1).numpy()
        w, bb = (W[:, :d], W[:, d]) if bias else (W, np.zeros(4))
        for t in range(T):
            pre = float(sigma_p[c]) * noises[c][t] @ w.T  # (Pn, 2m)
            expected = _f_by_hand(w, bb, float(yhat[c, t]), cfgs[c].signal_strength, pre, cfgs[c].q, 1.5)
            assert float(out[c, t]) == pytest.approx(expected, rel=1e-10, abs=1e-13), (c, t)


def test_gram_test_outputs_per_configuration_draws_and_activation():
    """Two configurations with their own draws and their own polyrelu exponent; normals 0 except one patch of one
    sample, where they are +e_k: then z = root[:, k], checked through Cov = root root^T summed over k."""
    cfgs = [tiny(backend="gram", m=2, seed=s, sigma_0=0.4, activation="polyrelu", q=2.0) for s in range(2)]
    run = GroupRun(cfgs)
    b, m, k = run.backend, 2, 4
    gen = torch.Generator().manual_seed(13)
    state = 0.3 * torch.randn(b.shape, generator=gen, dtype=torch.float64)
    act = Activation("polyrelu", torch.tensor([2.0, 2.0], dtype=torch.float64))
    eye = np.eye(k)
    normals_a = np.concatenate([eye, -eye])[:, None, :]  # (2k, 1, 2m)
    draws_a = sim_data.TestDraws(yhat=np.ones(2 * k), flip_u=np.zeros(2 * k), normals=normals_a)
    draws_b = sim_data.TestDraws(yhat=-np.ones(2 * k), flip_u=np.zeros(2 * k), normals=np.zeros_like(normals_a))
    sigma_p = torch.tensor([0.8, 1.1], dtype=torch.float64)
    signal = torch.tensor([1.5, 0.7], dtype=torch.float64)
    out = b.test_outputs(state, act, [draws_a, draws_b], sigma_p, signal, False, 3.0)
    readout = torch.tensor([1 / m] * m + [-1 / m] * m, dtype=torch.float64)
    e1 = b.filter_e1(state).reshape(2, k)
    cov0 = float(sigma_p[0]) ** 2 * b.filter_gram(state)[0]
    sig0 = torch.relu(1.5 * e1[0]) ** 2 @ readout
    np.testing.assert_allclose(float(out[0].sum()), 2 * k * float(sig0) + 3.0 * float(torch.diagonal(cov0) @ readout),
                               rtol=1e-10)
    sig1 = torch.relu(-0.7 * e1[1]) ** 2 @ readout  # label -1, no noise
    np.testing.assert_allclose(out[1].numpy(), np.full(2 * k, float(sig1)), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- defaults of the constructors
@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_build_defaults_are_cpu_and_the_first_init(backend):
    run = GroupRun([tiny(backend=backend, P=3, shared_noise=False)])
    builder, data, scale = run._retrain_data
    built = builder(data, *scale, run.layout, run.dtype)  # no retrain_init, no device
    assert built.init_state().device.type == "cpu"
    assert built.filter_bias is False
    torch.testing.assert_close(built.init_state(), run.backend.init_state(), rtol=0, atol=0)
    torch.testing.assert_close(built.basis_preacts(built.init_state()), run.backend.basis_preacts(
        run.backend.init_state()), rtol=0, atol=0)
    if backend == "gram":
        for name in ("G", "H", "Q0", "init_e1", "basis_e1"):
            torch.testing.assert_close(getattr(built, name), getattr(run.backend, name), rtol=0, atol=0)
        plain = type(built)(built.layout, built.G, built.H, built.Q0, built.init_e1, built.basis_e1)
        assert plain.filter_bias is False and plain.K == built.K
    else:
        plain = type(built)(built.layout, built.X, built.W0, built.signal, built.noise_norms_sq())
        assert plain.filter_bias is False and plain.d == built.X.shape[-1]


@pytest.mark.parametrize("backend", ["gram", "weights"])
@pytest.mark.parametrize("bias", [False, True])
def test_float32_precision_builds_float32_tensors(backend, bias):
    run = GroupRun([tiny(backend=backend, precision="float32", filter_bias=bias)])
    tensors = [t for t in vars(run.backend).values() if isinstance(t, torch.Tensor)]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)
    assert run.backend.init_state().dtype == torch.float32


@pytest.mark.parametrize("backend", ["weights", "gram"])
def test_both_backends_make_every_tensor_on_the_runs_device(backend):
    """Build, steps and test outputs (polyrelu: one q per configuration) with torch's default device on ``meta``."""
    from _helpers import assert_same_with_meta_default

    cfg = tiny(backend=backend, d=16, activation="polyrelu", q=2.5, label_flip=0.2, optimizer="sam", rho=0.3)
    assert_same_with_meta_default([cfg, cfg.replace(seed=2, q=3.0, sigma_p=1.2)])
