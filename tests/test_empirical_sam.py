"""The SAM optimizer class (docs/protocol.md#the-sam-optimizer): closed forms on a quadratic, rho = 0 ≡ the base
optimizer bit for bit, the generalised mix, ASAM, frozen BatchNorm statistics, masks, None gradients, state-dict
round trip, loss reduction, and agreement with the simulator's functional SAM step on one configuration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from empirical.sam import SAM, disable_running_stats
from simulations import SimConfig
from simulations.config import ConfigError
from simulations.engine import GroupRun
from simulations.optim import sam_step

F64 = torch.float64


def _quadratic(seed: int = 0, d: int = 5):
    """``L(w) = ½ wᵀAw`` with A symmetric positive definite, so ∇L(w) = A w."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(d, d, generator=g, dtype=F64)
    A = B @ B.T + torch.eye(d, dtype=F64)
    w = nn.Parameter(torch.randn(d, generator=g, dtype=F64))
    return A, w, lambda: 0.5 * w @ A @ w


def _backward(loss_fn):
    def closure():
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("sign", ["min", "max"])
@pytest.mark.parametrize("pieces", [1, 3])
def test_one_step_on_a_quadratic_has_the_closed_form(sign, pieces):
    """min: w − η A(w + ε), max (λ = 1): w − η (2Aw − A(w + ε)), ε = ρ Aw / ||Aw||; with w split over several
    parameters and groups the norm stays one global norm."""
    A, w, _ = _quadratic()
    w0 = w.detach().clone()
    parts = [nn.Parameter(c.clone()) for c in w0.tensor_split(pieces)]
    loss = lambda: 0.5 * torch.cat(parts) @ A @ torch.cat(parts)
    groups = [{"params": [p]} for p in parts]
    lr, rho = 0.05, 0.3
    SAM(groups, torch.optim.SGD, rho=rho, sign=sign, lr=lr).step(_backward(loss))
    g = A @ w0
    eps = rho * g / g.norm()
    g_eps = A @ (w0 + eps)
    expected = w0 - lr * g_eps if sign == "min" else w0 - lr * (2 * g - g_eps)
    torch.testing.assert_close(torch.cat(parts).detach(), expected, rtol=0, atol=1e-12)


def test_adaptive_perturbation_and_generalised_mix():
    """ASAM: ε = ρ w² g / || |w| g ||; then g_final = g + sλ(g' − g) for λ = 0.3 with both signs."""
    A, w, loss = _quadratic(1)
    for sign, s in (("min", 1.0), ("max", -1.0)):
        w.data = torch.linspace(-1.0, 1.5, 5, dtype=F64)
        w0 = w.detach().clone()
        opt = SAM([w], torch.optim.SGD, rho=0.2, adaptive=True, sign=sign, lamb=0.3, lr=0.1)
        loss().backward()
        g = w.grad.clone()
        opt.first_step(zero_grad=True)
        eps = 0.2 * w0**2 * g / (w0.abs() * g).norm()
        torch.testing.assert_close(w.detach() - w0, eps, rtol=0, atol=1e-14)
        loss().backward()
        g_eps = w.grad.clone()
        torch.testing.assert_close(g_eps, A @ (w0 + eps), rtol=0, atol=1e-12)
        opt.second_step()
        torch.testing.assert_close(w.grad, g + s * 0.3 * (g_eps - g), rtol=0, atol=1e-14)
        torch.testing.assert_close(w.detach(), w0 - 0.1 * w.grad, rtol=0, atol=1e-14)  # restored, then SGD
        w.grad = None


def _mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers)


def _data(seed=0, n=32):
    """Inputs and labels from a fixed linear teacher (learnable, so training must cut the loss)."""
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    teacher = torch.randn(6, 3, generator=torch.Generator().manual_seed(1234))
    return x, (x @ teacher).argmax(dim=1)


def _ce_closure(model, x, y):
    return _backward(lambda: nn.functional.cross_entropy(model(x), y))


def test_sign_max_gives_two_g_minus_perturbed_g():
    model, (x, y) = _mlp(), _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, sign="max", lr=0.1)
    _ce_closure(model, x, y)()
    g = [p.grad.clone() for p in model.parameters()]
    opt.first_step(zero_grad=True)
    _ce_closure(model, x, y)()
    g_eps = [p.grad.clone() for p in model.parameters()]
    opt.second_step()
    for p, a, b in zip(model.parameters(), g, g_eps):
        torch.testing.assert_close(p.grad, 2 * a - b, rtol=0, atol=1e-6)
        assert not torch.allclose(a, b)  # the perturbation mattered


def test_rho_zero_is_sgd_bit_for_bit():
    """Momentum 0.9 and weight decay 5e-4: step(closure) and the manual first/second steps with rho = 0 give the
    same parameters as SGD, exactly, over several steps (and rho > 0 does not)."""
    kwargs = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    models = [_mlp(bn=True) for _ in range(4)]
    sgd = torch.optim.SGD(models[0].parameters(), **kwargs)
    sam_step_api = SAM(models[1].parameters(), torch.optim.SGD, rho=0.0, **kwargs)
    sam_manual = SAM(models[2].parameters(), torch.optim.SGD, rho=0.0, sign="max", lamb=0.5, **kwargs)
    sam_positive = SAM(models[3].parameters(), torch.optim.SGD, rho=0.05, **kwargs)
    for t in range(5):
        x, y = _data(t)
        sgd.zero_grad()
        _ce_closure(models[0], x, y)()
        sgd.step()
        sam_step_api.step(_ce_closure(models[1], x, y), model=models[1])
        _ce_closure(models[2], x, y)()
        sam_manual.first_step(zero_grad=True)
        with disable_running_stats(models[2]):  # the documented manual pattern
            _ce_closure(models[2], x, y)()
        sam_manual.second_step(zero_grad=True)
        sam_positive.step(_ce_closure(models[3], x, y), model=models[3])
    for other in models[1:3]:
        for a, b in zip(models[0].state_dict().values(), other.state_dict().values()):
            assert torch.equal(a, b)
    assert not torch.equal(models[0][0].weight, models[3][0].weight)


def test_batchnorm_statistics_come_from_the_first_pass_only():
    model, (x, y) = _mlp(bn=True), _data()
    reference = copy.deepcopy(model)
    reference(x)  # one train-mode forward: what the statistics should absorb
    SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1).step(_ce_closure(model, x, y), model=model)
    bn, ref = model[1], reference[1]
    assert bn.num_batches_tracked.item() == 1 and bn.track_running_stats
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=0)
    # without the model the perturbed pass would be absorbed too (so the check above can fail)
    SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1).step(_ce_closure(model, x, y))
    assert bn.num_batches_tracked.item() == 3
    with disable_running_stats(model):
        model(x)
    assert bn.num_batches_tracked.item() == 3


def test_masked_entries_receive_no_update():
    model, (x, y) = _mlp(), _data()
    params = list(model.parameters())
    masks = [torch.rand(p.shape, generator=torch.Generator().manual_seed(i)) > 0.5 for i, p in enumerate(params)]
    masks[-1] = None  # unmasked: all entries train
    before = [p.detach().clone() for p in params]
    opt = SAM(params, torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.set_mask(masks)
    for _ in range(3):
        opt.step(_ce_closure(model, x, y), model=model)
    for p, p0, mask in zip(params, before, masks):
        if mask is None:
            assert (p != p0).all()
            continue
        assert torch.equal(p[~mask], p0[~mask])  # no gradient, no decay, no momentum
        assert (p[mask] != p0[mask]).all()
        assert not opt.base_optimizer.state[p]["momentum_buffer"][~mask].any()
    opt.clear_mask()
    opt.step(_ce_closure(model, x, y), model=model)
    assert (params[0] != before[0]).all()
    with pytest.raises(ConfigError, match="shape"):
        opt.set_mask({params[0]: torch.ones(3)})


def test_parameters_without_gradient_are_skipped():
    model, (x, y) = _mlp(), _data()
    unused = nn.Parameter(torch.ones(4))
    opt = SAM([*model.parameters(), unused], torch.optim.SGD, rho=0.1, lr=0.1, weight_decay=0.1)
    opt.step(_ce_closure(model, x, y), model=model)
    assert unused.grad is None and torch.equal(unused, torch.ones(4))
    SAM([unused], torch.optim.SGD, rho=0.1, lr=0.1).step(lambda: torch.zeros(()))  # nothing has a gradient


def test_state_dict_round_trip_continues_like_uninterrupted_training():
    kwargs = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    model = _mlp(bn=True)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, adaptive=True, sign="max", lamb=0.5, **kwargs)
    for t in range(3):
        opt.step(_ce_closure(model, *_data(t)), model=model)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for t in range(3, 6):
        opt.step(_ce_closure(model, *_data(t)), model=model)

    resumed = _mlp(seed=1, bn=True)
    resumed.load_state_dict(saved_model)
    opt2 = SAM(resumed.parameters(), torch.optim.SGD, rho=0.7, lr=1.0, momentum=0.9, weight_decay=5e-4)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    group = opt2.param_groups[0]
    assert (group["rho"], group["adaptive"], group["sign"], group["lamb"], group["lr"]) == (0.1, True, "max", 0.5, 0.1)
    for t in range(3, 6):
        opt2.step(_ce_closure(resumed, *_data(t)), model=resumed)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_hyperparameters_are_refused():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ConfigError, match="rho"):
        SAM([w], torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ConfigError, match="sign"):
        SAM([w], torch.optim.SGD, sign="up", lr=0.1)
    with pytest.raises(ConfigError, match="closure"):
        SAM([w], torch.optim.SGD, lr=0.1).step()


@pytest.mark.parametrize("adaptive,rho", [(False, 0.05), (True, 1.0)])
def test_a_few_sam_steps_cut_the_loss(adaptive, rho):
    model, (x, y) = _mlp(bn=True), _data(n=64)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.1, momentum=0.9)
    with torch.no_grad():
        start = nn.functional.cross_entropy(model(x), y).item()
    for _ in range(30):
        opt.step(_ce_closure(model, x, y), model=model)
    with torch.no_grad():
        model.eval()
        end = nn.functional.cross_entropy(model(x), y).item()
    assert end < 0.5 * start


def test_bf16_autocast_needs_no_scaler():
    model, (x, y) = _mlp(bn=True), _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = model[0].weight.detach().clone()
    loss = opt.step(closure, model=model)
    assert torch.isfinite(loss) and model[0].weight.dtype == torch.float32
    assert torch.isfinite(model[0].weight).all() and not torch.equal(model[0].weight, before)


def test_matches_the_simulators_functional_sam_step():
    """One SAM for the whole project: simulations.optim.sam_step on one configuration equals this class on the same
    network, L(W) = mean_i softplus(−y_i f(x_i)), f = (1/m) Σ_r Σ_p [relu(<w_{+1,r}, x_p>) − relu(<w_{−1,r}, x_p>)]."""
    cfg = SimConfig(backend="weights", n=8, d=30, m=3, optimizer="sam", rho=0.3, lr=0.2, unlearn_method="none",
                    n_test=100, precision="float64")
    run = GroupRun([cfg])
    W0 = run.backend.init_state()  # (1, 2, m, d)
    X = run.backend.X.view(cfg.n, 2, cfg.d)  # stored patches: signal, then the shared noise patch (P − 1 = 1 copy)
    y = run.labels[0]

    def loss_fn():
        pre = torch.relu(torch.einsum("jrd,ipd->jrip", W[0], X))  # (2, m, n, P)
        f = (pre[0] - pre[1]).sum(dim=(0, 2)) / cfg.m
        return torch.logaddexp(torch.zeros_like(f), -y * f).mean()  # softplus(−y f), exact slope

    W = nn.Parameter(W0.clone())
    SAM([W], torch.optim.SGD, rho=cfg.rho, lr=cfg.lr).step(_backward(loss_fn))
    weights = torch.full((1, cfg.n), 1.0 / cfg.n, dtype=F64)
    expected, _ = sam_step(run.backend, run.act, W0, run.labels, weights, torch.tensor([cfg.lr], dtype=F64),
                           torch.tensor([cfg.rho], dtype=F64))
    torch.testing.assert_close(W.detach(), expected, rtol=0, atol=1e-10)
    assert (W.detach() - W0).abs().max() > 1e-3  # a real step was taken
