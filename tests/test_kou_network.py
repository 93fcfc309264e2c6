"""The (K) authors' network as configuration options (docs/model.md#network): trainable filter bias, mean over patches,
no 1/m, PyTorch's uniform init — checked against an independent ``torch.nn.Module`` trained by autograd, against hand
computations, and gram against weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import assert_results_close, drive, full_patches, model_gradient, patch_preacts, tiny
from torch import nn

from simulations import SimConfig
from simulations.config import PRESETS, ConfigError, preset
from simulations.data import explicit_data, explicit_test_noise
from simulations.data import test_draws as fresh_test_draws
from simulations.engine import GroupRun, simulate
from simulations.model import network_output

KOU = dict(backend="weights", n=10, d=50, P=2, m=4, sigma_p=1.0, label_flip=0.2, noise_projected=False,
           signal_strength=2.0, lr=0.1, steps=30, n_test=300, filter_bias=True, init="torch_uniform",
           patch_aggregation="mean", output_scale="one", log_points=3)


class ReferenceCNN(nn.Module):
    """``F_j(x) = scale * sum_r agg_p ReLU(<w_{j,r}, x_p> + b_{j,r})`` written with an nn.Conv1d of kernel size and
    stride d: one application of each of the 2m filters per patch (the (K) authors' script with the defaults)."""

    def __init__(self, d: int, m: int, bias: bool = True, aggregation: str = "mean", scale: float = 1.0):
        super().__init__()
        self.d, self.m, self.aggregation, self.scale = d, m, aggregation, scale
        self.conv = nn.Conv1d(1, 2 * m, kernel_size=d, stride=d, bias=bias, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (n, P, d) -> logits (n, 2) = (F_{+1}, F_{-1})
        n, P, d = x.shape
        h = torch.relu(self.conv(x.reshape(n, 1, P * d)))  # (n, 2m, P)
        h = h.mean(dim=-1) if self.aggregation == "mean" else h.sum(dim=-1)
        return self.scale * h.view(n, 2, self.m).sum(dim=-1)

    def margin_output(self, x: torch.Tensor) -> torch.Tensor:
        logits = self(x)
        return logits[:, 0] - logits[:, 1]  # f = F_{+1} - F_{-1}


def _reference_for(cfg: SimConfig, data) -> ReferenceCNN:
    """The reference module with the simulator's initial weights and biases copied in."""
    scale = 1.0 if cfg.output_scale == "one" else 1.0 / cfg.m
    net = ReferenceCNN(cfg.d, cfg.m, cfg.filter_bias, cfg.patch_aggregation, scale)
    init_scale = 1.0 / math.sqrt(cfg.d) if cfg.init == "torch_uniform" else cfg.sigma_0
    with torch.no_grad():
        net.conv.weight.copy_(torch.as_tensor(data.init * init_scale).view(2 * cfg.m, 1, cfg.d))
        if cfg.filter_bias:
            net.conv.bias.copy_(torch.as_tensor(data.bias * init_scale))
    return net


def _train_reference(net: ReferenceCNN, X: torch.Tensor, labels: torch.Tensor, lr: float, steps: int) -> None:
    """Plain full-batch GD with autograd on the cross-entropy of the two outputs."""
    target = (labels < 0).long()  # class 0 is j = +1
    for _ in range(steps):
        net.zero_grad()
        nn.functional.cross_entropy(net(X), target).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad


def _split(state: torch.Tensor, d: int):
    """Weights (2, m, d) and biases (2, m) of configuration 0 of a weights-backend state."""
    return state[0, ..., :d], state[0, ..., d]


def test_weights_backend_trains_like_the_reference_module():
    cfg = SimConfig(**KOU)
    data = explicit_data(cfg)
    run = GroupRun([cfg], explicit=[data])
    net = _reference_for(cfg, data)
    W0, b0 = _split(run.backend.init_state(), cfg.d)
    np.testing.assert_array_equal(W0.numpy(), net.conv.weight.detach().view(2, cfg.m, cfg.d).numpy())
    np.testing.assert_array_equal(b0.numpy(), net.conv.bias.detach().view(2, cfg.m).numpy())

    state = drive(run)
    _train_reference(net, full_patches(cfg, data), run.labels[0], cfg.lr, cfg.steps)
    W, b = _split(state, cfg.d)
    W_ref = net.conv.weight.detach().view(2, cfg.m, cfg.d)
    b_ref = net.conv.bias.detach().view(2, cfg.m)
    assert float((W - W0).abs().max()) > 1e-2 and float((b - b0).abs().max()) > 1e-3  # both were trained
    np.testing.assert_allclose(W.numpy(), W_ref.numpy(), rtol=1e-6, atol=1e-6 * float(W_ref.abs().max()))
    np.testing.assert_allclose(b.numpy(), b_ref.numpy(), rtol=1e-6, atol=1e-6 * float(b_ref.abs().max()))

    # the test error: the same fresh samples through both networks give the same outputs and the same error
    draws = fresh_test_draws(cfg)
    noise = np.concatenate([chunk for _, chunk in explicit_test_noise(cfg)])  # (n_test, 1, d)
    X_test = np.zeros((cfg.n_test, cfg.P, cfg.d))
    X_test[:, 0, 0] = draws.yhat * cfg.signal_strength
    X_test[:, 1:, :] = cfg.sigma_p * noise
    f_ref = net.margin_output(torch.as_tensor(X_test)).detach()
    yhat = torch.as_tensor(draws.yhat)[None]
    f_sim = run.backend.test_outputs(state, run.act, [explicit_test_noise(cfg)], run.param("sigma_p"), yhat,
                                     run.layout.noise_multiplicity)[0]
    np.testing.assert_allclose(f_sim.numpy(), f_ref.numpy(), rtol=1e-6, atol=1e-9)
    y_test = np.where(draws.flip_u < cfg.label_flip, -draws.yhat, draws.yhat)
    err_ref = float(np.mean(y_test * f_ref.numpy() <= 0))
    assert float(run.evaluate(state)["test_error"][0]) == err_ref
    assert 0.0 < err_ref < 0.6


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
@pytest.mark.parametrize("scale", ["inv_m", "one"])
@pytest.mark.parametrize("bias", [False, True])
def test_every_combination_steps_like_autograd(aggregation, scale, bias):
    """Five GD steps of each (aggregation, scale, bias) combination, gaussian init, P = 3: equal to autograd."""
    cfg = SimConfig(**{**KOU, "P": 3, "shared_noise": False, "init": "gaussian", "sigma_0": 0.2, "steps": 5,
                       "filter_bias": bias, "patch_aggregation": aggregation, "output_scale": scale, "lr": 0.5})
    data = explicit_data(cfg)
    run = GroupRun([cfg], explicit=[data])
    net = _reference_for(cfg, data)
    state = drive(run)
    _train_reference(net, full_patches(cfg, data), run.labels[0], cfg.lr, cfg.steps)
    W_ref = net.conv.weight.detach().view(2, cfg.m, cfg.d)
    np.testing.assert_allclose(state[0, ..., :cfg.d].numpy(), W_ref.numpy(), rtol=1e-9, atol=1e-12)
    if bias:
        np.testing.assert_allclose(state[0, ..., cfg.d].numpy(), net.conv.bias.detach().view(2, cfg.m).numpy(),
                                   rtol=1e-9, atol=1e-12)
    else:
        assert state.shape[-1] == cfg.d


@pytest.mark.parametrize("backend", ["weights", "gram"])
def test_aggregation_and_scale_multiply_the_output(backend):
    """On fixed weights: f(mean) = f(sum) / P and f(one) = m f(inv_m), exactly as predicted."""
    base = tiny(backend=backend, P=3, m=4, filter_bias=True, sigma_0=0.3)
    data = explicit_data(base.replace(backend="weights"))
    outputs = {}
    for aggregation in ("sum", "mean"):
        for scale in ("inv_m", "one"):
            run = GroupRun([base.replace(patch_aggregation=aggregation, output_scale=scale)], explicit=[data])
            pre = run.backend.expand(run.backend.basis_preacts(run.backend.init_state()))
            outputs[aggregation, scale] = network_output(run.act, *pre, run.layout.noise_multiplicity)[0]
    ref = outputs["sum", "inv_m"]
    assert float(ref.abs().min()) > 0
    m, P = base.m, base.P
    torch.testing.assert_close(outputs["sum", "one"], ref * m, rtol=1e-14, atol=0)
    torch.testing.assert_close(outputs["mean", "inv_m"], ref / P, rtol=1e-14, atol=0)
    torch.testing.assert_close(outputs["mean", "one"], ref * m / P, rtol=1e-14, atol=0)


@pytest.mark.parametrize("backend", ["weights", "gram"])
@pytest.mark.parametrize("aggregation,scale", [("sum", "inv_m"), ("mean", "one")])
def test_bias_gradient_by_hand(backend, aggregation, scale):
    """dL/db_{j,r} = sum_i a_i l'_i y_i j c sum_p sigma'(<w_{j,r}, x_i^(p)> + b_{j,r}), c the output scale."""
    cfg = tiny(backend=backend, n=4, d=6, m=2, P=3, shared_noise=False, filter_bias=True, sigma_0=0.5,
               patch_aggregation=aggregation, output_scale=scale, label_flip=0.3)
    data = explicit_data(cfg.replace(backend="weights"))
    run = GroupRun([cfg], explicit=[data])
    X = full_patches(cfg, data).numpy()  # (n, P, d)
    W = cfg.sigma_0 * data.init.reshape(2, cfg.m, cfg.d)
    b = cfg.sigma_0 * data.bias.reshape(2, cfg.m)
    y = run.labels[0].numpy()
    a = np.array([0.4, -0.1, 0.3, 0.2])  # signed sample weights, as NegGrad uses
    c = (1.0 if scale == "one" else 1.0 / cfg.m) / (cfg.P if aggregation == "mean" else 1)
    expected = np.zeros((2, cfg.m))
    f = np.zeros(cfg.n)
    for i in range(cfg.n):
        for jj, j in enumerate((1.0, -1.0)):
            for r in range(cfg.m):
                for p in range(cfg.P):
                    f[i] += j * c * max(0.0, W[jj, r] @ X[i, p] + b[jj, r])
    for i in range(cfg.n):
        dl = -1.0 / (1.0 + math.exp(y[i] * f[i]))
        for jj, j in enumerate((1.0, -1.0)):
            for r in range(cfg.m):
                active = sum(W[jj, r] @ X[i, p] + b[jj, r] > 0 for p in range(cfg.P))
                expected[jj, r] += a[i] * dl * y[i] * j * c * active
    state = run.backend.init_state()
    _, _, out, _, direction = model_gradient(run, state, run.labels, torch.as_tensor(a)[None])
    np.testing.assert_allclose(out[0].numpy(), f, rtol=1e-12, atol=1e-14)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(direction[0, ..., -1].numpy(), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", ["weights", "gram"])
def test_sam_perturbation_norm_includes_the_bias(backend):
    """One SAM step equals autograd SAM over all parameters: eps = rho g / ||(g_W, g_b)||, then a step at W + eps."""
    rho, lr = 0.7, 0.5
    cfg = tiny(backend=backend, filter_bias=True, sigma_0=0.3, optimizer="sam", rho=rho, lr=lr, m=3, d=20,
               patch_aggregation="mean", output_scale="one")
    data = explicit_data(cfg.replace(backend="weights"))
    run = GroupRun([cfg], explicit=[data])
    X = full_patches(cfg, data)
    target = (run.labels[0] < 0).long()

    def grads(W, b):
        W, b = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        h = torch.relu(torch.einsum("fd,ipd->ipf", W, X) + b).mean(dim=1)  # (n, 2m)
        loss = nn.functional.cross_entropy(h.view(cfg.n, 2, cfg.m).sum(-1), target)
        return torch.autograd.grad(loss, (W, b))

    W = torch.as_tensor(cfg.sigma_0 * data.init)
    b = torch.as_tensor(cfg.sigma_0 * data.bias)
    gW, gb = grads(W, b)
    norm = torch.sqrt((gW**2).sum() + (gb**2).sum())
    assert float(gb.norm()) > 0.05 * float(norm)  # the bias takes a real share of the norm
    gW2, gb2 = grads(W + rho * gW / norm, b + rho * gb / norm)
    W_new, b_new = W - lr * gW2, b - lr * gb2

    weights = torch.full((1, cfg.n), 1.0 / cfg.n, dtype=torch.float64)
    state = run.step(run.backend.init_state(), run.labels, weights, run.train_lr, run.train_rho)
    if backend == "gram":  # compare through pre-activations and biases
        got = patch_preacts(run.backend, state)[0]
        want = torch.einsum("jrd,ipd->jrip", W_new.view(2, cfg.m, cfg.d), X)[..., :2] + b_new.view(2, cfg.m, 1, 1)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(run.backend.filter_biases(state)[0].numpy(), b_new.view(2, cfg.m).numpy(),
                                   rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(state[0, ..., :cfg.d].numpy(), W_new.view(2, cfg.m, cfg.d).numpy(), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(state[0, ..., cfg.d].numpy(), b_new.view(2, cfg.m).numpy(), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("case", [
    dict(optimizer="gd"),
    dict(optimizer="sam", rho=0.2, batch_size=5, patch_aggregation="mean", output_scale="one", lr=0.1),
    dict(optimizer="sam", rho=0.2, unlearn_method="neggrad", unlearn_optimizer="sam", noise_projected=False),
    dict(unlearn_method="retrain", optimizer="sam", rho=0.2, P=3, shared_noise=False),
    dict(unlearn_method="sharp_minmax", rho=0.2, mask_fraction=0.5),
])
def test_gram_with_bias_reproduces_weights_with_bias(case):
    cfg_w = tiny(**{"backend": "weights", "label_flip": 0.2, "filter_bias": True, "sigma_0": 0.2, **case})
    data = explicit_data(cfg_w)
    run_w = GroupRun([cfg_w], explicit=[data])
    run_g = GroupRun([cfg_w.replace(backend="gram")], explicit=[data])
    state_w, state_g = drive(run_w), drive(run_g)
    pre_w, pre_g = patch_preacts(run_w.backend, state_w), patch_preacts(run_g.backend, state_g)
    scale = float(pre_w.abs().max())
    np.testing.assert_allclose(pre_g.numpy(), pre_w.numpy(), rtol=0, atol=1e-10 * scale)
    bias_w = state_w[..., cfg_w.d]
    assert float((bias_w - run_w.backend.W0[..., cfg_w.d]).abs().max()) > 1e-3  # the biases moved
    np.testing.assert_allclose(run_g.backend.filter_biases(state_g).numpy(), bias_w.numpy(), rtol=0,
                               atol=1e-10 * float(bias_w.abs().max()))
    res_w = GroupRun([cfg_w], explicit=[data]).run()[0]
    res_g = GroupRun([cfg_w.replace(backend="gram")], explicit=[data]).run()[0]
    assert_results_close(res_w, res_g, rtol=1e-8, atol=1e-10, drop_test=True, what=str(case))
    se = np.hypot(res_w.metrics["test_error_se"], res_g.metrics["test_error_se"])
    assert abs(res_w.metrics["test_error"] - res_g.metrics["test_error"]) <= 4 * se + 1e-12


def test_gram_test_error_with_bias_matches_explicit_test_samples():
    """Monte Carlo over the Gaussian noise pre-activations, shifted by the biases, vs explicit test samples."""
    cfg = tiny(backend="weights", signal_strength=1.0, filter_bias=True, sigma_0=0.5, n_test=20_000, label_flip=0.1,
               patch_aggregation="mean", output_scale="one", lr=0.2)
    data = explicit_data(cfg)
    run_w, run_g = GroupRun([cfg], explicit=[data]), GroupRun([cfg.replace(backend="gram")], explicit=[data])
    state_w, state_g = drive(run_w), drive(run_g)
    assert float(state_w[..., cfg.d].abs().max()) > 0.1  # biases large enough to matter
    met_w, met_g = run_w.evaluate(state_w), run_g.evaluate(state_g)
    for key in ("test_error", "test_error_clean"):
        pw, pg = float(met_w[key][0]), float(met_g[key][0])
        se = np.sqrt((pw * (1 - pw) + pg * (1 - pg)) / cfg.n_test)
        assert abs(pw - pg) <= 4 * se, (key, pw, pg, se)
    assert 0.02 < float(met_w["test_error_clean"][0]) < 0.45


def test_torch_uniform_init_support():
    d, m = 400, 10
    cfg = SimConfig(backend="weights", d=d, m=m, filter_bias=True, init="torch_uniform", sigma_0=5.0)
    W0 = GroupRun([cfg]).backend.W0  # sigma_0 plays no part
    weights, bias = W0[0, ..., :d], W0[0, ..., d]
    bound = 1.0 / math.sqrt(d)
    for x in (weights, bias):
        assert float(x.abs().max()) <= bound
    assert float(weights.abs().max()) > 0.99 * bound and float(bias.abs().max()) > 0.5 * bound
    assert abs(float(weights.var()) - bound**2 / 3) < 0.05 * bound**2 / 3  # U(-a, a) has variance a^2/3
    assert abs(float(weights.mean())) < 0.02 * bound
    gaussian = GroupRun([cfg.replace(init="gaussian", sigma_0=0.01)]).backend.W0
    assert float(gaussian.abs().max()) > 0.02  # the gaussian rule is N(0, sigma_0^2), unbounded


def test_gram_refuses_what_it_cannot_express():
    with pytest.raises(ConfigError, match="backend=weights"):
        SimConfig(backend="gram", init="torch_uniform")
    with pytest.raises(ConfigError, match="backend=weights"):
        preset("kou2023").config({"backend": "gram"})
    with pytest.raises(ConfigError, match="choose one of"):
        SimConfig(patch_aggregation="max")
    with pytest.raises(ConfigError, match="choose one of"):
        SimConfig(output_scale="inv_p")
    SimConfig(backend="gram", filter_bias=True, patch_aggregation="mean", output_scale="one")  # exact: allowed


def test_new_fields_keep_existing_hashes():
    """Fields added after schema 1 enter the hash only when set: earlier configurations keep their cached results."""
    assert SimConfig().hash == "7fe2ec842c402b66"  # the hash before the new fields existed
    assert SimConfig(backend="weights", d=300, rho=0.3, optimizer="sam").hash == "00a2dc7f05f7bb5e"
    hashes = {SimConfig(**kw).hash for kw in (
        {}, dict(filter_bias=True), dict(patch_aggregation="mean"), dict(output_scale="one"),
        dict(backend="weights", init="torch_uniform"), dict(backend="weights"))}
    assert len(hashes) == 6


def test_kou2023_preset_runs():
    p = PRESETS["kou2023"]
    cfg = p.config({"d": 60, "signal_strength": 4.0, "n_test": 200})
    assert (cfg.backend, cfg.filter_bias, cfg.init, cfg.patch_aggregation, cfg.output_scale) == (
        "weights", True, "torch_uniform", "mean", "one")
    assert (cfg.n, cfg.P, cfg.m, cfg.lr, cfg.steps, cfg.label_flip, cfg.noise_projected) == (
        20, 2, 10, 0.1, 100, 0.1, False)
    assert set(p.grid) == {"d", "signal_strength", "seed"}
    (res,) = simulate([cfg])
    assert res.metrics["train_error"] == 0.0  # their setting interpolates in 100 steps
    assert 0.05 <= res.metrics["test_error"] <= 0.5
