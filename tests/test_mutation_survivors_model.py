"""Exact, hand-sized checks of ``simulations/model.py`` (the network, its loss and gradient factors, the patch layout)
and ``simulations/data.py`` (the data model's random recipe), written to kill the mutants that the other tests let
survive (docs/testing.md, "simulations/model.py and simulations/data.py").

Every expected value is computed here from the definition in docs/model.md — by hand, from scratch with torch
autograd on pre-activations, or by replaying the documented random recipe (numpy generator keyed by
``[stream, *key]``, draws in a fixed order) — never by calling the function under test a second time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import tiny

from simulations import data as sim_data  # its test_draws / test_key are not pytest tests
from simulations.data import (
    ExplicitData,
    StandardData,
    _init_draw,
    _splitmix64,
    bartlett_factor,
    data_key,
    explicit_data,
    explicit_test_noise,
    hash_uniform,
    standard_data,
)
from simulations.model import (
    Activation,
    PatchLayout,
    SignalOnBasis,
    logistic_derivative,
    logistic_loss,
    loss_and_patch_coefficients,
    network_output,
)

D = torch.float64
Z = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], dtype=D)  # both sides of the threshold 0, and the threshold itself


# ====================================================================== activation


def test_relu_is_max_0_z_with_derivative_1_z_gt_0_whatever_q():
    """relu: sigma(z) = max(0, z), sigma'(z) = 1(z > 0) (0 at z = 0); the q field is ignored (only polyrelu reads
    it)."""
    for q in (1.0, 3.0, 0.5):
        act = Activation("relu", q)
        assert act.value(Z).tolist() == [0.0, 0.0, 0.0, 0.5, 3.0]
        assert act.derivative(Z).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert Activation("relu").q == 1.0 and Activation("relu").output_scale is None  # the defaults


def test_polyrelu_is_max_0_z_to_the_q_with_derivative_q_z_to_the_q_minus_1():
    act = Activation("polyrelu", 2.0)
    assert act.value(Z).tolist() == [0.0, 0.0, 0.0, 0.25, 9.0]
    assert act.derivative(Z).tolist() == [0.0, 0.0, 0.0, 1.0, 6.0]
    act = Activation("polyrelu", 4.0)
    assert act.value(Z).tolist() == [0.0, 0.0, 0.0, 0.0625, 81.0]
    assert act.derivative(Z).tolist() == [0.0, 0.0, 0.0, 0.5, 108.0]


def test_polyrelu_with_one_q_per_configuration_applies_q_along_the_first_axis():
    """q of shape (C,) broadcasts over every other axis of a (C, ...) pre-activation tensor (2-d and 5-d)."""
    act = Activation("polyrelu", torch.tensor([2.0, 3.0], dtype=D))
    z = torch.tensor([[-1.0, 0.5, 2.0], [-1.0, 0.5, 2.0]], dtype=D)
    assert act.value(z).tolist() == [[0.0, 0.25, 4.0], [0.0, 0.125, 8.0]]
    assert act.derivative(z).tolist() == [[0.0, 1.0, 4.0], [0.0, 0.75, 12.0]]
    z5 = z.view(2, 1, 1, 3, 1).expand(2, 2, 2, 3, 4)
    assert torch.equal(act.value(z5), act.value(z).view(2, 1, 1, 3, 1).expand(2, 2, 2, 3, 4))
    assert torch.equal(act.derivative(z5), act.derivative(z).view(2, 1, 1, 3, 1).expand(2, 2, 2, 3, 4))


def test_select_takes_the_q_of_the_chosen_configurations_and_readout_is_1_over_m_unless_set():
    act = Activation("polyrelu", torch.tensor([2.0, 3.0, 4.0], dtype=D), output_scale=0.7)
    sub = act.select(torch.tensor([2, 0]))
    assert sub.q.tolist() == [4.0, 2.0] and sub.name == "polyrelu" and sub.output_scale == 0.7
    relu = Activation("relu")
    assert relu.select(torch.tensor([1])) is relu  # a float q is shared by every configuration
    assert relu.readout(4) == 0.25 and relu.readout(10) == 0.1
    assert Activation("relu", output_scale=2.5).readout(4) == 2.5


# ====================================================================== network output, loss


def _hand_network():
    """C = 1, m = 2, n = 2, one stored noise patch: pre-activations chosen by hand."""
    a = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]], dtype=D)  # <w_{j,r}, mu>, (C=1, 2, m=2)
    yhat = torch.tensor([[1.0, -1.0]], dtype=D)  # (C, n)
    signal = a[..., None] * yhat[:, None, None, :]  # (1, 2, 2, 2): <w_{j,r}, yhat_i mu>
    noise = torch.tensor([[[[0.2, -1.0], [-0.3, 0.4]], [[1.5, 0.0], [-2.0, 0.6]]]], dtype=D)[..., None]  # (1,2,2,2,1)
    return a, yhat, signal, noise


def _hand_f(signal, noise, mult=1.0, scale=None, sigma=lambda z: max(z, 0.0)):
    """f_i = scale sum_{r,p} [sigma(z_{+1,r,i,p}) - sigma(z_{-1,r,i,p})], written out with Python floats."""
    m, n = signal.shape[2], signal.shape[3]
    scale = 1.0 / m if scale is None else scale
    out = []
    for i in range(n):
        per_set = [sum(sigma(float(signal[0, j, r, i])) + mult * sigma(float(noise[0, j, r, i, 0])) for r in range(m))
                   for j in range(2)]
        out.append(scale * (per_set[0] - per_set[1]))
    return out


def test_network_output_by_hand_sum_over_filters_and_patches_plus_minus_filter_sets():
    a, yhat, signal, noise = _hand_network()
    relu = Activation("relu")
    # i = 0: j=+1: relu(1) + relu(-2) + relu(.2) + relu(-.3) = 1.2; j=-1: relu(.5)+relu(3)+relu(1.5)+relu(-2) = 5
    # i = 1: j=+1: relu(-1) + relu(2) + relu(-1) + relu(.4) = 2.4; j=-1: relu(-.5)+relu(-3)+relu(0)+relu(.6) = .6
    expected = [(1.2 - 5.0) / 2, (2.4 - 0.6) / 2]
    np.testing.assert_allclose(network_output(relu, signal, noise)[0].tolist(), expected, rtol=1e-15)
    np.testing.assert_allclose(_hand_f(signal, noise), expected, rtol=1e-15)
    # the same on the basis (signal kept as a with its yhat)
    np.testing.assert_allclose(network_output(relu, SignalOnBasis(a, yhat), noise)[0].tolist(), expected, rtol=1e-15)
    # shared noise: the stored patch counts P - 1 = 3 times; output_scale replaces 1/m
    np.testing.assert_allclose(network_output(relu, signal, noise, 3.0)[0].tolist(), _hand_f(signal, noise, 3.0),
                               rtol=1e-15)
    np.testing.assert_allclose(network_output(Activation("relu", output_scale=0.3), signal, noise, 3.0)[0].tolist(),
                               _hand_f(signal, noise, 3.0, 0.3), rtol=1e-15)
    np.testing.assert_allclose(network_output(Activation("relu", output_scale=1.0), signal, noise)[0].tolist(),
                               _hand_f(signal, noise, 1.0, 1.0), rtol=1e-15)
    # precomputed noise values are used as given
    twice = 2.0 * torch.relu(noise)
    np.testing.assert_allclose(network_output(relu, signal, noise, noise_values=twice)[0].tolist(),
                               _hand_f(signal, noise, 2.0), rtol=1e-15)
    poly = Activation("polyrelu", 2.0)
    np.testing.assert_allclose(network_output(poly, SignalOnBasis(a, yhat), noise, 3.0)[0].tolist(),
                               _hand_f(signal, noise, 3.0, sigma=lambda z: max(z, 0.0) ** 2), rtol=1e-14)


def test_signal_on_basis_with_m_not_equal_n_and_several_configurations():
    """The basis form sums over the filter axis (dim 2) and selects plus/minus by yhat_i, for C = 2, m = 3, n = 4."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn((2, 2, 3), generator=g, dtype=D)
    yhat = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]], dtype=D)
    noise = torch.randn((2, 2, 3, 4, 2), generator=g, dtype=D)
    signal = a[..., None] * yhat[:, None, None, :]
    for act in (Activation("relu"), Activation("polyrelu", torch.tensor([2.0, 3.0], dtype=D))):
        expected = network_output(act, signal, noise)
        np.testing.assert_allclose(network_output(act, SignalOnBasis(a, yhat), noise).numpy(), expected.numpy(),
                                   rtol=1e-13, atol=1e-15)
        direct = (act.value(signal).sum(dim=2) + act.value(noise).sum(dim=(2, 4)))
        np.testing.assert_allclose(expected.numpy(), ((direct[:, 0] - direct[:, 1]) / 3).numpy(), rtol=1e-13)


def test_logistic_loss_and_derivative_exact_values():
    z = torch.tensor([-2.0, 0.0, 1.0, 30.0], dtype=D)
    np.testing.assert_allclose(logistic_loss(z).tolist(),
                               [math.log1p(math.exp(2.0)), math.log(2.0), math.log1p(math.exp(-1.0)),
                                math.log1p(math.exp(-30.0))], rtol=1e-14)
    np.testing.assert_allclose(logistic_derivative(z).tolist(),
                               [-1 / (1 + math.exp(-2.0)), -0.5, -1 / (1 + math.e), -1 / (1 + math.exp(30.0))],
                               rtol=1e-14)


def _from_scratch(act_name, q, signal, noise, labels, weights, mult, scale):
    """loss and its gradient with respect to every pre-activation, by autograd on a from-scratch network."""
    s = signal.clone().requires_grad_(True)
    z = noise.clone().requires_grad_(True)
    sig = (lambda t: torch.relu(t)) if act_name == "relu" else (lambda t: torch.relu(t) ** q)
    m = noise.shape[2]
    per_set = sig(s).sum(dim=2) + mult * sig(z).sum(dim=(2, 4))
    f = (per_set[:, 0] - per_set[:, 1]) * (1.0 / m if scale is None else scale)
    per_sample = torch.log1p(torch.exp(-labels * f))
    loss = (weights * per_sample).sum(dim=1)
    gs, gz = torch.autograd.grad(loss.sum(), (s, z))
    return loss.detach(), per_sample.detach(), f.detach(), gs, gz


@pytest.mark.parametrize("act_name,q", [("relu", 1.0), ("polyrelu", 3.0)])
@pytest.mark.parametrize("mult,scale", [(1.0, None), (3.0, None), (1.0, 0.25), (2.0, 1.5)])
def test_patch_coefficients_are_the_loss_gradient_with_respect_to_each_pre_activation(act_name, q, mult, scale):
    """coef[j,r,i,p] = dL/d<w_{j,r}, x_i^(p)> = a_i l'_i y_i j sigma'(z) / m (times the multiplicity for the shared
    noise patch, output_scale for 1/m); on the basis, dL/da_{j,r} = sum_i coef[j,r,i] yhat_i; coef_scale (C,)
    multiplies every coefficient of its configuration and nothing else."""
    g = torch.Generator().manual_seed(7)
    C, m, n, Pn = 2, 3, 4, 2
    a = torch.randn((C, 2, m), generator=g, dtype=D)
    yhat = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]], dtype=D)
    signal = a[..., None] * yhat[:, None, None, :]
    noise = torch.randn((C, 2, m, n, Pn), generator=g, dtype=D)
    labels = yhat * torch.tensor([[1.0, 1.0, -1.0, 1.0], [1.0, -1.0, 1.0, 1.0]], dtype=D)  # some flipped
    weights = torch.tensor([[0.5, -0.25, 1.0, 0.3], [0.1, 0.2, -0.7, 0.4]], dtype=D)  # signed, NegGrad-like
    act = Activation(act_name, q, scale)
    loss_ref, per_ref, f_ref, gs, gz = _from_scratch(act_name, q, signal, noise, labels, weights, mult, scale)
    lr = torch.tensor([0.5, 2.0], dtype=D)

    for coef_scale, factor in ((None, torch.ones(C, dtype=D)), (lr, lr)):
        loss, per_sample, out, (cs, cn) = loss_and_patch_coefficients(act, signal, noise.clone(), labels, weights,
                                                                      mult, coef_scale)
        np.testing.assert_allclose(loss.numpy(), loss_ref.numpy(), rtol=1e-13)
        np.testing.assert_allclose(per_sample.numpy(), per_ref.numpy(), rtol=1e-13)
        np.testing.assert_allclose(out.numpy(), f_ref.numpy(), rtol=1e-13, atol=1e-15)
        assert cs.shape == signal.shape and cn.shape == noise.shape
        np.testing.assert_allclose(cs.numpy(), (factor.view(C, 1, 1, 1) * gs).numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(cn.numpy(), (factor.view(C, 1, 1, 1, 1) * gz).numpy(), rtol=1e-12, atol=1e-15)
        # the same on the basis: one coefficient per filter, the signal patches' coefficients summed with sign yhat
        loss_b, _, out_b, (cs_b, cn_b) = loss_and_patch_coefficients(act, SignalOnBasis(a, yhat), noise.clone(),
                                                                     labels, weights, mult, coef_scale)
        np.testing.assert_allclose(loss_b.numpy(), loss_ref.numpy(), rtol=1e-13)
        np.testing.assert_allclose(out_b.numpy(), f_ref.numpy(), rtol=1e-13, atol=1e-15)
        assert cs_b.shape == (C, 2, m)
        np.testing.assert_allclose(cs_b.numpy(), (factor.view(C, 1, 1) * (gs * yhat[:, None, None, :]).sum(-1)).numpy(),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(cn_b.numpy(), (factor.view(C, 1, 1, 1, 1) * gz).numpy(), rtol=1e-12, atol=1e-15)


def test_one_coefficient_by_hand():
    """n = 1, m = 1, relu, y = 1, one noise patch counted once (the default multiplicity 1): pre-activations chosen so
    that f = (0.5 + 0.5) - (1 + 0) = 0, hence l = log 2 and l'(0) = -1/2, and coef = a l' y j sigma'(z) / m =
    2 (-1/2) j on the active patches, 0 on the inactive one."""
    signal = torch.tensor([[[[0.5]], [[1.0]]]], dtype=D)  # z_{+1} = 0.5, z_{-1} = 1
    noise = torch.tensor([[[[[0.5]]], [[[-1.0]]]]], dtype=D)  # z_{+1} = 0.5 (active), z_{-1} = -1 (inactive)
    relu = Activation("relu")
    assert network_output(relu, signal, noise).tolist() == [[0.0]]
    loss, per_sample, out, (cs, cn) = loss_and_patch_coefficients(
        relu, signal, noise, torch.tensor([[1.0]], dtype=D), torch.tensor([[2.0]], dtype=D))
    assert out.tolist() == [[0.0]] and per_sample.tolist() == [[math.log(2.0)]] and loss.tolist() == [2 * math.log(2)]
    assert cs.flatten().tolist() == [-1.0, 1.0]
    assert cn.flatten().tolist() == [-1.0, 0.0]


# ====================================================================== patch layout


@pytest.mark.parametrize("shared", [True, False])
def test_patch_layout_maps_basis_values_to_patches_and_coefficients_back(shared):
    """Patch (i, 0) is basis 0 with sign yhat_i; noise patch (i, p) is basis 1 + i (shared, counted P - 1 times) or
    1 + i (P - 1) + (p - 1)."""
    C, m, n, P = 2, 2, 3, 4
    yhat = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]], dtype=D)
    layout = PatchLayout(n, P, shared, yhat)
    assert layout.n == n and layout.P == P and layout.shared is shared
    assert layout.stored_patches == (2 if shared else P)
    assert layout.noise_multiplicity == (3.0 if shared else 1.0)
    assert layout.n_noise == (n if shared else n * (P - 1))
    K = 1 + layout.n_noise
    basis = torch.arange(C * 2 * m * K, dtype=D).view(C, 2, m, K)
    signal, noise = layout.expand(basis)
    assert torch.equal(signal.value, basis[..., 0]) and signal.yhat is yhat
    Pn = layout.stored_patches - 1
    assert noise.shape == (C, 2, m, n, Pn)
    for i in range(n):
        for p in range(Pn):
            assert torch.equal(noise[..., i, p], basis[..., 1 + i * Pn + p])
    # collect: the inverse on the noise part; the basis signal coefficient as is; per-sample ones summed with yhat
    coef_noise = torch.randn((C, 2, m, n, Pn), dtype=D)
    coef_basis = torch.randn((C, 2, m), dtype=D)
    out = layout.collect((coef_basis, coef_noise))
    assert out.shape == (C, 2, m, K)
    assert torch.equal(out[..., 0], coef_basis)
    assert torch.equal(out[..., 1:].unflatten(-1, (n, Pn)), coef_noise)
    coef_patch = torch.randn((C, 2, m, n), dtype=D)
    out = layout.collect((coef_patch, coef_noise))
    np.testing.assert_allclose(out[..., 0].numpy(), (coef_patch * yhat[:, None, None, :]).sum(-1).numpy(), rtol=1e-15)
    assert torch.equal(out[..., 1:].unflatten(-1, (n, Pn)), coef_noise)
    # join: signal patch first
    joined = PatchLayout.join((coef_patch, coef_noise))
    assert joined.shape == (C, 2, m, n, 1 + Pn)
    assert torch.equal(joined[..., 0], coef_patch) and torch.equal(joined[..., 1:], coef_noise)


# ====================================================================== data: the random recipe


def _rng(stream, key):
    return np.random.default_rng([stream, *(int(k) for k in key)])


def test_data_and_test_keys_are_the_fields_that_determine_the_draws():
    cfg = tiny(seed=4, n=6, d=9, P=3, m=2, noise_projected=False, shared_noise=False, n_test=11)
    assert data_key(cfg) == (4, 6, 9, 3, 2, False, False)
    assert sim_data.test_key(cfg) == (4, 11, 2, 3, False)


@pytest.mark.parametrize("d,bias", [(40, False), (40, True), (27, False), (26, True), (5, True), (1, True)])
def test_standard_data_follows_its_recipe(d, bias):
    """Stream 1 keyed by data_key: labels yhat = choice(-1, 1), flip_u, then k = N + 4m standard normals along mu
    (0 for the projected noise vectors), then the Bartlett factor with d - 1 degrees of freedom when d - 1 >= k, else
    k x (d - 1) standard normals; with filter_bias the 4m biases last (n = 6, m = 2, shared noise: k = 14; d = 1 leaves
    no coordinate besides mu's)."""
    cfg = tiny(n=6, m=2, d=d, P=3, filter_bias=bias, seed=2)
    st = standard_data(cfg)
    rng = _rng(1, data_key(cfg))
    assert st.yhat.tolist() == rng.choice(np.array([-1.0, 1.0]), size=6).tolist()
    assert st.flip_u.tolist() == rng.random(6).tolist()
    k = 6 + 4 * 2
    first = rng.standard_normal(k)
    first[:6] = 0.0
    assert st.first.tolist() == first.tolist()
    if d - 1 >= k:
        assert st.rest.tolist() == bartlett_factor(rng, k, d - 1).tolist()
    else:
        assert st.rest.tolist() == rng.standard_normal((k, d - 1)).tolist()
    assert st.rest.shape == (k, min(k, d - 1))
    if bias:
        assert st.bias.tolist() == rng.standard_normal(8).tolist()
    else:
        assert st.bias is None
    assert st.n_noise == 6 and st.m == 2
    np.testing.assert_allclose(st.gram(), np.outer(st.first, st.first) + st.rest @ st.rest.T, rtol=1e-15)


def test_standard_data_at_d_minus_1_equal_to_k_uses_the_bartlett_factor():
    cfg = tiny(n=6, m=2, d=15, P=2, seed=1)  # k = 6 + 8 = 14 = d - 1
    st = standard_data(cfg)
    assert st.rest.shape == (14, 14)
    assert np.all(np.triu(st.rest, 1) == 0.0) and np.all(np.diag(st.rest) > 0)
    cfg = tiny(n=6, m=2, d=14, P=2, seed=1)  # d - 1 = 13 < k: explicit vectors, a full matrix
    st = standard_data(cfg)
    assert st.rest.shape == (14, 13) and np.all(st.rest != 0.0)


def test_bartlett_factor_recipe():
    """A strictly lower triangle of standard normals, then the diagonal sqrt(chi2(dof - i)), i = 0..k-1."""
    a = bartlett_factor(np.random.default_rng(9), 4, 6)
    rng = np.random.default_rng(9)
    expected = np.tril(rng.standard_normal((4, 4)), -1)
    expected[np.diag_indices(4)] = np.sqrt(rng.chisquare(np.array([6, 5, 4, 3])))
    assert a.tolist() == expected.tolist()


@pytest.mark.parametrize("init,bias,projected,shared", [("gaussian", False, True, True),
                                                        ("gaussian", True, True, False),
                                                        ("torch_uniform", True, False, False)])
def test_explicit_data_follows_its_recipe(init, bias, projected, shared):
    """Labels from stream 1 (the same as standard_data's); noise N x d, then 2m x d initial filters, then the 2m
    biases from stream 2; the retraining filters and biases from stream 5; gaussian N(0, 1) or U(-1, 1)."""
    cfg = tiny(backend="weights", n=5, d=7, P=3, m=2, init=init, filter_bias=bias, noise_projected=projected,
               shared_noise=shared, seed=3)
    ex = explicit_data(cfg)
    rng = _rng(1, data_key(cfg))
    assert ex.yhat.tolist() == rng.choice(np.array([-1.0, 1.0]), size=5).tolist()
    assert ex.flip_u.tolist() == rng.random(5).tolist()
    draw = (lambda r, shape: r.standard_normal(shape)) if init == "gaussian" else \
        (lambda r, shape: r.uniform(-1.0, 1.0, shape))
    rng = _rng(2, data_key(cfg))
    N = 5 if shared else 10
    noise = rng.standard_normal((N, 7))
    if projected:
        noise[:, 0] = 0.0
    assert ex.noise.tolist() == noise.tolist()
    assert ex.init.tolist() == draw(rng, (4, 7)).tolist()
    assert ex.bias.tolist() == draw(rng, 4).tolist() if bias else ex.bias is None
    assert ex.key == data_key(cfg) and ex.init_rule == init
    assert ex.m == 2 and isinstance(ex.m, int)
    rng = _rng(5, data_key(cfg))
    retrain = draw(rng, (4, 7))
    assert ex.retrain_init().tolist() == retrain.tolist()
    assert ex.retrain_init() is ex.retrain_init()  # drawn once, then kept
    if bias:
        assert ex.retrain_bias().tolist() == draw(rng, 4).tolist()
    else:
        assert ex.retrain_bias() is None
    if init == "torch_uniform":
        assert np.all(np.abs(ex.init) < 1.0) and ex.init.min() < -0.5 and ex.init.max() > 0.5


def test_retrain_bias_alone_draws_the_retraining_filters_first():
    """retrain_bias before retrain_init gives the biases drawn after the filters of stream 5."""
    cfg = tiny(backend="weights", n=4, d=6, m=2, filter_bias=True, seed=8)
    ex = explicit_data(cfg)
    rng = _rng(5, data_key(cfg))
    filters = rng.standard_normal((4, 6))
    assert ex.retrain_bias().tolist() == rng.standard_normal(4).tolist()
    assert ex.retrain_init().tolist() == filters.tolist()


def test_explicit_data_in_the_standard_layout():
    """Rows noise, initial filters, retraining filters; first = coordinate 0 (along mu), rest = the others."""
    cfg = tiny(backend="weights", n=4, d=6, m=2, filter_bias=True, noise_projected=False, seed=1)
    ex = explicit_data(cfg)
    st = ex.standard(2)
    vecs = np.concatenate([ex.noise, ex.init, ex.retrain_init()])
    assert isinstance(st, StandardData)
    assert st.first.tolist() == vecs[:, 0].tolist() and st.rest.tolist() == vecs[:, 1:].tolist()
    assert st.bias.tolist() == np.concatenate([ex.bias, ex.retrain_bias()]).tolist()
    assert st.n_noise == 4 and st.m == 2 and st.yhat is ex.yhat and st.flip_u is ex.flip_u
    ex2 = ExplicitData(yhat=ex.yhat, flip_u=ex.flip_u, noise=ex.noise, init=ex.init, key=ex.key)
    assert ex2.init_rule == "gaussian" and ex2.bias is None and ex2.standard(2).bias is None


def test_init_draw_rules():
    assert _init_draw(np.random.default_rng(0), "gaussian", (3,)).tolist() == \
        np.random.default_rng(0).standard_normal(3).tolist()
    assert _init_draw(np.random.default_rng(0), "torch_uniform", (3,)).tolist() == \
        np.random.default_rng(0).uniform(-1.0, 1.0, 3).tolist()


@pytest.mark.parametrize("shared", [True, False])
def test_test_draws_recipe(shared):
    """Stream 3 keyed by test_key: labels, flip_u, then (n_test, patches, 2m) normals, one patch when shared."""
    cfg = tiny(n_test=7, m=2, P=3, shared_noise=shared, seed=6)
    td = sim_data.test_draws(cfg)
    rng = _rng(3, sim_data.test_key(cfg))
    assert td.yhat.tolist() == rng.choice(np.array([-1.0, 1.0]), size=7).tolist()
    assert td.flip_u.tolist() == rng.random(7).tolist()
    assert td.normals.tolist() == rng.standard_normal((7, 1 if shared else 2, 4)).tolist()


@pytest.mark.parametrize("shared,projected", [(True, True), (False, False)])
def test_explicit_test_noise_chunks_are_one_stream_cut_at_chunk(shared, projected):
    cfg = tiny(n_test=7, d=3, P=3, shared_noise=shared, noise_projected=projected, seed=2)
    patches = 1 if shared else 2
    chunks = list(explicit_test_noise(cfg, chunk=3))
    assert [s for s, _ in chunks] == [0, 3, 6] and [c.shape for _, c in chunks] == [(3, patches, 3)] * 2 + [
        (1, patches, 3)]
    rng = _rng(4, (*sim_data.test_key(cfg), 3, projected))
    expected = np.concatenate([rng.standard_normal((3, patches, 3)), rng.standard_normal((3, patches, 3)),
                               rng.standard_normal((1, patches, 3))])
    if projected:
        expected[:, :, 0] = 0.0
    assert np.concatenate([c for _, c in chunks]).tolist() == expected.tolist()
    big = list(explicit_test_noise(cfg.replace(n_test=2050, d=1, P=2)))  # the default chunk is 2048 rows
    assert [(s, c.shape[0]) for s, c in big] == [(0, 2048), (2048, 2)]


# ====================================================================== data: counter-based hashing


_M = (1 << 64) - 1


def _splitmix_int(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return z ^ (z >> 31)


def test_splitmix64_is_the_published_finaliser():
    """SplitMix64 (Steele, Lea, Flood 2014): from state 0 the outputs are 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4,
    0x06C45D188009454F (the published test vector)."""
    states = np.array([0, 0x9E3779B97F4A7C15, (2 * 0x9E3779B97F4A7C15) & _M], dtype=np.uint64)
    assert [int(v) for v in _splitmix64(states)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    xs = [1, 12345, 2**63 + 7, _M]
    assert [int(v) for v in _splitmix64(np.array(xs, dtype=np.uint64))] == [_splitmix_int(x) for x in xs]


def test_hash_uniform_exact_values():
    """u = top 53 bits of splitmix(splitmix(splitmix(stream * 0x100000001B3 + seed) ^ counter * 0xD1B54A32D192ED03)
    + index * golden) / 2^53, in 64-bit arithmetic."""
    seeds = [0, 3, 2**62 + 5]
    for stream, counter in ((12, 7), (11, 0), (13, 123456)):
        u = hash_uniform(stream, np.array(seeds, dtype=np.uint64), counter, 5)
        assert u.shape == (3, 5) and u.dtype == np.float64
        for s_row, seed in enumerate(seeds):
            x = _splitmix_int((stream * 0x100000001B3 + seed) & _M)
            x = _splitmix_int(x ^ ((counter * 0xD1B54A32D192ED03) & _M))
            for i in range(5):
                y = _splitmix_int((x + i * 0x9E3779B97F4A7C15) & _M)
                assert u[s_row, i] == (y >> 11) / 2.0**53
    u = hash_uniform(12, np.arange(4), 1, 2000)
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53)) and u.max() > 0.99 and u.min() < 0.01


def test_hash_uniform_wraps_around_silently():
    """The 64-bit products overflow by design (a large counter, a large seed): no numpy overflow warning escapes, so
    the draws also work under ``-W error``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = hash_uniform(13, np.array([2**64 - 1], dtype=np.uint64), 2**40 + 3, 3)
        _splitmix64(np.array([2**64 - 1], dtype=np.uint64))
    assert u.shape == (1, 3) and np.all((u >= 0) & (u < 1))
