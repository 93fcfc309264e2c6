"""Mutation testing of empirical/unlearn.py (docs/testing.md): the defining properties of the generic unlearning loop
and its helpers, pinned with exact or hand-computed values so that a mutant of the module fails — which data each
phase passes over (R, F, R ∪ F, and the forget stream), how many steps (``steps_per_epoch``), the learning-rate
schedule values, the random labels, the saliency mask, the optimizer built for each setting, the records written, and
the exact errors on bad input (with nothing written). Fast: pure helpers first, then one tiny pretrained model
(ResNet-18 width 4 on 100 generated images) shared by the runs."""

# ruff: noqa: F811 - the imported fixtures are parameters of the tests below
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_empirical_trainer import tiny, write_fixture
from torch import nn

import empirical.unlearn as U
from empirical.augment import DeviceData
from empirical.data import load_split, save_split
from empirical.methods import METHODS
from empirical.unlearn import (
    CommonSettings,
    UnlearnConfig,
    UnlearnRun,
    field_types_of,
    forget_id,
    load_source,
    parse_overrides,
    random_labels,
    resolve_scoped,
    saliency_mask,
    scoped_overrides,
    unlearn,
    unlearn_identity,
)
from simulations.errors import ConfigError

CPU = torch.device("cpu")
SHARED = ", ".join(f.name for f in dataclasses.fields(CommonSettings))


# ----------------------------------------------------------------------------------- configuration (no model)
@pytest.mark.parametrize("name, value, shown", [("rho", -0.5, "-0.5"), ("lamb", -1.0, "-1.0"),
                                                ("momentum", -0.1, "-0.1"), ("weight_decay", -1e-4, "-0.0001"),
                                                ("epochs", -1, "-1"), ("steps_per_epoch", -2, "-2")])
def test_shared_settings_refuse_negative_values_by_name(name, value, shown):
    with pytest.raises(ConfigError) as err:
        CommonSettings(**{name: value})
    assert str(err.value) == f"{name}={shown}: must be >= 0"
    CommonSettings(**{name: 0 if isinstance(value, int) else 0.0})  # 0 is allowed


def test_shared_settings_refuse_a_batch_size_below_one_and_unknown_choices():
    with pytest.raises(ConfigError) as err:
        CommonSettings(batch_size=0)
    assert str(err.value) == "batch_size=0: must be a positive integer"
    with pytest.raises(ConfigError) as err:
        CommonSettings(optimizer="adam")
    assert str(err.value) == "optimizer='adam': choose one of sgd, sam, asam"


def test_a_setting_the_method_lacks_is_refused_with_the_exact_message():
    with pytest.raises(ConfigError) as err:
        UnlearnConfig(method="ft", alpha=0.5)
    assert str(err.value) == f"alpha: not a setting of ft (its own settings: none; shared settings: {SHARED})"
    with pytest.raises(ConfigError) as err:
        UnlearnConfig(method="salun", foo=1, alpha=2)
    assert str(err.value) == ("foo, alpha: not a setting of salun (its own settings: mask_fraction, mask_mode, "
                              f"mask_rule, rl_exclude_true; shared settings: {SHARED})")
    with pytest.raises(ConfigError) as err:
        UnlearnConfig(method="neggrad", l1_weight=0.1)
    assert str(err.value).startswith("l1_weight: not a setting of neggrad (its own settings: alpha; shared")
    with pytest.raises(ConfigError) as err:  # the method's own settings are checked, under its name
        UnlearnConfig(method="salun", mask_fraction=0.0)
    assert str(err.value) == "salun.mask_fraction=0.0: must lie in (0, 1]"


def test_config_holds_method_shared_and_own_settings_and_is_frozen():
    assert UnlearnConfig().method == "neggrad"
    cfg = UnlearnConfig(method="neggrad", alpha=0.9, lr=0.3, seed=4)
    assert (cfg.method, cfg.alpha, cfg.lr, cfg.seed, cfg.common.lr, cfg.settings.alpha) == ("neggrad", 0.9, 0.3, 4,
                                                                                            0.3, 0.9)
    with pytest.raises(dataclasses.FrozenInstanceError) as err:
        cfg.lr = 1.0
    assert str(err.value) == "cannot assign to field 'lr'"
    with pytest.raises(AttributeError) as err:
        cfg.nothing  # noqa: B018
    assert err.value.args == ("nothing",)
    assert not hasattr(cfg, "l1_weight")
    assert cfg == UnlearnConfig(method="neggrad", alpha=0.9, lr=0.3, seed=4)
    assert cfg != cfg.replace(alpha=0.8) and cfg != cfg.replace(lr=0.2) and (cfg == "neggrad") is False
    d = cfg.to_dict()
    assert list(d)[:3] == ["method", "optimizer", "base"] and d["method"] == "neggrad" and d["alpha"] == 0.9
    assert d == {"method": "neggrad", **dataclasses.asdict(cfg.common), "alpha": 0.9}
    assert repr(cfg) == "UnlearnConfig(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"
    assert repr(cfg).startswith("UnlearnConfig(method='neggrad', optimizer='sgd', base='sgd', rho=0.1, lamb=1.0, "
                                "lr=0.3, epochs=0, ")


def test_placeholders_resolve_to_the_method_defaults_and_only_placeholders_do():
    rl = UnlearnConfig(method="rl")
    assert (rl.learning_rate, rl.num_epochs) == (0.1, 10)
    assert rl.resolved() == {**rl.to_dict(), "lr": 0.1, "epochs": 10}
    assert UnlearnConfig(method="rl", lr=0.0).learning_rate == 0.0  # 0 is a rate, not the placeholder
    assert UnlearnConfig(method="rl", lr=0.5).learning_rate == 0.5
    assert UnlearnConfig(method="rl", epochs=1).num_epochs == 1
    assert UnlearnConfig(method="ga", epochs=2).resolved()["epochs"] == 2
    assert [UnlearnConfig(optimizer=o).sam for o in ("sgd", "sam", "asam")] == [False, True, True]


def test_field_types_and_overrides_are_typed():
    assert field_types_of("neggrad") == {"method": str, **U.COMMON_FIELDS, "alpha": float}
    assert field_types_of("ft") == {"method": str, **U.COMMON_FIELDS}
    assert parse_overrides(["alpha=0.5", "lr=0.25", "mask_mode=authors"]) == {"alpha": 0.5, "lr": 0.25,
                                                                              "mask_mode": "authors"}


def test_scoped_overrides_split_at_the_first_equals_sign_and_the_first_dot():
    parsed = scoped_overrides([" neggrad.alpha = 0.9 ", "lr=0.25", "data_root=/a=b", "salun.mask_rule=smallest"])
    assert parsed == {"neggrad.alpha": 0.9, "lr": 0.25, "data_root": "/a=b", "salun.mask_rule": "smallest"}
    assert scoped_overrides(None) == {}
    with pytest.raises(ConfigError) as err:
        scoped_overrides(["alpha"])
    assert str(err.value) == "--unlearn-set 'alpha': expected key=value or method.key=value"
    with pytest.raises(ConfigError, match="method='fisher'"):
        scoped_overrides(["fisher.alpha=1"])
    with pytest.raises(ConfigError, match="^unknown option 'alpha'"):  # rl has no alpha: typed per method
        scoped_overrides(["rl.alpha=0.5"])
    with pytest.raises(ConfigError, match="^unknown option 'alpha.x'"):  # the method is before the first dot
        scoped_overrides(["neggrad.alpha.x=1"])


def test_resolve_scoped_gives_each_method_its_settings_scoped_ones_winning():
    per = resolve_scoped({"neggrad.lr": 0.5, "lr": 0.1, "alpha": 0.9, "rl_exclude_true": True,
                          "sharp_minmax.alpha": 0.7}, ["neggrad", "sharp_minmax", "rl"])
    assert per == {"neggrad": {"lr": 0.5, "alpha": 0.9}, "sharp_minmax": {"lr": 0.1, "alpha": 0.7},
                   "rl": {"lr": 0.1, "rl_exclude_true": True}}
    cases = [({"salun.mask_fraction": 0.1}, ["rl", "neggrad"],
              "--unlearn-set salun.mask_fraction: salun is not among the chosen methods (rl, neggrad)"),
             ({"neggrad.l1_weight": 0.1}, ["neggrad"],
              "--unlearn-set neggrad.l1_weight: l1_weight is not a setting of neggrad (its own settings: alpha)"),
             ({"ft.alpha": 0.1}, ["ft"], "--unlearn-set ft.alpha: alpha is not a setting of ft (its own settings: "
                                         "none)"),
             ({"salun.alpha": 0.1}, ["salun"], "--unlearn-set salun.alpha: alpha is not a setting of salun (its own "
                                               "settings: mask_fraction, mask_rule, mask_mode, rl_exclude_true)"),
             ({"neggrad.a.b": 1}, ["neggrad"],
              "--unlearn-set neggrad.a.b: a.b is not a setting of neggrad (its own settings: alpha)"),
             ({"mask_fraction": 0.1}, ["rl", "neggrad"],
              "--unlearn-set mask_fraction: none of the chosen methods (rl, neggrad) has this setting")]
    for overrides, methods, message in cases:
        with pytest.raises(ConfigError) as err:
            resolve_scoped(overrides, methods)
        assert str(err.value) == message
    # not strict (the protocol's shared overrides): what no chosen method has is skipped
    assert resolve_scoped({"salun.mask_fraction": 0.1, "salun.a.b": 1, "mask_fraction": 0.2, "lr": 0.1}, ["rl"],
                          strict=False) == {"rl": {"lr": 0.1}}


def test_forget_id_is_the_sha256_of_the_sorted_int64_indices():
    expected = hashlib.sha256(np.array([1, 3, 5], dtype=np.int64).tobytes()).hexdigest()[:16]
    assert forget_id(np.array([5, 1, 3], dtype=np.int32)) == expected and len(expected) == 16
    assert forget_id([3, 5, 1]) == expected


# ------------------------------------------------------------------------------------------ random labels
def test_random_labels_draw_exactly_from_the_generator_on_F_only():
    labels = torch.arange(40) % 4
    idx = torch.arange(1, 40, 2)
    out = random_labels(labels, idx, 4, torch.Generator().manual_seed(5))  # default: uniform over all classes
    draw = torch.randint(0, 4, (len(idx),), generator=torch.Generator().manual_seed(5))
    expected = labels.clone()
    expected[idx] = draw
    assert torch.equal(out, expected)
    out = random_labels(labels, idx, 4, torch.Generator().manual_seed(6), exclude_true=True)
    shift = torch.randint(1, 4, (len(idx),), generator=torch.Generator().manual_seed(6))
    expected = labels.clone()
    expected[idx] = (labels[idx] + shift) % 4
    assert torch.equal(out, expected)
    # exclude_true: every other class, never the true one (3 classes, 300 draws: both others appear for each label)
    many = torch.arange(300) % 3
    new = random_labels(many, torch.arange(300), 3, torch.Generator().manual_seed(0), exclude_true=True)
    assert (new != many).all()
    for c in range(3):
        assert set(new[many == c].tolist()) == {0, 1, 2} - {c}
    uniform = random_labels(many, torch.arange(300), 3, torch.Generator().manual_seed(0))
    for c in range(3):  # uniform: the true label may come back
        assert set(uniform[many == c].tolist()) == {0, 1, 2}


# ----------------------------------------------------------------------------------------- saliency mask
C = 4


class Net(nn.Module):
    """8×8 average pooling, a linear layer, BatchNorm (eval mode differs from train mode), a linear head, and one
    parameter no forward pass uses (its gradient is 0)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(48, 5), nn.BatchNorm1d(5), nn.Tanh(),
                                  nn.Linear(5, C))
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.body(x)


def _data(n: int, seed: int = 0) -> DeviceData:
    rng = np.random.default_rng(seed)
    return DeviceData(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, C, n))


def _trained_net() -> Net:
    torch.manual_seed(0)
    net = Net()
    net.train()
    with torch.no_grad():  # BatchNorm running statistics away from their initial values
        net(torch.rand(16, 3, 32, 32) * 2)
    return net


def _summed_grad(net: Net, data: DeviceData, idx: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """By hand: Σ over the consecutive batches of F (no shuffle, no augmentation) of ∇θ[−CE(batch)], eval mode."""
    net.eval()
    params = list(net.parameters())
    total = [torch.zeros_like(p) for p in params]
    for x, y in data.batches(idx, batch_size):
        loss = -F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        total = [t + (torch.zeros_like(p) if g is None else g) for t, p, g in zip(total, params, grads)]
    net.train()
    return total


def test_saliency_mask_is_the_top_fraction_of_the_summed_forget_gradient(monkeypatch):
    net, data = _trained_net(), _data(10)
    idx = torch.tensor([1, 2, 4, 6, 7, 9])
    seen = []
    real = U.autocast
    monkeypatch.setattr(U, "autocast", lambda device, enabled: seen.append((device, enabled)) or real(device, enabled))
    masks, grads = saliency_mask(net, data, idx, 0.3, "largest", batch_size=4, device=CPU, bf16=False)
    assert seen == [(CPU, False), (CPU, False)]  # two batches of F, autocast as asked
    assert net.training  # left as it was
    ref = _summed_grad(net, data, idx, 4)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)  # −CE, summed over [1 2 4 6] and [7 9], eval mode
    unused = [i for i, p in enumerate(net.parameters()) if p is net.unused]
    assert len(unused) == 1 and torch.equal(grads[unused[0]], torch.zeros(3))  # the unused parameter
    flat = torch.cat([g.abs().reshape(-1) for g in ref])
    k = round(0.3 * flat.numel())
    top = torch.zeros(flat.numel(), dtype=torch.bool)
    top[torch.argsort(flat, descending=True)[:k]] = True
    got = torch.cat([m.reshape(-1) for m in masks])
    assert got.dtype == torch.bool and torch.equal(got, top)
    assert [m.shape for m in masks] == [p.shape for p in net.parameters()]
    # "smallest": the bottom fraction; the model in eval mode stays in eval mode
    net.eval()
    small, _ = saliency_mask(net, data, idx, 0.3, "smallest", batch_size=4, device=CPU, bf16=False)
    assert not net.training
    bottom = torch.zeros(flat.numel(), dtype=torch.bool)
    bottom[torch.argsort(flat)[:k]] = True
    s = torch.cat([m.reshape(-1) for m in small])
    assert int(s.sum()) == k and flat[s].max() <= flat[~s].min()


def test_saliency_mask_defaults_and_a_fraction_below_one_entry(monkeypatch):
    """Defaults: rule "largest", batch 256 (300 forget samples: batches of 256 and 44), the model's device, bf16 on
    (autocast asked for it; it acts on CUDA only). A fraction below one entry still selects one."""
    net, data = _trained_net(), _data(300, seed=1)
    idx = torch.arange(300)
    seen = []
    real = U.autocast
    monkeypatch.setattr(U, "autocast", lambda device, enabled: seen.append((device, enabled)) or real(device, enabled))
    masks, grads = saliency_mask(net, data, idx, 1e-9)
    assert seen == [(CPU, True), (CPU, True)]
    ref = _summed_grad(net, data, idx, 256)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    flat = torch.cat([g.abs().reshape(-1) for g in ref])
    got = torch.cat([m.reshape(-1) for m in masks])
    assert int(got.sum()) == 1 and bool(got[int(flat.argmax())])


# ---------------------------------------------------------------------------- the run object (no source run)
def _run(method="ft", model=None, n_retain=8, n_forget=6, **settings) -> UnlearnRun:
    data = _data(n_retain + n_forget, seed=2)
    prepared = SimpleNamespace(data=data, retain_idx=torch.arange(n_retain),
                               forget_idx=torch.arange(n_retain, n_retain + n_forget), num_classes=C)
    base = dict(device="cpu", bf16=False, channels_last=False, batch_size=4, lr=0.5)
    cfg = UnlearnConfig(method=method, **{**base, **settings})
    return UnlearnRun(cfg, model if model is not None else _trained_net(), prepared, CPU,
                      torch.Generator().manual_seed(cfg.seed))


def test_run_holds_its_sets_and_starts_empty():
    run = _run(batch_size=4)
    assert torch.equal(run.union, torch.arange(14)) and torch.equal(run.retain, torch.arange(8))
    assert run.forget_batch == 4 and _run(batch_size=8).forget_batch == 6  # min(batch_size, |F|)
    assert run.masks is None and run.optimizers == [] and run.teacher is None and run.total == 1
    assert run.s is run.cfg.settings and all(a is b for a, b in zip(run.params, run.model.parameters()))


def test_forget_stream_is_endless_shuffled_augmented_with_seed_plus_one():
    run = _run(batch_size=4, seed=7)  # |F| = 6: batches of 4 and 2, then the next epoch
    gen = torch.Generator().manual_seed(8)
    expected = [b for _ in range(2) for b in run.prepared.data.batches(run.forget, 4, shuffle=True, augment=True,
                                                                         generator=gen)]
    for x, y in expected[:3]:
        xf, yf = run.next_forget()
        assert torch.equal(xf, x) and torch.equal(yf, y)
    plain = next(run.prepared.data.batches(run.forget, 4))
    assert not torch.equal(expected[0][0], plain[0])  # shuffled or augmented: not the plain first batch


def test_run_draws_random_labels_of_F_with_its_generator_and_setting():
    run = _run("rl", rl_exclude_true=True, seed=3)
    labels = run.random_labels()
    true = run.prepared.data.labels
    expected = random_labels(true, run.forget, C, torch.Generator().manual_seed(3), exclude_true=True)
    assert torch.equal(labels, expected) and (labels[run.forget] != true[run.forget]).all()


@pytest.mark.parametrize("bf16, optimizer, sam_bf16, enabled", [
    (True, "sgd", False, True), (True, "sam", False, False), (True, "asam", False, False), (True, "sam", True, True),
    (False, "sgd", False, False), (False, "sam", True, False)])
def test_precision_asks_bf16_for_sgd_steps_and_for_sam_only_with_sam_bf16(monkeypatch, bf16, optimizer, sam_bf16,
                                                                          enabled):
    seen = []
    real = U.autocast
    monkeypatch.setattr(U, "autocast", lambda device, on: seen.append((device, on)) or real(device, on))
    run = _run(bf16=bf16, optimizer=optimizer, sam_bf16=sam_bf16)
    with run.precision():
        pass
    assert seen == [(CPU, enabled)]


def _bn(model):
    return model.body[3]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forget_passes_put_batchnorm_in_eval_mode_only_with_forget_bn_eval(mode):
    run = _run(forget_bn=mode)
    run.model.train()
    with run.forget_bn(True):
        assert _bn(run.model).training == (mode == "train") and run.model.body[2].training
    with run.forget_bn(False):
        assert _bn(run.model).training
    assert _bn(run.model).training


def test_loss_on_is_sign_times_cross_entropy_in_the_right_batchnorm_mode():
    import copy

    run = _run(forget_bn="eval")
    x, y = next(run.prepared.data.batches(run.retain, 8))
    train_copy, eval_copy = copy.deepcopy(run.model).train(), copy.deepcopy(run.model).eval()
    with torch.no_grad():
        ce_eval = F.cross_entropy(eval_copy(x), y)
        ce_train = F.cross_entropy(train_copy(x), y)
    assert not torch.allclose(ce_eval, ce_train)
    torch.testing.assert_close(run.loss_on(x, y, forget_pass=True).detach(), ce_eval, rtol=1e-6, atol=0)
    torch.testing.assert_close(run.loss_on(x, y).detach(), ce_train, rtol=1e-6, atol=0)  # default: not a forget pass
    torch.testing.assert_close(run.loss_on(x, y, -2.0).detach(), -2 * ce_train, rtol=1e-6, atol=0)


def test_optimizer_is_sam_around_the_chosen_base_with_the_settings():
    run = _run(optimizer="sgd", rho=0.3, lr=0.2, momentum=0.7, weight_decay=0.01, lamb=0.5)
    opt = run.optimizer(0.3)
    g = opt.param_groups[0]
    assert type(opt.base_optimizer) is torch.optim.SGD
    assert (g["lr"], g["momentum"], g["weight_decay"], g["rho"], g["adaptive"], g["sign"], g["lamb"]) == \
        (0.2, 0.7, 0.01, 0.0, False, "min", 0.5)  # sgd: ρ = 0, the base optimizer bit for bit
    assert len(g["params"]) == len(run.params) and all(a is b for a, b in zip(g["params"], run.params))
    g = _run(optimizer="sam", lr=0.2, momentum=0.7).optimizer(0.3, sign="max").param_groups[0]
    assert (g["rho"], g["adaptive"], g["sign"], g["lr"], g["momentum"]) == (0.3, False, "max", 0.2, 0.7)
    assert _run(optimizer="asam").optimizer(1.0).param_groups[0]["adaptive"] is True
    opt = _run(optimizer="sam", base="adamw", lr=0.2, weight_decay=0.03).optimizer(0.3)
    g = opt.param_groups[0]
    assert type(opt.base_optimizer) is torch.optim.AdamW and (g["lr"], g["weight_decay"], g["rho"]) == (0.2, 0.03, 0.3)
    assert "momentum" not in g
    assert _run(lr=-1.0).optimizer(0.1).param_groups[0]["lr"] == 0.01  # the method's rate (ft: 0.01)
    run = _run(optimizer="sam")
    assert U._optimizer(run.cfg, run.model, 0.2).param_groups[0]["sign"] == "min"  # SAM-min unless asked


# -------------------------------------------------------------------------------- runs on a pretrained model
@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two generated datasets of the same shape (100 train, 20 test images): the source's and another."""
    return (str(write_fixture(tmp_path_factory.mktemp("cifar"), per_class=2)),
            str(write_fixture(tmp_path_factory.mktemp("other"), per_class=2, seed=1)))


@pytest.fixture(scope="module")
def source(roots, tmp_path_factory):
    """A pretrain run: 90 train images (10 validation), |F| = 20, |R| = 70."""
    from empirical.trainer import train

    out = tmp_path_factory.mktemp("pre")
    train(tiny(roots[0], width=4, epochs=1, batch_size=45, forget_size=20), out, progress=False)
    return out


def cfg(**kw) -> UnlearnConfig:
    base = dict(device="cpu", bf16=False, channels_last=False, batch_size=32, epochs=1, lr=0.02)
    return UnlearnConfig(**{**base, **kw})


class Spy:
    """Records the shuffled passes the loop and the forget stream ask for (``DeviceData.batches`` with a generator:
    evaluation and the saliency mask have none) with the batches each yielded, and every step of ``method``: its
    index, phase, the run's step count T and the learning rates of every optimizer at that step, and its loss."""

    def __init__(self, monkeypatch, method: str):
        self.passes, self.steps = [], []
        original = DeviceData.batches
        spy = self

        def batches(data, indices, batch_size, shuffle=False, augment=False, generator=None, labels=None, **kw):
            entry = None
            if generator is not None or shuffle or augment:
                entry = dict(idx=np.sort(torch.as_tensor(indices).cpu().numpy()), batch_size=batch_size,
                             shuffle=shuffle, augment=augment,
                             seed=None if generator is None else generator.initial_seed(),
                             labels=None if labels is None else labels.clone(), true=data.labels.clone(), yielded=0)
                spy.passes.append(entry)
            for item in original(data, indices, batch_size, shuffle=shuffle, augment=augment, generator=generator,
                                 labels=labels, **kw):
                if entry is not None:
                    entry["yielded"] += 1
                yield item

        monkeypatch.setattr(DeviceData, "batches", batches)
        unit = METHODS[method]
        step = unit.step

        def record(run, phase, x, y, k):
            self.steps.append(dict(step=k, kind=phase.kind, total=run.total, n=len(x),
                                   lrs=[o.param_groups[0]["lr"] for o in run.optimizers]))
            loss = step(run, phase, x, y, k)
            self.steps[-1]["loss"] = loss.detach().clone()
            return loss

        monkeypatch.setattr(unit, "step", record)

    def loop(self, seed=0):
        return [p for p in self.passes if p["seed"] == seed]


def _split(source):
    return load_split(source / "split.npz")


def test_ft_with_a_step_limit_and_cosine_schedule(source, tmp_path, monkeypatch, capsys):
    """ft, |R| = 70 at batch 16 (5 batches a pass), 2 epochs cut to 2 steps: T = 4 steps, each at
    lr · ½ (1 + cos(π s / T)); each epoch one shuffled, augmented pass over R with the true labels, read no further
    than the batch after the limit; the per-epoch loss is the mean of its steps' losses; one line per epoch."""
    spy = Spy(monkeypatch, "ft")
    began = time.perf_counter()
    rec = unlearn(cfg(method="ft", batch_size=16, epochs=2, steps_per_epoch=2, schedule="cosine", lr=0.1), source,
                  tmp_path / "ft", record_accuracy=False)
    elapsed = time.perf_counter() - began
    assert [s["step"] for s in spy.steps] == [0, 1, 2, 3] and rec["steps"] == 4
    assert all(s["total"] == 4 and s["n"] == 16 and s["kind"] == "ft" for s in spy.steps)
    for s in spy.steps:
        assert s["lrs"] == [pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * s["step"] / 4)), rel=1e-12)]
    loop = spy.loop()
    assert len(loop) == 2 == len(spy.passes)
    retain = np.sort(_split(source)["retain"])
    for p in loop:
        assert np.array_equal(p["idx"], retain) and p["batch_size"] == 16 and p["labels"] is None
        assert p["shuffle"] is True and p["augment"] is True and p["yielded"] == 3
    losses = [s["loss"] for s in spy.steps]
    assert rec["loss"] == [float(torch.stack(losses[:2]).float().mean()), float(torch.stack(losses[2:]).float().mean())]
    assert len(rec["epoch_seconds"]) == 2 and all(0 <= t <= elapsed for t in rec["epoch_seconds"])
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"ft epoch {e + 1}/2  loss {rec['loss'][e]:.4f}  {rec['epoch_seconds'][e]:.2f} s"
                     for e in range(2)]


def test_scrub_phases_count_every_pass_of_every_epoch(source, tmp_path, monkeypatch, capsys):
    """scrub, 2 epochs, max-steps in the first only: F (20 at forget batch min(32, 20) = 20: 1 step), then R
    (70 at 32: 3 steps), then R again: T = 7, the cosine schedule over those 7 steps."""
    spy = Spy(monkeypatch, "scrub")
    rec = unlearn(cfg(method="scrub", epochs=2, scrub_msteps=1, schedule="cosine", lr=0.01), source,
                  tmp_path / "scrub", progress=False, record_accuracy=False)
    assert [s["kind"] for s in spy.steps] == ["scrub_max"] + ["scrub_min"] * 6
    assert [s["step"] for s in spy.steps] == list(range(7)) and rec["steps"] == 7
    assert all(s["total"] == 7 for s in spy.steps)
    for s in spy.steps:
        assert s["lrs"] == [pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * s["step"] / 7)), rel=1e-12)]
    split = _split(source)
    loop = spy.loop()
    assert [(len(p["idx"]), p["batch_size"], p["yielded"]) for p in loop] == [(20, 20, 1), (70, 32, 3), (70, 32, 3)]
    assert np.array_equal(loop[0]["idx"], np.sort(split["forget"]))
    assert rec["accuracy"] is None and json.loads((tmp_path / "scrub" / "record.json").read_text())["accuracy"] is None
    assert capsys.readouterr().err == ""  # progress=False


def test_sharp_minmax_schedules_both_optimizers_draws_the_forget_stream_and_saves_the_mask(source, tmp_path,
                                                                                           monkeypatch):
    """Constant schedule: both optimizers at lr at every step. Each step draws one F batch from the stream (seed
    seed + 1, shuffled, augmented, true labels, batch min(32, |F|) = 20: one pass of the stream per step). The mask
    saved is the saliency mask of the source model at the settings, with its forget id, fraction, rule and mode."""
    from empirical.trainer import load_trained

    seen = []
    real = U.autocast
    monkeypatch.setattr(U, "autocast", lambda device, on: seen.append(on) or real(device, on))
    spy = Spy(monkeypatch, "sharp_minmax")
    c = cfg(method="sharp_minmax", lr=0.05, steps_per_epoch=2, mask_fraction=0.3, seed=2)
    rec = unlearn(c, source, tmp_path / "smm", progress=False, record_accuracy=False)
    assert [s["lrs"] for s in spy.steps] == [[0.05, 0.05], [0.05, 0.05]] and [s["total"] for s in spy.steps] == [2, 2]
    assert seen and all(on is False for on in seen)  # bf16=false reaches the mask's and the steps' autocast
    split = _split(source)
    stream = spy.loop(seed=3)
    assert len(stream) == 2 and len(spy.loop(seed=2)) == 1
    for p in stream:
        assert np.array_equal(p["idx"], np.sort(split["forget"])) and p["batch_size"] == 20
        assert p["shuffle"] is True and p["augment"] is True and p["labels"] is None and p["yielded"] == 1
    saved = torch.load(tmp_path / "smm" / "mask.pt", weights_only=True)
    model, _, prepared, _ = load_trained(source, CPU, channels_last=False)
    masks, _ = saliency_mask(model, prepared.data, prepared.forget_idx, 0.3, "largest", 32, CPU, False)
    assert set(saved) == {"masks", "forget_id", "fraction", "rule", "mode", "source"}
    assert all(torch.equal(a, b) for a, b in zip(saved["masks"], masks)) and len(saved["masks"]) == len(masks)
    assert (saved["forget_id"], saved["fraction"], saved["rule"], saved["mode"], saved["source"]) == (
        forget_id(split["forget"]), 0.3, "largest", "paper", str(source))
    assert rec["mask"] == str(tmp_path / "smm" / "mask.pt")


def test_random_labelling_passes_over_R_and_F_with_only_F_relabelled_each_epoch(source, tmp_path, monkeypatch):
    spy = Spy(monkeypatch, "rl")
    unlearn(cfg(method="rl", epochs=2, steps_per_epoch=1), source, tmp_path / "rl", progress=False,
            record_accuracy=False)
    split = _split(source)
    loop = spy.loop()
    assert len(loop) == 2
    forget = torch.as_tensor(split["forget"])
    rest = torch.ones(len(loop[0]["true"]), dtype=torch.bool)
    rest[forget] = False
    for p in loop:
        assert np.array_equal(p["idx"], np.sort(split["train"])) and p["batch_size"] == 32
        assert torch.equal(p["labels"][rest], p["true"][rest])
        assert not torch.equal(p["labels"][forget], p["true"][forget])
    assert not torch.equal(loop[0]["labels"], loop[1]["labels"])  # redrawn each epoch


def test_record_model_split_and_identity_of_a_run(source, tmp_path, monkeypatch):
    """batch_size = |R| is allowed (one step an epoch); the record holds exactly what the run was."""
    from empirical.trainer import accuracy, load_record
    from simulations.provenance import provenance
    from simulations.runfolder import read_identity

    asked = []
    monkeypatch.setattr(U, "provenance", lambda device: asked.append(device) or provenance(device))
    spy = Spy(monkeypatch, "ft")
    c = cfg(method="ft", batch_size=70, seed=3)
    out = tmp_path / "rec"
    rec = unlearn(c, source, out, progress=False)
    assert [p["seed"] for p in spy.passes] == [3]
    split = _split(source)
    assert json.loads((out / "record.json").read_text()) == rec
    model, train_cfg, prepared, _ = load_source(source, c, CPU)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert set(saved) == {"model", "config", "forget_id"}
    assert saved["config"] == c.resolved() and saved["forget_id"] == forget_id(split["forget"])
    model.load_state_dict(saved["model"])
    sets = {"retain": (prepared.data, prepared.retain_idx), "forget": (prepared.data, prepared.forget_idx),
            "test": (prepared.test, torch.arange(len(prepared.test))), "val": (prepared.data, prepared.val_idx)}
    after = {k: 100.0 * accuracy(model, d, i, CPU, train_cfg) for k, (d, i) in sets.items()}
    source_record = load_record(source)
    identity = unlearn_identity(c, source)
    expected = {
        "method": "ft", "config": c.resolved(), "config_hash": identity["config"], "lr": 0.02, "epochs": 1,
        "seed": 3, "source": str(source), "source_config": train_cfg.to_dict(), "forget_id": forget_id(split["forget"]),
        "forget_size": 20, "retain_size": 70, "device": "cpu", "accuracy": after, "steps": 1,
        "source_accuracy": {k: 100.0 * source_record[f"{k}_acc"] for k in ("retain", "forget", "test", "val")},
        "model": str(out / "model.pt"), "mask": None}
    assert {k: rec[k] for k in expected} == expected
    assert set(rec) == {*expected, "provenance", "epoch_seconds", "loss"}
    assert asked == ["cpu"]  # the provenance of the run's device (on CUDA: the GPU's name)
    assert set(rec["provenance"]) == set(provenance("cpu")) and rec["provenance"]["device"] == \
        provenance("cpu")["device"]
    assert read_identity(out) == {"kind": "unlearn", "identity": identity}
    written = load_split(out / "split.npz")
    assert written["description"] == split["description"] + " [the split of this unlearning run]"
    assert set(written) == set(split)
    assert all(np.array_equal(written[k], split[k]) for k in ("train", "val", "forget", "retain"))


def test_identity_hashes_the_config_leaving_out_later_fields_at_their_default(source, tmp_path):
    from simulations.provenance import empirical_numerics_version
    from simulations.runfolder import read_identity

    def by_hand(c, drop):
        items = {k: v for k, v in c.to_dict().items() if k not in drop}
        return hashlib.sha256(repr(sorted(items.items())).encode()).hexdigest()[:16]

    plain, limited = cfg(method="neggrad"), cfg(method="neggrad", steps_per_epoch=3)
    base = {"source": str(source.resolve()), "source_identity": read_identity(source)["identity"],
            "numerics": empirical_numerics_version()}
    assert unlearn_identity(plain, source) == {"config": by_hand(plain, {"steps_per_epoch"}), **base}
    assert unlearn_identity(limited, source) == {"config": by_hand(limited, set()), **base}
    assert len(by_hand(plain, set())) == 16
    # another forget set over the same train/val split (split_file): its indices' digest joins the identity
    split = _split(source)
    retain = np.sort(split["retain"])
    other = tmp_path / "other.npz"
    new_forget = retain[:20]
    save_split(other, description="another forget set",
               **{k: v for k, v in split.items() if k in ("train", "val", "seed", "n_train", "dataset")},
               forget=new_forget, retain=np.setdiff1d(split["train"], new_forget))
    c = cfg(method="ft", split_file=str(other), steps_per_epoch=1)
    ident = unlearn_identity(c, source)
    assert ident == {"config": by_hand(c, set()), **base, "split": load_split(other)["indices_sha256"][:16]}
    rec = unlearn(c, source, tmp_path / "other", progress=False, record_accuracy=False)
    assert rec["forget_id"] == forget_id(new_forget) and rec["forget_size"] == 20 and rec["retain_size"] == 70
    assert load_split(tmp_path / "other" / "split.npz")["description"] == \
        "another forget set [the split of this unlearning run]"


def test_load_source_lays_the_model_out_as_asked(source):
    model, *_ = load_source(source, cfg(channels_last=True), CPU)
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    model, *_ = load_source(source, cfg(channels_last=False), CPU)
    assert next(p for p in model.parameters() if p.dim() == 4).is_contiguous()


def test_bad_input_raises_the_exact_error_and_writes_nothing(source, roots, tmp_path, monkeypatch):
    from simulations.runfolder import read_identity

    out = tmp_path / "big"
    with pytest.raises(ConfigError) as err:
        unlearn(cfg(method="ft", batch_size=71), source, out, progress=False)
    assert str(err.value) == "batch_size=71 exceeds the 70 retain images; lower batch_size" and not out.exists()
    # data other than the source model's (same layout, other images): refused before anything is written
    out = tmp_path / "data"
    other = cfg(method="ft", data_root=roots[1])
    digest = load_source(source, other, CPU)[2].data_digest
    made_on = read_identity(source)["identity"]["data"]
    assert digest != made_on
    with pytest.raises(ConfigError) as err:
        unlearn(other, source, out, progress=False)
    assert str(err.value) == (f"the data read for this run (digest {digest}) are not the data the model in {source} "
                              f"was trained on (digest {made_on}); point data_root at that run's data")
    assert not out.exists()
    # out = source: refused as such
    with pytest.raises(ConfigError, match="is the source folder of this run"):
        unlearn(cfg(method="ft"), source, source, progress=False)
    # a loss that is not finite: refused, no model, split or record (T = 1 for a one-step run)
    totals = []
    monkeypatch.setattr(METHODS["ft"], "step", lambda run, phase, x, y, k: totals.append(run.total) or
                        torch.tensor(float("nan")))
    out = tmp_path / "nan"
    with pytest.raises(ConfigError) as err:
        unlearn(cfg(method="ft", steps_per_epoch=1), source, out, progress=False)
    assert str(err.value) == ("ft: the loss became NaN/inf in epoch 0; lower lr (no model.pt, split.npz or "
                              "record.json was written)")
    assert totals == [1] and not any((out / n).exists() for n in ("model.pt", "split.npz", "record.json"))


def test_a_rerun_drops_stale_metrics_and_force_replaces_another_run(source, tmp_path):
    out = tmp_path / "run"
    salun = cfg(method="salun", steps_per_epoch=1, mask_fraction=0.5)
    unlearn(salun, source, out, progress=False, record_accuracy=False)
    (out / "metrics.json").write_text("{}")
    unlearn(salun, source, out, progress=False, record_accuracy=False)  # the same run again: metrics are stale
    assert not (out / "metrics.json").exists() and (out / "mask.pt").exists()
    ft = cfg(method="ft", steps_per_epoch=1)
    with pytest.raises(ConfigError) as err:
        unlearn(ft, source, out, progress=False, record_accuracy=False)
    assert str(err.value).endswith(": add --force to replace it (its record, model and metrics are removed), or "
                                   "choose a new --out")
    assert re.search(r"holds another run \(unlearn, other settings: ", str(err.value))
    rec = unlearn(ft, source, out, progress=False, record_accuracy=False, force=True)
    assert rec["method"] == "ft" and not (out / "mask.pt").exists() and rec["mask"] is None


# --------------------------------------------------- devices, checked on a CPU-only machine (mutation run of 2026-12-02)
# On a GPU the labels live on CUDA while a generator may be a CPU one (or the reverse). Two CPU stand-ins make the
# device plumbing observable here: torch's default device set to "meta" (a tensor created without an explicit device
# lands there, and its values cannot be read back) and labels on "meta" (a CPU tensor cannot be added to them).
@pytest.fixture
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device("cpu")


@pytest.mark.parametrize("exclude_true", [False, True])
def test_random_labels_draw_on_the_generator_device_whatever_the_default_device(meta_default, exclude_true):
    labels, idx = torch.arange(12, device="cpu") % 4, torch.tensor([1, 5, 9], device="cpu")
    out = random_labels(labels, idx, 4, torch.Generator().manual_seed(3), exclude_true=exclude_true)
    lo = 1 if exclude_true else 0
    draw = torch.randint(lo, 4, (3,), generator=torch.Generator().manual_seed(3), device="cpu")
    expected = labels.clone()
    expected[idx] = (labels[idx] + draw) % 4 if exclude_true else draw
    assert out.device == CPU and torch.equal(out, expected)


@pytest.mark.parametrize("exclude_true", [False, True])
def test_random_labels_write_on_the_labels_device(exclude_true):
    labels = (torch.arange(12) % 4).to("meta")
    out = random_labels(labels, torch.tensor([1, 5, 9]), 4, torch.Generator().manual_seed(3), exclude_true=exclude_true)
    assert out.device.type == "meta" and out.shape == (12,) and out.dtype == labels.dtype


def test_saliency_mask_is_built_on_the_gradients_device(monkeypatch):
    net, data = _trained_net(), _data(10)
    idx = torch.tensor([1, 2, 4, 6, 7, 9])
    ref, _ = saliency_mask(net, data, idx, 0.3, "largest", batch_size=4, device=CPU, bf16=False)
    torch.set_default_device("meta")
    try:
        masks, _ = saliency_mask(net, data, idx, 0.3, "largest", batch_size=4, device=CPU, bf16=False)
    finally:
        torch.set_default_device("cpu")
    assert all(m.device == CPU for m in masks)
    assert all(torch.equal(m, r) for m, r in zip(masks, ref))


def test_a_sam_step_of_a_run_freezes_batchnorm_statistics_in_its_perturbed_pass():
    """``UnlearnRun.step_on`` hands its model to the SAM step: the BatchNorm running statistics then see the batch
    once (the pass at W), exactly as one train-mode forward of the same batch moves them; without the model they
    would absorb the perturbed pass too."""
    run = _run("ft", optimizer="sam", rho=0.5)
    x, y = run.prepared.data.images[:4].float() / 255, run.prepared.data.labels[:4]
    by_hand = _trained_net()  # the same weights and statistics as the run's model
    by_hand.train()
    with torch.no_grad():
        by_hand(x)
    bn, bn_ref = run.model.body[3], by_hand.body[3]
    opt = run.optimizer(0.5)
    run.model.train()
    run.step_on(opt, lambda: F.cross_entropy(run.model(x), y))
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=1e-7)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=1e-7)
    assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 2  # _trained_net made the first


def test_identity_of_a_split_file_without_its_checksum_is_empty(source, tmp_path):
    """A split file written before splits carried ``indices_sha256`` still names the run: its part of the identity
    is the empty string (not "None")."""
    split = _split(source)
    legacy = tmp_path / "legacy.npz"
    np.savez(legacy, **{k: v for k, v in split.items() if k != "indices_sha256"})
    assert "indices_sha256" not in load_split(legacy)
    c = cfg(method="ft", split_file=str(legacy))
    assert unlearn_identity(c, source)["split"] == ""
