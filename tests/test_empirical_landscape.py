"""Loss landscape (docs/protocol.md#metrics): seeded, orthogonal, rescaled directions; surfaces and slices that match
hand-set weights and leave the model bitwise unchanged (also after an exception); the summary; bad inputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from empirical.augment import DeviceData
from empirical.landscape import landscape, landscape_summary, loss_slice, loss_surface, random_directions
from empirical.models import build_model
from simulations.config import ConfigError


def tiny_model(seed: int = 0) -> nn.Module:
    """Conv (with bias) → BN → ReLU → pool → linear; BN has non-default affine parameters and running statistics,
    so eval mode and train mode give different losses and every 1-D tensor has a non-zero norm."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    bn = model[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def fake_data(n: int = 32, seed: int = 0) -> DeviceData:
    rng = np.random.default_rng(seed)
    return DeviceData(rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=n))


@torch.no_grad()
def eval_loss(model: nn.Module, data: DeviceData, indices) -> torch.Tensor:
    """Mean cross-entropy over ``indices``, eval mode, one batch, computed without the module under test."""
    was = model.training
    model.eval()
    idx = torch.as_tensor(np.asarray(indices))
    loss = F.cross_entropy(model(data.images[idx].float() / 255), data.labels[idx])
    model.train(was)
    return loss


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snap.keys()
    for k, v in snap.items():
        now = state[k]
        assert now.dtype == v.dtype and now.shape == v.shape, k
        if v.is_floating_point():  # bit patterns: -0.0 vs 0.0 or a NaN payload would count as a change
            assert torch.equal(now.view(torch.int32), v.view(torch.int32)), k
        else:
            assert torch.equal(now, v), k


def with_weights(model: nn.Module, *terms: tuple[float, list[torch.Tensor]]) -> nn.Module:
    """A copy of ``model`` with parameters set by hand to ``base + Σ c·d``."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in enumerate(other.parameters()):
            p.copy_(p + sum(c * d[k] for c, d in terms))
    return other


# ---------------------------------------------------------------------------------------------------------- directions

def test_same_seed_same_directions_other_seed_different():
    model = tiny_model()
    a1, a2 = random_directions(model, seed=3)
    b1, b2 = random_directions(model, seed=3)
    c1, c2 = random_directions(model, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a1 + a2, b1 + b2))
    assert not any(torch.equal(x, y) for x, y in zip(a1 + a2, c1 + c2))
    assert not any(torch.equal(x, y) for x, y in zip(a1, a2))  # d2 is not d1
    params = list(model.parameters())
    assert [d.shape for d in a1] == [d.shape for d in a2] == [p.shape for p in params]
    assert all(d.dtype == p.dtype and d.device == p.device for d, p in zip(a1 + a2, params + params))


def test_directions_do_not_depend_on_the_global_rng():
    model = tiny_model()
    torch.manual_seed(0)
    d1, _ = random_directions(model, seed=1)
    torch.manual_seed(123)
    e1, _ = random_directions(model, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(d1, e1))


def flat(direction: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([d.reshape(-1).double() for d in direction])


@pytest.mark.parametrize("normalization", ["tensor", "filter"])
@pytest.mark.parametrize("ignore", [False, True])
def test_directions_are_orthogonal_globally_and_per_unit(normalization, ignore):
    model = tiny_model()
    d1, d2 = random_directions(model, seed=0, normalization=normalization, ignore_bn_and_bias=ignore)
    v1, v2 = flat(d1), flat(d2)
    assert v1.norm() > 0 and v2.norm() > 0
    assert abs(float(v1 @ v2)) <= 1e-6 * float(v1.norm() * v2.norm())
    for p, x, y in zip(model.parameters(), d1, d2):  # claimed stronger: orthogonal unit by unit
        units = p.shape[0] if (normalization == "filter" and p.dim() > 1) else 1
        dots = (x.double().reshape(units, -1) * y.double().reshape(units, -1)).sum(1)
        scale = x.double().reshape(units, -1).norm(dim=1) * y.double().reshape(units, -1).norm(dim=1)
        assert (dots.abs() <= 1e-6 * scale + 1e-30).all()


@pytest.mark.parametrize("ignore", [False, True])
def test_tensor_normalisation_matches_each_parameter_norm(ignore):
    model = tiny_model()
    d1, d2 = random_directions(model, seed=0, normalization="tensor", ignore_bn_and_bias=ignore)
    for p, x, y in zip(model.parameters(), d1, d2):
        if p.dim() <= 1 and ignore:
            assert not x.any() and not y.any()
            continue
        for d in (x, y):
            torch.testing.assert_close(d.norm(), p.detach().norm(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("ignore", [False, True])
def test_filter_normalisation_matches_each_filter_norm(ignore):
    model = tiny_model()
    d1, d2 = random_directions(model, seed=0, normalization="filter", ignore_bn_and_bias=ignore)
    for p, x, y in zip(model.parameters(), d1, d2):
        if p.dim() <= 1:
            if ignore:
                assert not x.any() and not y.any()
            else:  # 1-D tensors: one unit, rescaled to the tensor's norm
                for d in (x, y):
                    torch.testing.assert_close(d.norm(), p.detach().norm(), rtol=1e-5, atol=0)
            continue
        want = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        assert want.std() > 0  # filters of different norms, so tensor normalisation would fail this
        for d in (x, y):
            torch.testing.assert_close(d.reshape(p.shape[0], -1).norm(dim=1), want, rtol=1e-5, atol=0)


def test_ignore_flag_only_zeroes_one_dimensional_tensors():
    model = tiny_model()
    a1, a2 = random_directions(model, seed=5, normalization="filter", ignore_bn_and_bias=False)
    b1, b2 = random_directions(model, seed=5, normalization="filter", ignore_bn_and_bias=True)
    for p, x, y in zip(model.parameters(), a1 + a2, b1 + b2):
        if p.dim() > 1:
            assert torch.equal(x, y)
        else:
            assert x.any() and not y.any()


def test_zero_parameter_and_single_element_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 3), nn.Linear(3, 2))  # first weight (3, 1): filters of one element
    with torch.no_grad():
        model[1].bias.zero_()
    d1, d2 = random_directions(model, seed=0, normalization="filter")
    w = model[0].weight.detach()
    torch.testing.assert_close(d1[0].abs(), w.abs(), rtol=1e-6, atol=0)  # d1 keeps its per-filter norms
    assert not d2[0].any()  # nothing orthogonal to d1 inside a one-element unit
    assert not d1[3].any() and not d2[3].any()  # zero parameter: zero direction
    assert abs(float(flat(d1) @ flat(d2))) <= 1e-6 * float(flat(d1).norm() * flat(d2).norm())


# ---------------------------------------------------------------------------------------------------------- evaluation

def test_centre_of_a_resnet_surface_is_its_eval_loss():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4, "cifar10")
    model.train()
    data, idx = fake_data(32), np.arange(32)
    surf = loss_surface(model, data, idx, random_directions(model, seed=0), grid=3, batch_size=32)
    assert surf["loss"].shape == (3, 3) and np.isfinite(surf["loss"]).all()
    centre = torch.tensor(surf["loss"][1, 1], dtype=torch.float32)
    torch.testing.assert_close(centre, eval_loss(model, data, idx), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # it really is eval mode: the fresh BN statistics make train mode differ
        train_loss = F.cross_entropy(model(data.images.float() / 255), data.labels)
    assert abs(float(train_loss) - float(centre)) > 1e-3
    assert model.training and all(m.training for m in model.modules())


def test_grid_points_match_weights_set_by_hand():
    model = tiny_model()
    data, idx = fake_data(32), np.arange(3, 29)  # 26 samples in batches of 10: a partial last batch
    d1, d2 = random_directions(model, seed=1)
    surf = loss_surface(model, data, idx, (d1, d2), grid=5, span=0.8, batch_size=10)
    np.testing.assert_array_equal(surf["alphas"], [-0.8, -0.4, 0.0, 0.4, 0.8])
    np.testing.assert_array_equal(surf["betas"], surf["alphas"])
    loss = torch.from_numpy(surf["loss"]).float()
    for i, a in enumerate(surf["alphas"]):  # along the α axis (β = 0): base + α·d1
        torch.testing.assert_close(loss[i, 2], eval_loss(with_weights(model, (a, d1)), data, idx), rtol=1e-5,
                                   atol=1e-6)
    for i, j in [(0, 4), (3, 1), (4, 0)]:  # off-axis points: base + α·d1 + β·d2, α indexes rows
        a, b = surf["alphas"][i], surf["betas"][j]
        torch.testing.assert_close(loss[i, j], eval_loss(with_weights(model, (a, d1), (b, d2)), data, idx),
                                   rtol=1e-5, atol=1e-6)
    assert np.ptp(surf["loss"]) > 1e-3  # the directions do move the loss


def test_slice_matches_the_surface_axis_and_hand_set_weights():
    model = tiny_model()
    data, idx = fake_data(32), np.arange(32)
    d1, d2 = random_directions(model, seed=2, normalization="filter")
    surf = loss_surface(model, data, idx, (d1, d2), grid=5, batch_size=16)
    along_d2 = loss_slice(model, data, idx, d2, points=5, batch_size=16)
    np.testing.assert_allclose(along_d2["loss"], surf["loss"][2, :], rtol=1e-6)
    np.testing.assert_array_equal(along_d2["alphas"], surf["betas"])
    fine = loss_slice(model, data, idx, d1, points=7, span=1.5, batch_size=32)
    assert fine["alphas"][3] == 0.0 and fine["alphas"][-1] == 1.5
    torch.testing.assert_close(torch.tensor(fine["loss"][0], dtype=torch.float32),
                               eval_loss(with_weights(model, (-1.5, d1)), data, idx), rtol=1e-5, atol=1e-6)


def test_parameters_buffers_and_modes_restored_bitwise():
    model = tiny_model()
    model.train()
    model[1].eval()  # a submodule in another mode than its parent must keep it
    snap = snapshot(model)
    data = fake_data(32)
    directions = random_directions(model, seed=0)
    loss_surface(model, data, np.arange(32), directions, grid=3, batch_size=8)
    loss_slice(model, data, np.arange(32), directions[1], points=3, batch_size=8)
    assert_bitwise(model, snap)
    assert model.training and not model[1].training and model[0].training


def test_restored_after_an_exception_midway():
    model = tiny_model()
    model.train()
    snap = snapshot(model)
    base = [p.detach().clone() for p in model.parameters()]
    seen = {"calls": 0, "perturbed": None, "eval": None}

    def fail_on_third(module, args, output):
        seen["calls"] += 1
        if seen["calls"] == 3:
            seen["perturbed"] = any(not torch.equal(p, b) for p, b in zip(module.parameters(), base))
            seen["eval"] = not module.training
            raise RuntimeError("injected failure")

    handle = model.register_forward_hook(fail_on_third)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            loss_surface(model, fake_data(32), np.arange(32), random_directions(model, seed=0), grid=5,
                         batch_size=32)
    finally:
        handle.remove()
    assert seen["perturbed"] and seen["eval"]  # the failure happened with moved weights, in eval mode
    assert_bitwise(model, snap)
    assert all(m.training for m in model.modules())


def test_landscape_runs_each_set_with_one_pair_of_directions():
    model = tiny_model()
    train, test = fake_data(32, seed=0), fake_data(20, seed=1)
    out = landscape(model, {"forget": (train, np.arange(8)), "test": (test, None)}, seed=0, grid=3, batch_size=16)
    assert set(out) == {"forget", "test"}
    d = random_directions(model, seed=0)
    for name, (data, idx) in {"forget": (train, np.arange(8)), "test": (test, np.arange(20))}.items():
        surf = loss_surface(model, data, idx, d, grid=3, batch_size=16)
        np.testing.assert_array_equal(out[name]["loss"], surf["loss"])
        np.testing.assert_array_equal(out[name]["slice_alpha"], surf["loss"][:, 1])
        np.testing.assert_array_equal(out[name]["slice_beta"], surf["loss"][1, :])
        assert out[name]["summary"] == landscape_summary(surf["loss"])
    assert out["forget"]["summary"]["centre_loss"] != out["test"]["summary"]["centre_loss"]


# ------------------------------------------------------------------------------------------------------------- summary

def test_summary_by_hand():
    grid = np.arange(1.0, 10.0).reshape(3, 3)  # centre 5, std sqrt(60/9) ≈ 2.58: only 4, 5, 6 within 1.29
    s = landscape_summary(grid)
    assert s["std"] == pytest.approx(math.sqrt(60 / 9))
    assert s["basin_ratio"] == pytest.approx(100 / 3)
    assert (s["centre_loss"], s["min"], s["max"]) == (5.0, 1.0, 9.0)

    pit = np.array([[3.0, 3.0, 3.0], [3.0, 0.0, 3.0], [3.0, 3.0, 1.0]])  # centre ≠ mean: only the centre is close
    s = landscape_summary(pit)
    assert s["std"] == pytest.approx(math.sqrt(64 / 9 - (22 / 9) ** 2))
    assert s["basin_ratio"] == pytest.approx(100 / 9)
    assert s["centre_loss"] == 0.0

    wide = np.full((5, 5), 2.0)
    wide[0, :] = 2.0 + np.array([0.1, 0.2, 3.0, 0.3, 0.1])  # std ≈ 0.587; |Δ| ≤ 0.293: 23 of 25 (not 0.3, 3)
    s = landscape_summary(wide)
    assert s["std"] == pytest.approx(np.std(wide))
    assert s["basin_ratio"] == pytest.approx(100 * 23 / 25)

    assert landscape_summary(np.ones((3, 3)))["basin_ratio"] == 100.0  # flat: std 0, every point ties the centre
    assert landscape_summary(np.array([2.0, 0.0, 2.0]))["basin_ratio"] == pytest.approx(100 / 3)  # a 1-D slice


@pytest.mark.parametrize("shape", [(4, 4), (2, 2), (3, 4), (1, 1), (4,), (3, 3, 3)])
def test_summary_rejects_grids_without_a_centre(shape):
    with pytest.raises(ConfigError, match="odd length"):
        landscape_summary(np.zeros(shape))


def test_summary_rejects_non_finite_losses():
    grid = np.ones((3, 3))
    grid[0, 0] = np.inf
    with pytest.raises(ConfigError, match="non-finite"):
        landscape_summary(grid)


# ------------------------------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"grid": 1}, "grid=1"), ({"grid": 2}, "grid=2"), ({"grid": 4}, "odd integer"), ({"grid": 5.0}, "grid=5.0"),
    ({"span": 0.0}, "span=0.0"), ({"span": -1.0}, "span=-1.0"), ({"span": float("nan")}, "span=nan"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"indices": np.array([], dtype=np.int64)}, "non-empty"), ({"indices": np.array([0, 32])}, "32 samples"),
    ({"indices": np.array([0.0, 1.0])}, "integers"),
])
def test_surface_bad_inputs(kwargs, message):
    model = tiny_model()
    snap = snapshot(model)
    args = {"indices": np.arange(4), "directions": random_directions(model, seed=0), **kwargs}
    with pytest.raises(ConfigError, match=message):
        loss_surface(model, fake_data(32), **args)
    assert_bitwise(model, snap)


def test_directions_that_do_not_fit_the_model():
    model, data, idx = tiny_model(), fake_data(8), np.arange(8)
    d1, d2 = random_directions(model, seed=0)
    with pytest.raises(ConfigError, match="has 5 tensors but the model has 6"):
        loss_surface(model, data, idx, (d1[:-1], d2), grid=3)
    with pytest.raises(ConfigError, match=r"d2\[0\] has shape \(4, 27\)"):
        loss_surface(model, data, idx, (d1, [d2[0].reshape(4, 27)] + d2[1:]), grid=3)
    with pytest.raises(ConfigError, match="pair"):
        loss_surface(model, data, idx, (d1,), grid=3)
    other = random_directions(build_model("resnet18", 10, 4, "cifar10"), seed=0)
    with pytest.raises(ConfigError, match="parameters"):
        loss_surface(model, data, idx, other, grid=3)
    with pytest.raises(ConfigError, match="list of tensors"):
        loss_slice(model, data, idx, d1[0], points=3)
    with pytest.raises(ConfigError, match="points=4"):
        loss_slice(model, data, idx, d1, points=4)


def test_direction_bad_inputs():
    model = tiny_model()
    with pytest.raises(ConfigError, match="normalization='layer'"):
        random_directions(model, seed=0, normalization="layer")
    with pytest.raises(ConfigError, match="seed"):
        random_directions(model, seed=1.5)
    with pytest.raises(ConfigError, match="no parameters"):
        random_directions(nn.ReLU(), seed=0)
    with pytest.raises(ConfigError, match="sets is empty"):
        landscape(model, {}, seed=0)
