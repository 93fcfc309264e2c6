"""Exact behaviour of ``simulations/engine.py`` that mutation testing needs pinned.

Per function: ``group_key`` (which fields are free per backend), ``config_key`` (the sha256 → 63-bit rule),
``sam_radius`` and ``network_output_scale`` (every branch, exact values), ``human_bytes`` (every unit boundary),
``memory_refusal`` (the full message per backend), ``plan_chunks`` (refusal, chunk size at the boundary, the
(d, seed) order), ``check_device`` (both branches), ``simulate`` (input order, ``max_chunk``, defaults),
``CoefficientTracker`` (accumulation, the label-switch split, NaN once invalid, the gram ``follow`` path),
``GroupRun.__init__`` (per-configuration parameters, labels, forget split, schedule, tracker layout), ``param``,
``sampler`` (weights per step and epoch, full-batch boundary, the size check message), ``step`` (count, log,
divergence bookkeeping, mix default), ``_record``/``_own_class_readouts`` (each read-out recomputed from its
definition), ``_record_final``, ``evaluate``/``_test_error`` (each metric recomputed, the divergence masking),
``restart_from_retrain_init`` and ``_results``.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch
from _helpers import tiny

from simulations.backends import bytes_per_config
from simulations.config import FIELD_NAMES, ConfigError
from simulations.data import (
    STREAM_BATCH,
    STREAM_FORGET,
    data_key,
    explicit_data,
    hash_uniform,
    standard_data,
)
from simulations.data import test_draws as draw_test_set
from simulations.engine import (
    PER_CONFIG_FIELDS,
    CoefficientTracker,
    GroupRun,
    check_device,
    config_key,
    group_key,
    human_bytes,
    memory_refusal,
    network_output_scale,
    plan_chunks,
    sam_radius,
    simulate,
)
from simulations.model import network_output

F64 = torch.float64


# ============================================================================ pure helpers
def test_group_key_frees_the_per_config_fields_and_d_only_for_gram():
    assert PER_CONFIG_FIELDS == ("signal_strength", "sigma_p", "sigma_0", "label_flip", "lr", "rho", "sam_lambda",
                                 "sam_sign", "alpha", "unlearn_lr", "seed")
    for backend in ("gram", "weights"):
        cfg = tiny(backend=backend)
        free = set(PER_CONFIG_FIELDS) | ({"d"} if backend == "gram" else set())
        assert group_key(cfg) == tuple(getattr(cfg, k) for k in FIELD_NAMES if k not in free)
        other = cfg.replace(signal_strength=2.5, sigma_p=0.3, sigma_0=0.2, label_flip=0.2, lr=0.1, rho=0.2,
                            sam_lambda=0.5, sam_sign="max", alpha=0.5, unlearn_lr=0.3, seed=7)
        assert group_key(other) == group_key(cfg)
        assert group_key(cfg.replace(m=4)) != group_key(cfg)
    gram = tiny(backend="gram")
    assert group_key(gram.replace(d=31)) == group_key(gram)
    weights = tiny(backend="weights")
    assert group_key(weights.replace(d=31)) != group_key(weights)
    assert len(group_key(weights)) == len(FIELD_NAMES) - len(PER_CONFIG_FIELDS)
    assert len(group_key(gram)) == len(FIELD_NAMES) - len(PER_CONFIG_FIELDS) - 1


def test_config_key_is_the_first_8_sha256_bytes_little_endian_halved():
    for cfg in (tiny(), tiny(seed=5, d=31)):
        digest = hashlib.sha256(repr(data_key(cfg)).encode()).digest()
        expected = int.from_bytes(digest[:8], "little") >> 1
        assert config_key(cfg) == expected
        assert 0 <= config_key(cfg) < 2**63
    assert config_key(tiny()) != config_key(tiny(seed=1))
    assert config_key(tiny(lr=0.1)) == config_key(tiny(lr=0.3))  # not in the data key


def test_sam_radius_exact_values_per_rule_and_batch():
    cfg = tiny(optimizer="sam", rho=0.3, n=10, d=36, m=3, P=2, sigma_p=0.8)
    assert sam_radius(cfg) == 0.3
    chen = cfg.replace(rho_rule="chen")
    assert sam_radius(chen) == pytest.approx(0.3 * 3 * math.sqrt(10) / (2 * 0.8 * 6), rel=1e-14)
    sgd = chen.replace(batch_size=4)  # not full batch: B = batch_size
    assert sam_radius(sgd) == pytest.approx(0.3 * 3 * 2 / (2 * 0.8 * 6), rel=1e-14)
    covering = chen.replace(batch_size=10)  # batch_size = n counts as full batch: B = n
    assert sam_radius(covering) == pytest.approx(0.3 * 3 * math.sqrt(10) / (2 * 0.8 * 6), rel=1e-14)
    three = chen.replace(P=3, sigma_p=0.5)
    assert sam_radius(three) == pytest.approx(0.3 * 3 * math.sqrt(10) / (3 * 0.5 * 6), rel=1e-14)


def test_network_output_scale_all_four_combinations():
    cfg = tiny(m=4, P=3)
    assert network_output_scale(cfg) is None
    assert network_output_scale(cfg.replace(output_scale="one")) == 1.0
    assert network_output_scale(cfg.replace(patch_aggregation="mean")) == pytest.approx(1 / 12, rel=1e-15)
    assert network_output_scale(cfg.replace(patch_aggregation="mean", output_scale="one")) == pytest.approx(1 / 3,
                                                                                                          rel=1e-15)


def test_human_bytes_units_and_boundaries():
    assert human_bytes(2**30) == "1 GiB"
    assert human_bytes(1.5 * 2**30) == "1.5 GiB"
    assert human_bytes(2**31) == "2 GiB"
    assert human_bytes(2**30 - 1) == "1.02e+03 MiB"
    assert human_bytes(2**20) == "1 MiB"
    assert human_bytes(3 * 2**20) == "3 MiB"
    assert human_bytes(2**20 - 1) == "1.02e+03 KiB"
    assert human_bytes(2**10) == "1 KiB"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(0.4) == "0 B"
    assert human_bytes(12.6) == "13 B"


def test_memory_refusal_full_messages():
    gram = tiny(backend="gram", n=10, d=30, m=3, n_test=200)
    assert memory_refusal(gram, 3 * 2**30, 2**30) == (
        "one configuration (backend=gram, n=10, d=30, m=3, n_test=200) needs about 3 GiB but the memory budget is "
        "1 GiB: lower n_test or n, or raise --max-memory-gb")
    weights = gram.replace(backend="weights", d=31)
    assert memory_refusal(weights, 2**20, 2**10) == (
        "one configuration (backend=weights, n=10, d=31, m=3, n_test=200) needs about 1 MiB but the memory budget "
        "is 1 KiB: use backend=gram, or lower n_test, n or d, or raise --max-memory-gb")


def test_plan_chunks_refusal_boundary_order_and_groups():
    base = tiny(backend="gram")
    need = bytes_per_config(base, "gram")
    configs = [base.replace(d=40, seed=1), base.replace(d=30, seed=2), base.replace(d=30, seed=0),
               tiny(backend="weights"), base.replace(d=40, seed=0)]
    gram_only = [configs[i] for i in (0, 1, 2, 4)]
    # budget exactly one configuration: one per chunk (need == budget is accepted), sorted by (d, seed)
    assert plan_chunks(gram_only, need) == [[2], [1], [3], [0]]
    assert plan_chunks(gram_only, 2 * need - 1) == [[2], [1], [3], [0]]
    # two per chunk; the weights group comes after (insertion order of the groups), alone in its chunk
    assert bytes_per_config(configs[3], "weights") < 2 * need
    assert plan_chunks(configs, 2 * need) == [[2, 1], [4, 0], [3]]
    assert plan_chunks(configs, 4 * need) == [[2, 1, 4, 0], [3]]
    # refusal: the message of memory_refusal, raised for the first group that does not fit
    with pytest.raises(ConfigError, match=re.escape(memory_refusal(base, need, need - 1)) + "$"):
        plan_chunks([base], need - 1)


def test_simulate_refuses_over_the_default_2_gib_budget():
    big = tiny(backend="weights", d=100_000, n_test=2048)
    need = bytes_per_config(big, "weights")
    assert need > 2 * 2**30
    with pytest.raises(ConfigError, match=re.escape(memory_refusal(big, need, 2 * 2**30)) + "$"):
        simulate([big])


def test_check_device_both_branches(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("cpu") is None
    with pytest.raises(ConfigError, match=re.escape("--device cuda: no CUDA GPU is visible here; use --device cpu")
                       + "$"):
        check_device("cuda")
    with pytest.raises(ConfigError, match=re.escape("--device cuda:1: no CUDA GPU is visible here; use --device cpu")
                       + "$"):
        check_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("cuda") is None
    assert check_device("cpu") is None


# ============================================================================ CoefficientTracker
def _t(values):
    return torch.tensor(values, dtype=F64)


def _tracker():
    # C = 1, m = 1, two noise vectors of samples 0 and 1
    return CoefficientTracker((1, 2, 1, 3), torch.tensor([0, 1]), F64, "cpu")


def test_coefficient_tracker_split_on_label_switch_weights_path():
    tr = _tracker()
    assert tr.valid is True and tr._state is None and tr._labels is None
    assert torch.equal(tr.total, torch.zeros(1, 2, 1, 3, dtype=F64))
    assert torch.equal(tr.positive, torch.zeros(1, 2, 1, 2, dtype=F64))
    assert torch.equal(tr._anchor, torch.zeros(1, 2, 1, 2, dtype=F64))
    assert tr.total.dtype == F64 and tr.positive.dtype == F64
    L1 = _t([[1.0, -1.0]])
    L2 = _t([[1.0, 1.0]])
    # _same: 1 where noise k's sample has label j (j = +1 for index 0, -1 for index 1)
    assert torch.equal(tr._same(L1), _t([[[[1.0, 0.0]], [[0.0, 1.0]]]]))
    assert torch.equal(tr._same(L2), _t([[[[1.0, 1.0]], [[0.0, 0.0]]]]))
    s1 = _t([[[[0.5, 2.0, 3.0]], [[-0.25, 5.0, 7.0]]]])
    s2 = _t([[[[1.5, 11.0, 13.0]], [[0.75, 17.0, 19.0]]]])
    s3 = _t([[[[0.25, 100.0, 200.0]], [[0.5, 300.0, 400.0]]]])
    tr.add(s1, L1)
    tr.add(s2, L2.clone())   # labels change: s1's noise increments are split by L1
    tr.add(s3, L2.clone())   # equal labels (another tensor): no new split, s2 + s3 by L2
    assert torch.equal(tr.current(), s1 + s2 + s3)
    assert torch.equal(tr.current(), tr.total)
    signal_sq, noise_sq = _t([4.0]), _t([[2.0, 3.0]])
    kappa, zeta_bar, zeta = tr.coefficients(signal_sq, noise_sq)
    total = s1 + s2 + s3
    # kappa = j ||mu||^2 c_{j,r,0}
    assert torch.equal(kappa, _t([[[4.0 * 2.25], [-4.0 * 1.0]]]))
    pos = s1[..., 1:] * tr._same(L1) + (s2 + s3)[..., 1:] * tr._same(L2)
    assert torch.equal(pos, _t([[[[2.0 + 111.0, 0.0 + 213.0]], [[0.0, 7.0]]]]))
    scale = _t([[[[2.0, 3.0]]]])
    assert torch.equal(zeta_bar, pos * scale)
    assert torch.equal(zeta, total[..., 1:] * scale - pos * scale)
    # committed part and anchor after the one switch
    assert torch.equal(tr.positive, s1[..., 1:] * tr._same(L1))
    assert torch.equal(tr._anchor, s1[..., 1:])
    # the anchor is a copy: later accumulation does not move it
    tr.add(s3, L2)
    assert torch.equal(tr._anchor, s1[..., 1:])
    # switching back to L1 commits the L2 increments
    tr.add(s1, L1)
    assert torch.equal(tr.positive, s1[..., 1:] * tr._same(L1) + (s2 + 2 * s3)[..., 1:] * tr._same(L2))
    assert tr.valid is True


def test_coefficient_tracker_same_object_labels_never_split():
    tr = _tracker()
    L = _t([[1.0, -1.0]])
    tr.add(_t([[[[1.0, 2.0, 3.0]], [[1.0, 4.0, 5.0]]]]), L)
    tr.add(_t([[[[1.0, 2.0, 3.0]], [[1.0, 4.0, 5.0]]]]), L)
    assert torch.equal(tr.positive, torch.zeros(1, 2, 1, 2, dtype=F64))
    _, zeta_bar, zeta = tr.coefficients(_t([1.0]), _t([[1.0, 1.0]]))
    assert torch.equal(zeta_bar, _t([[[[4.0, 0.0]]], [[[0.0, 10.0]]]]).view(1, 2, 1, 2))
    assert torch.equal(zeta, _t([[[[0.0, 6.0]]], [[[8.0, 0.0]]]]).view(1, 2, 1, 2))


def test_coefficient_tracker_no_labels_yet_and_invalid_after_a_step_out_of_span():
    tr = _tracker()
    kappa, zeta_bar, zeta = tr.coefficients(_t([1.0]), _t([[1.0, 1.0]]))
    assert torch.equal(kappa, torch.zeros(1, 2, 1, dtype=F64))
    assert torch.equal(zeta_bar, torch.zeros(1, 2, 1, 2, dtype=F64))
    L = _t([[1.0, -1.0]])
    tr.add(_t([[[[1.0, 2.0, 3.0]], [[1.0, 4.0, 5.0]]]]), L)
    before = tr.total.clone()
    tr.add(None, L)
    assert tr.valid is False
    assert torch.equal(tr.total, before)  # nothing accumulated from a None step
    kappa, zeta_bar, zeta = tr.coefficients(_t([1.0]), _t([[1.0, 1.0]]))
    for x, shape in ((kappa, (1, 2, 1)), (zeta_bar, (1, 2, 1, 2)), (zeta, (1, 2, 1, 2))):
        assert x.shape == shape and torch.isnan(x).all()
    tr.add(_t([[[[1.0, 2.0, 3.0]], [[1.0, 4.0, 5.0]]]]), L)
    assert tr.valid is False  # stays invalid


def test_coefficient_tracker_follow_keeps_the_state_and_splits_increments():
    tr = _tracker()
    L1, L2 = _t([[1.0, -1.0]]), _t([[-1.0, -1.0]])
    a = _t([[[[1.0, 2.0, 3.0]], [[1.0, 4.0, 5.0]]]])
    b = _t([[[[2.0, 10.0, 30.0]], [[3.0, 50.0, 70.0]]]])
    tr.follow(a, L1)
    assert tr.current() is a
    tr.follow(b, L2)
    assert tr.current() is b
    assert torch.equal(tr.total, torch.zeros(1, 2, 1, 3, dtype=F64))  # nothing accumulated on this path
    assert torch.equal(tr._anchor, a[..., 1:])
    kappa, zeta_bar, zeta = tr.coefficients(_t([2.0]), _t([[1.0, 10.0]]))
    pos = a[..., 1:] * tr._same(L1) + (b - a)[..., 1:] * tr._same(L2)
    assert torch.equal(pos, _t([[[[2.0, 0.0]], [[46.0, 70.0]]]]))
    assert torch.equal(kappa, _t([[[4.0], [-6.0]]]))
    assert torch.equal(zeta_bar, pos * _t([1.0, 10.0]))
    assert torch.equal(zeta, b[..., 1:] * _t([1.0, 10.0]) - pos * _t([1.0, 10.0]))


# ============================================================================ GroupRun.__init__ / param / tracker
def _np(x):
    return x.detach().cpu().numpy()


def test_group_run_init_per_config_parameters_labels_and_forget_split():
    a = tiny(backend="gram", optimizer="sam", unlearn_optimizer="sgd", batch_size=4, rho=0.2, rho_rule="chen",
             sam_lambda=0.5, unlearn_method="neggrad", lr=0.5, unlearn_lr=0.25, alpha=0.7, label_flip=0.3)
    b = a.replace(sam_sign="max", sam_lambda=0.75, seed=3, lr=0.125, unlearn_lr=0.0625, rho=0.4, label_flip=0.2,
                  signal_strength=2.0, sigma_p=0.5, sigma_0=0.1, alpha=0.2)
    run = GroupRun([a, b])
    assert run.configs == [a, b] and run.cfg is a
    assert run.device == torch.device("cpu") and run.dtype == F64 and run.save_coefficients is False
    expect = {"lr": [0.5, 0.125], "unlearn_lr": [0.25, 0.0625], "alpha": [0.7, 0.2], "label_flip": [0.3, 0.2],
              "signal_strength": [1.5, 2.0], "sigma_p": [0.8, 0.5], "sigma_0": [0.05, 0.1], "seed": [0.0, 3.0],
              "sam_lambda": [0.5, -0.75], "rho": [sam_radius(a), sam_radius(b)]}
    for name, values in expect.items():
        got = run.param(name)
        assert got.dtype == F64 and torch.equal(got, _t(values)), name
    assert sam_radius(a) != 0.2  # the chen rule acted
    assert torch.equal(run.train_lr, _t([0.5, 0.125])) and torch.equal(run.unlearn_lr, _t([0.25, 0.0625]))
    assert torch.equal(run.mix, _t([0.5, -0.75]))
    assert torch.equal(run.train_rho, _t([sam_radius(a), sam_radius(b)]))
    assert torch.equal(run.unlearn_rho, _t([0.0, 0.0]))
    assert run.train_batch == 4 and run.unlearn_batch == 4
    assert run.keys.dtype == np.uint64 and list(run.keys) == [config_key(a), config_key(b)]
    # labels: flipped where flip_u < label_flip
    for c, cfg in enumerate((a, b)):
        dc = standard_data(cfg)
        assert np.array_equal(_np(run.yhat[c]), dc.yhat)
        flipped = dc.flip_u < cfg.label_flip
        assert np.array_equal(_np(run.flipped[c]), flipped) and flipped.any()
        assert np.array_equal(_np(run.labels[c]), np.where(flipped, -dc.yhat, dc.yhat))
    # forget: the forget_size smallest hash uniforms (forget_select=random)
    u = hash_uniform(STREAM_FORGET, run.keys, 0, a.n)
    for c in range(2):
        assert set(np.flatnonzero(_np(run.forget[c]))) == set(np.argsort(u[c])[:a.forget_size])
    assert torch.equal(run.retain, ~run.forget) and run.forget.dtype == torch.bool
    # schedule: 20 pretraining + 10 unlearning steps, 6 log points
    assert (run.pretrain_steps, run.total_steps) == (20, 30)
    assert run.log_steps == [0, 6, 12, 18, 24, 30]
    assert run.t == 0 and run.log == {}
    assert run.diverged_step.dtype == torch.long and torch.equal(run.diverged_step, torch.tensor([-1, -1]))
    # activation and layout
    assert run.act.name == "relu" and run.act.q == 1.0 and run.act.output_scale is None
    assert (run.layout.n, run.layout.P, run.layout.shared) == (10, 2, True)
    assert run.backend.name == "gram"
    # tracker: one noise vector per sample
    assert torch.equal(run.tracker.sample_of_noise, torch.arange(10))
    assert run.tracker.total.shape == (2, 2, 3, 11) and run.tracker.total.dtype == F64


def test_group_run_init_optimizer_switches_and_gd_batches():
    run = GroupRun([tiny(optimizer="gd", unlearn_optimizer="sam", rho=0.3, batch_size=4, unlearn_method="ga")])
    assert run.train_batch == 0 and run.unlearn_batch == 4  # SAM batches like SGD
    assert torch.equal(run.train_rho, _t([0.0])) and torch.equal(run.unlearn_rho, _t([0.3]))
    assert torch.equal(run.mix, _t([1.0]))
    run = GroupRun([tiny(optimizer="sgd", unlearn_optimizer="gd", batch_size=3)])
    assert run.train_batch == 3 and run.unlearn_batch == 0


@pytest.mark.parametrize("overrides, pretrain, total, log_steps", [
    (dict(), 20, 20, [0, 4, 8, 12, 16, 20]),
    (dict(unlearn_method="retrain"), 20, 40, [0, 8, 16, 24, 32, 40]),
    (dict(unlearn_method="neggrad", regime="from_scratch", log_points=4), 0, 10, [0, 3, 7, 10]),
    (dict(regime="from_scratch"), 20, 20, [0, 4, 8, 12, 16, 20]),
    (dict(steps=2, log_points=6), 2, 2, [0, 1, 2]),
    (dict(unlearn_method="ft", steps=3, unlearn_steps=4, log_points=3), 3, 7, [0, 4, 7]),
])
def test_group_run_schedule(overrides, pretrain, total, log_steps):
    run = GroupRun([tiny(n=4, d=8, **overrides)])
    assert (run.pretrain_steps, run.total_steps, run.log_steps) == (pretrain, total, log_steps)


def test_group_run_weights_init_scales_precision_polyrelu_and_independent_noise():
    # gaussian init: sigma_0 * the standard-unit filters
    cfg = tiny(backend="weights", d=16, sigma_0=0.3)
    dc = explicit_data(cfg)
    run = GroupRun([cfg])
    assert run.backend.name == "weights"
    assert torch.allclose(run.backend.W0, torch.as_tensor(0.3 * dc.init).view(1, 2, 3, 16), rtol=1e-15, atol=0)
    # torch_uniform: scale 1/sqrt(d) whatever sigma_0
    uni = cfg.replace(init="torch_uniform")
    du = explicit_data(uni)
    run_u = GroupRun([uni])
    assert torch.allclose(run_u.backend.W0, torch.as_tensor(du.init / 4.0).view(1, 2, 3, 16), rtol=1e-15, atol=0)
    # restart from the retraining init: sigma_0 * the retrain filters, and a fresh tracker
    run.tracker.add(torch.ones(1, 2, 3, 11, dtype=F64), run.labels)
    fresh = run.restart_from_retrain_init()
    assert torch.allclose(fresh, torch.as_tensor(0.3 * dc.retrain_init()).view(1, 2, 3, 16), rtol=1e-15, atol=0)
    assert not torch.allclose(fresh, run.backend.W0 * 0 + torch.as_tensor(0.3 * dc.init).view(1, 2, 3, 16))
    assert torch.equal(run.backend.init_state(), fresh)
    assert torch.equal(run.tracker.total, torch.zeros(1, 2, 3, 11, dtype=F64)) and run.tracker._labels is None
    # float32
    run32 = GroupRun([cfg.replace(precision="float32")])
    assert run32.dtype == torch.float32 and run32.yhat.dtype == torch.float32
    assert run32.param("lr").dtype == torch.float32 and run32.backend.W0.dtype == torch.float32
    # polyrelu: q per configuration
    poly = GroupRun([cfg.replace(activation="polyrelu", q=2.5), cfg.replace(activation="polyrelu", q=2.5, seed=4)])
    assert poly.act.name == "polyrelu" and torch.equal(poly.act.q, _t([2.5, 2.5]))
    assert torch.equal(poly.param("q_value"), _t([2.5, 2.5]))
    # output scale reaches the activation
    mean = GroupRun([cfg.replace(patch_aggregation="mean", output_scale="one")])
    assert mean.act.output_scale == 0.5
    # independent noise patches: N = n (P - 1), noise vector k belongs to sample k // (P - 1)
    ind = GroupRun([cfg.replace(P=3, shared_noise=False)])
    assert torch.equal(ind.tracker.sample_of_noise, torch.arange(20) // 2)
    assert ind.tracker.positive.shape == (1, 2, 3, 20)


def test_group_run_label_flip_boundary_and_noisy_forget_selection():
    cfg = tiny(n=12, forget_size=2)
    u = standard_data(cfg).flip_u
    below = np.sort(u[u < 0.5])
    assert len(below) >= 3
    lf = float(below[2])  # exactly the third smallest uniform: that sample is not flipped (strict <)
    run = GroupRun([cfg.replace(label_flip=lf, forget_select="noisy")])
    flipped = u < lf
    assert flipped.sum() == 2 and np.array_equal(_np(run.flipped[0]), flipped)
    # noisy: the flipped samples are forgotten first
    assert np.array_equal(_np(run.forget[0]), flipped)
    # more to forget than flipped: the flipped ones, then the smallest hash uniforms of the rest
    run4 = GroupRun([cfg.replace(label_flip=lf, forget_select="noisy", forget_size=4)])
    h = hash_uniform(STREAM_FORGET, run4.keys, 0, 12)[0]
    rest = [i for i in np.argsort(h) if not flipped[i]][:2]
    assert set(np.flatnonzero(_np(run4.forget[0]))) == set(np.flatnonzero(flipped)) | set(rest)
    random = GroupRun([cfg.replace(label_flip=lf, forget_size=4)])
    assert set(np.flatnonzero(_np(random.forget[0]))) == set(np.argsort(h)[:4])


def test_group_run_explicit_data_is_used_on_both_backends():
    cfg = tiny(backend="weights", d=16)
    dc = explicit_data(cfg)
    dc.yhat = -dc.yhat
    run = GroupRun([cfg], explicit=[dc])
    assert np.array_equal(_np(run.yhat[0]), dc.yhat)
    gram = GroupRun([cfg.replace(backend="gram")], explicit=[dc])
    assert gram.backend.name == "gram" and np.array_equal(_np(gram.yhat[0]), dc.yhat)
    # the gram backend on these vectors: its noise norms are those of the explicit vectors
    assert torch.allclose(gram.backend.noise_norms_sq(), run.backend.noise_norms_sq(), rtol=1e-12, atol=0)


# ============================================================================ sampler
def _expected_batch(run, members, batch_size, t, stream=STREAM_BATCH):
    count = int(members[0].sum())
    per_epoch = math.ceil(count / batch_size)
    epoch, b = divmod(t, per_epoch)
    u = hash_uniform(stream, run.keys, epoch, run.cfg.n) + 2.0 * (~_np(members))
    order = np.argsort(u, axis=1, kind="stable")[:, :count]
    idx = order[:, b * batch_size: min((b + 1) * batch_size, count)]
    w = np.zeros((len(run.configs), run.cfg.n))
    for c in range(len(run.configs)):
        w[c, idx[c]] = 1.0 / idx.shape[1]
    return w


def test_sampler_full_batch_cases_and_size_check():
    cfg = tiny(n=10)
    run = GroupRun([cfg, cfg.replace(seed=1)])
    everyone = torch.ones((2, 10), dtype=torch.bool)
    for bs in (0, 10, 11):
        w = run.sampler(everyone, bs, STREAM_BATCH)
        for t in (0, 1, 7):
            assert torch.equal(w(t), torch.full((2, 10), 0.1, dtype=F64))
    some = torch.zeros((2, 10), dtype=torch.bool)
    some[0, :7] = True
    some[1, 3:] = True
    w = run.sampler(some, 7, STREAM_BATCH)  # batch_size == count: full batch over the members
    assert torch.equal(w(3), some.double() / 7)
    one = torch.zeros((2, 10), dtype=torch.bool)
    one[:, 4] = True
    assert torch.equal(run.sampler(one, 0, STREAM_BATCH)(0), one.double())  # 1 / max(1, 1)
    none = torch.zeros((2, 10), dtype=torch.bool)
    assert torch.equal(run.sampler(none, 0, STREAM_BATCH)(0), torch.zeros((2, 10), dtype=F64))
    bad = some.clone()
    bad[1, 3] = False
    with pytest.raises(ConfigError, match=re.escape("internal: member sets of one batch must have equal sizes") + "$"):
        run.sampler(bad, 2, STREAM_BATCH)


def test_sampler_minibatches_per_step_and_epoch():
    cfg = tiny(n=10)
    run = GroupRun([cfg, cfg.replace(seed=1)])
    everyone = torch.ones((2, 10), dtype=torch.bool)
    w = run.sampler(everyone, 9, STREAM_BATCH)  # just under the set: two batches per epoch, 9 then 1
    for t in (0, 1, 2, 3, 0):
        np.testing.assert_array_equal(_np(w(t)), _expected_batch(run, everyone, 9, t), err_msg=str(t))
    assert float(w(1)[0].max()) == 1.0 and float(w(0)[0].max()) == 1.0 / 9
    some = torch.zeros((2, 10), dtype=torch.bool)
    some[0, :7] = True
    some[1, 3:] = True
    w = run.sampler(some, 3, 99)  # 7 members, batches of 3, 3, 1; stream passed through
    seen = np.zeros((2, 10))
    for t in range(3):
        got = _np(w(t))
        np.testing.assert_array_equal(got, _expected_batch(run, some, 3, t, stream=99), err_msg=str(t))
        seen += got > 0
    np.testing.assert_array_equal(seen, _np(some).astype(float))  # one epoch visits every member once
    for t in (5, 3, 7, 4):
        np.testing.assert_array_equal(_np(w(t)), _expected_batch(run, some, 3, t, stream=99), err_msg=str(t))
    assert not np.array_equal(_np(w(0)), _np(w(3)))  # a new epoch draws a new order


# ============================================================================ step
def _weights_run(configs=1, **overrides):
    cfg = tiny(backend="weights", d=16, label_flip=0.3, **overrides)
    return GroupRun([cfg.replace(seed=cfg.seed + c) for c in range(configs)])


def test_step_counts_logs_and_passes_mix_rho_adaptive_and_masks():
    from simulations.optim import sam_step

    run = _weights_run(optimizer="sam", rho=0.3, sam_lambda=0.5)
    state = run.backend.init_state()
    w = torch.full((1, 10), 0.1, dtype=F64)
    lr, rho = _t([0.5]), _t([0.3])
    # count=False: no log, no step counted, but the tracker follows
    s1 = run.step(state, run.labels, w, lr, rho, count=False)
    ref, info = sam_step(run.backend, run.act, state, run.labels, w, lr, rho, _t([0.5]), adaptive=False)
    assert torch.equal(s1, ref)
    assert run.t == 0 and run.log == {}
    assert torch.equal(run.tracker.total, info.basis_step)
    # default mix is the configuration's signed lambda; an explicit one overrides it
    s2 = run.step(state, run.labels, w, lr, rho)
    assert torch.equal(s2, ref) and run.t == 1
    assert list(run.log) and torch.equal(run.log["step"][0], _t([0.0]))
    s3 = run.step(state, run.labels, w, lr, rho, mix=_t([0.0]))
    assert torch.equal(s3, sam_step(run.backend, run.act, state, run.labels, w, lr, rho, _t([0.0]))[0])
    assert not torch.allclose(s3, s2) and run.t == 2
    assert len(run.log["step"]) == 1  # t = 1 is not a log step
    # masks reach sam_step
    mask = torch.zeros((1, 2, 3), dtype=F64)
    mask[0, 0, 1] = 1.0
    s4 = run.step(state, run.labels, w, lr, rho, filter_mask=mask)
    assert torch.equal(s4, sam_step(run.backend, run.act, state, run.labels, w, lr, rho, _t([0.5]),
                                    filter_mask=mask)[0])
    assert torch.equal(s4[0, 1], state[0, 1])
    # adaptive SAM when the configuration asks for it
    ada = _weights_run(optimizer="sam", rho=0.3, sam_adaptive=True)
    s5 = ada.step(state, ada.labels, w, lr, rho)
    assert torch.equal(s5, sam_step(ada.backend, ada.act, state, ada.labels, w, lr, rho, _t([1.0]),
                                    adaptive=True)[0])


def test_step_records_first_divergence_only():
    run = _weights_run(configs=2, log_points=2)
    state = run.backend.init_state()
    w = torch.full((2, 10), 0.1, dtype=F64)
    lr, rho = _t([0.5, 0.5]), _t([0.0, 0.0])
    bad = state.clone()
    bad[1] = math.inf
    run.step(bad, run.labels, w, lr, rho)  # at t = 0
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    run.step(bad, run.labels, w, lr, rho)  # t = 1: the first divergence (step 0) stays
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    run.step(state, run.labels, w, lr, rho)  # t = 2, finite
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    bad[0] = math.nan
    run.step(bad, run.labels, w, lr, rho, count=False)  # still t = 3
    assert torch.equal(run.diverged_step, torch.tensor([3, 0])) and run.t == 3


def test_step_gram_tracker_follows_the_state():
    run = GroupRun([tiny(n=6, d=20)])
    state = run.backend.init_state()
    new = run.step(state, run.labels, torch.full((1, 6), 1 / 6, dtype=F64), _t([0.5]), _t([0.0]))
    assert torch.equal(run.tracker.current(), run.backend.coefficients_on_basis(new))
    assert run.tracker._labels is run.labels


# ============================================================================ _record / _own_class_readouts
def _readouts_by_hand(run, info):
    """Every logged read-out of one step from its definition, sample by sample."""
    C, n = run.labels.shape
    kappa, zeta_bar, zeta = run.tracker.coefficients(run.backend.signal_norm_sq(), run.backend.noise_norms_sq())
    noise_pre = info.perturbed_preacts[1]  # (C, 2, m, n, Pn), Pn = 1 here
    out = {k: np.zeros(C) for k in ("train_loss", "train_error", "signal_coef_max", "noise_coef_max",
                                     "noise_coef_min", "noise_coef_max_retain", "noise_coef_max_forget",
                                     "active_noise_fraction")}
    f_pert = network_output(run.act, *info.perturbed_preacts, run.layout.noise_multiplicity)
    for side in ("retain", "forget"):
        for k in ("active_noise_fraction", "own_noise_coef_mean", "loss_slope", "loss_slope_perturbed"):
            out[f"{k}_{side}"] = np.zeros(C)
    for c in range(C):
        y = _np(run.labels[c])
        f = _np(info.outputs[c])
        margin = y * f
        out["train_loss"][c] = np.mean(np.logaddexp(0.0, -margin))
        out["train_error"][c] = np.mean(margin <= 0)
        out["signal_coef_max"][c] = float(kappa[c].max())
        zb = _np(zeta_bar[c])  # (2, m, n)
        out["noise_coef_max"][c] = zb.max()
        out["noise_coef_min"][c] = float(zeta[c].min())
        forget = _np(run.forget[c])
        out["noise_coef_max_retain"][c] = zb[:, :, ~forget].max() if (~forget).any() else -np.inf
        out["noise_coef_max_forget"][c] = zb[:, :, forget].max() if forget.any() else -np.inf
        own = [0 if y[i] > 0 else 1 for i in range(n)]
        act = np.array([(_np(noise_pre[c, own[i], :, i, :]) > 0).mean() for i in range(n)])  # over r and p
        out["active_noise_fraction"][c] = act.mean()
        own_zeta = np.array([zb[own[i], :, i].mean() for i in range(n)])
        slope = 1.0 / (1.0 + np.exp(margin))
        slope_p = 1.0 / (1.0 + np.exp(y * _np(f_pert[c])))
        for side, members in (("retain", ~forget), ("forget", forget)):
            k = max(members.sum(), 1)
            out[f"active_noise_fraction_{side}"][c] = act[members].sum() / k
            out[f"own_noise_coef_mean_{side}"][c] = own_zeta[members].sum() / k
            out[f"loss_slope_{side}"][c] = slope[members].sum() / k
            out[f"loss_slope_perturbed_{side}"][c] = slope_p[members].sum() / k
    return out


def test_record_every_readout_against_its_definition():
    from simulations.optim import sam_step

    a = tiny(backend="weights", d=16, label_flip=0.3, optimizer="sam", rho=0.4, forget_size=1)
    run = GroupRun([a, a.replace(seed=5, rho=0.2)], save_coefficients=True)
    w = torch.full((2, 10), 0.1, dtype=F64)
    state = run.backend.init_state()
    for _ in range(3):
        state = run.step(state, run.labels, w, run.train_lr, run.train_rho, count=False)
    flipped = run.labels.clone()
    flipped[:, :3] = -flipped[:, :3]
    state = run.step(state, flipped, w, run.train_lr, run.train_rho, count=False)  # a label switch
    _, info = sam_step(run.backend, run.act, state, run.labels, w, _t([0.0, 0.0]), run.train_rho, run.mix)
    run.t = 7
    run._record(info)
    expected = _readouts_by_hand(run, info)
    assert set(run.log) == set(expected) | {"step", "kappa", "zeta_bar", "zeta"}
    for k, v in expected.items():
        assert len(run.log[k]) == 1
        np.testing.assert_allclose(_np(run.log[k][0]), v, rtol=1e-12, atol=1e-15, err_msg=k)
    assert torch.equal(run.log["step"][0], _t([7.0, 7.0]))
    # the perturbed point differs from W (so the two slopes are different read-outs)
    assert not np.allclose(expected["loss_slope_forget"], expected["loss_slope_perturbed_forget"])
    assert expected["own_noise_coef_mean_forget"].min() != 0 and expected["active_noise_fraction"].min() > 0
    kappa, zeta_bar, zeta = run.tracker.coefficients(run.backend.signal_norm_sq(), run.backend.noise_norms_sq())
    for k, v in (("kappa", kappa), ("zeta_bar", zeta_bar), ("zeta", zeta)):
        assert torch.equal(run.log[k][0], v)
    run._record(info)  # a second row is appended, the coefficients are copies
    assert len(run.log["train_loss"]) == 2 and len(run.log["kappa"]) == 2
    assert run.log["kappa"][0] is not run.log["kappa"][1]



def test_record_readouts_count_a_shared_noise_vector_for_every_noise_patch():
    """P = 3 with one shared noise vector stored once: the output at the perturbed point counts it twice (the
    ``loss_slope_perturbed`` read-outs use the same network as the training outputs)."""
    from simulations.optim import sam_step

    a = tiny(backend="weights", d=16, P=3, shared_noise=True, label_flip=0.3, optimizer="sam", rho=0.4,
             forget_size=2, sigma_0=0.3)
    run = GroupRun([a, a.replace(seed=5, rho=0.2)], save_coefficients=True)
    assert run.layout.noise_multiplicity == 2.0
    w = torch.full((2, 10), 0.1, dtype=F64)
    state = run.backend.init_state()
    for _ in range(3):
        state = run.step(state, run.labels, w, run.train_lr, run.train_rho, count=False)
    _, info = sam_step(run.backend, run.act, state, run.labels, w, _t([0.0, 0.0]), run.train_rho, run.mix)
    run._record(info)
    expected = _readouts_by_hand(run, info)
    for k, v in expected.items():
        np.testing.assert_allclose(_np(run.log[k][0]), v, rtol=1e-12, atol=1e-15, err_msg=k)
    # counting the stored vector once would give other perturbed slopes
    once = network_output(run.act, *info.perturbed_preacts, 1.0)
    slope_once = torch.sigmoid(-run.labels * once)
    retain = run.retain.to(F64)
    once_retain = _np((slope_once * retain).sum(dim=1) / retain.sum(dim=1))
    assert np.abs(once_retain - expected["loss_slope_perturbed_retain"]).min() > 1e-6

def test_record_at_zero_weights_boundaries():
    """All pre-activations exactly 0: margin 0 counts as an error, no noise neuron is active, every slope is 1/2."""
    from simulations.optim import sam_step

    run = GroupRun([tiny(backend="weights", d=16, label_flip=0.3, forget_size=1)])
    zero = torch.zeros(run.backend.shape, dtype=F64)
    w = torch.full((1, 10), 0.1, dtype=F64)
    _, info = sam_step(run.backend, run.act, zero, run.labels, w, _t([0.0]), _t([0.0]), run.mix)
    run._record(info)
    log = {k: float(v[0][0]) for k, v in run.log.items()}
    assert "kappa" not in run.log  # save_coefficients defaults to False
    assert log["train_loss"] == pytest.approx(math.log(2), rel=1e-15)
    assert log["train_error"] == 1.0
    for k in ("active_noise_fraction", "active_noise_fraction_retain", "active_noise_fraction_forget"):
        assert log[k] == 0.0, k
    for k in ("loss_slope_retain", "loss_slope_forget", "loss_slope_perturbed_retain",
              "loss_slope_perturbed_forget"):
        assert log[k] == 0.5, k
    for k in ("signal_coef_max", "noise_coef_max", "noise_coef_min", "noise_coef_max_retain",
              "noise_coef_max_forget", "own_noise_coef_mean_retain", "own_noise_coef_mean_forget"):
        assert log[k] == 0.0, k


# ============================================================================ evaluate / _test_error / run / _results
def _train_outputs(run, state):
    """f(x_i) of the weights backend from the stored patches (P = 2: one signal and one noise patch), 1/m scale."""
    C, _, m, d = state.shape
    X = run.backend.X.view(C, run.cfg.n, 2, d)
    pre = torch.einsum("cjrd,cipd->cjrip", state, X)
    F = torch.relu(pre).sum(dim=(2, 4)) / m  # (C, 2, n)
    return F[:, 0] - F[:, 1]


def _test_metrics(cfg, W):
    """Test error, its standard error and the clean error of filters W (2, m, d) on the explicit test samples."""
    from simulations.data import explicit_test_noise

    draws = draw_test_set(cfg)
    y_clean = draws.yhat
    y = np.where(draws.flip_u < cfg.label_flip, -y_clean, y_clean)
    W = _np(W)
    out = np.zeros(cfg.n_test)
    for start, noise in explicit_test_noise(cfg):
        rows = noise.shape[0]
        yh = y_clean[start:start + rows]
        sig = yh[:, None, None] * cfg.signal_strength * W[None, :, :, 0]  # (rows, 2, m)
        noi = cfg.sigma_p * np.einsum("td,jrd->tjr", noise[:, 0, :], W)
        F = (np.maximum(sig, 0) + np.maximum(noi, 0)).sum(axis=2) / cfg.m
        out[start:start + rows] = F[:, 0] - F[:, 1]
    err = np.mean(y * out <= 0)
    return err, math.sqrt(err * (1 - err) / cfg.n_test), np.mean(y_clean * out <= 0)


def _metrics_by_hand(run, state):
    f = _train_outputs(run, state)
    out = {}
    margin = _np(run.labels * f)
    forget = _np(run.forget)
    out["train_loss"] = np.logaddexp(0, -margin).mean(axis=1)
    out["train_error"] = 1 - (margin > 0).mean(axis=1)
    out["retain_acc"] = np.array([(margin[c][~forget[c]] > 0).mean() for c in range(len(margin))])
    out["forget_acc"] = np.array([(margin[c][forget[c]] > 0).mean() for c in range(len(margin))])
    out["forget_flip_acc"] = np.array([(margin[c][forget[c]] < 0).mean() for c in range(len(margin))])
    tm = [_test_metrics(cfg, state[c]) for c, cfg in enumerate(run.configs)]
    out["test_error"] = np.array([x[0] for x in tm])
    out["test_error_se"] = np.array([x[1] for x in tm])
    out["test_error_clean"] = np.array([x[2] for x in tm])
    return out


def _evaluate_configs():
    a = tiny(backend="weights", d=16, label_flip=0.3, n_test=300, forget_size=3, sigma_0=0.3, lr=0.3, steps=3)
    return [a, a.replace(seed=4, signal_strength=0.7, sigma_p=1.3)]


def test_evaluate_every_metric_against_its_definition():
    from _helpers import drive

    run = GroupRun(_evaluate_configs())
    state = drive(run)
    got = run.evaluate(state, "x_")
    expected = _metrics_by_hand(run, state)
    assert set(got) == {"x_" + k for k in expected}
    for k, v in expected.items():
        np.testing.assert_allclose(_np(got["x_" + k]), v, rtol=1e-12, atol=1e-15, err_msg=k)
    assert 0 < expected["test_error"].min() and expected["test_error"].max() < 1
    assert not np.array_equal(expected["test_error"], expected["test_error_clean"])
    assert not np.array_equal(expected["forget_acc"], expected["retain_acc"])
    assert torch.equal(run.diverged_step, torch.tensor([-1, -1]))
    assert set(run.evaluate(state)) == set(expected)  # no prefix by default


def test_evaluate_at_zero_weights_and_on_diverged_configurations():
    run = GroupRun(_evaluate_configs())
    zero = torch.zeros(run.backend.shape, dtype=F64)
    got = {k: _np(v) for k, v in run.evaluate(zero).items()}
    # every output is exactly 0: margin 0 is neither correct nor flipped, and every test sample counts as an error
    np.testing.assert_array_equal(got["train_error"], [1.0, 1.0])
    for k in ("retain_acc", "forget_acc", "forget_flip_acc", "test_error_se"):
        np.testing.assert_array_equal(got[k], [0.0, 0.0], err_msg=k)
    np.testing.assert_array_equal(got["test_error"], [1.0, 1.0])
    np.testing.assert_array_equal(got["test_error_clean"], [1.0, 1.0])
    np.testing.assert_allclose(got["train_loss"], [math.log(2)] * 2, rtol=1e-15)
    # a non-finite state: that configuration is marked diverged at the current step and its metrics are NaN
    state = run.backend.init_state()
    state[1, 0, 0, 0] = math.inf
    run.t = 0
    got = run.evaluate(state)
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    expected = _metrics_by_hand(run, run.backend.init_state())
    for k, v in got.items():
        assert math.isnan(float(v[1])), k
        assert float(v[0]) == pytest.approx(float(expected[k][0]), rel=1e-12, abs=1e-15), k
    # an earlier divergence is kept, and a diverged configuration stays NaN even with finite weights
    run.t = 9
    run.evaluate(state)
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    got = run.evaluate(run.backend.init_state())
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0]))
    assert all(math.isnan(float(v[1])) and not math.isnan(float(v[0])) for v in got.values())
    # finite weights whose outputs overflow: diverged too
    huge = run.backend.init_state()
    huge[0, 0] = 1e308
    run.t = 11
    got = run.evaluate(huge)
    assert torch.equal(run.diverged_step, torch.tensor([11, 0]))
    assert all(math.isnan(float(v[0])) for v in got.values())
    test = run._test_error(huge)
    assert all(math.isnan(float(v[0])) and not math.isnan(float(v[1])) for v in test.values())


def test_gram_test_error_is_the_backend_test_outputs_of_every_configuration():
    u = draw_test_set(tiny(n_test=300)).flip_u
    lf = float(np.sort(u[u < 0.5])[5])  # a test uniform itself: that sample is not flipped (strict <)
    a = tiny(backend="gram", n_test=300, label_flip=lf, noise_projected=True)
    configs = [a, a.replace(seed=2, sigma_p=1.4, signal_strength=0.6), a.replace(seed=3, d=50)]
    run = GroupRun(configs)
    g = torch.Generator().manual_seed(0)
    state = run.backend.init_state() + 0.3 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    got = run._test_error(state)
    draws = [draw_test_set(c) for c in configs]
    out = run.backend.test_outputs(state, run.act, draws, run.param("sigma_p"), run.param("signal_strength"), True,
                                   run.layout.noise_multiplicity)
    for c, (cfg, dr) in enumerate(zip(configs, draws)):
        f = _np(out[c])
        y = np.where(dr.flip_u < cfg.label_flip, -dr.yhat, dr.yhat)
        err = np.mean(y * f <= 0)
        assert float(got["test_error"][c]) == err
        assert float(got["test_error_clean"][c]) == np.mean(dr.yhat * f <= 0)
        assert float(got["test_error_se"][c]) == pytest.approx(math.sqrt(err * (1 - err) / 300), rel=1e-14)
    assert len({float(x) for x in got["test_error"]}) == 3
    y_le = np.where(draws[0].flip_u <= lf, -draws[0].yhat, draws[0].yhat)  # the boundary sample matters
    assert float(got["test_error"][0]) != np.mean(y_le * _np(out[0]) <= 0)
    unprojected = run.backend.test_outputs(state, run.act, draws, run.param("sigma_p"),
                                           run.param("signal_strength"), False, run.layout.noise_multiplicity)
    assert not torch.allclose(unprojected, out)



def test_gram_test_error_in_chunks_equals_each_configuration_alone():
    """The gram test outputs are computed in chunks of configurations (about 2e8 bytes each): with n_test = 20000,
    P = 2, m = 16 a chunk holds 9 configurations, so 10 configurations take two chunks, each row its own."""
    a = tiny(backend="gram", n_test=20000, m=16, steps=2)
    assert int(2e8 // (a.n_test * (a.P + 2) * 2 * a.m * 8)) == 9
    configs = [a.replace(seed=s, signal_strength=1.0 + 0.1 * s) for s in range(10)]
    run = GroupRun(configs)
    g = torch.Generator().manual_seed(1)
    state = run.backend.init_state() + 0.3 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    got = run._test_error(state)
    assert all(v.shape == (10,) for v in got.values())
    for c in (0, 8, 9):  # the first and last of chunk one, the only one of chunk two
        alone = GroupRun([configs[c]])._test_error(state[c:c + 1])
        for k, v in alone.items():
            assert float(got[k][c]) == float(v[0]), (k, c)
    assert len({float(x) for x in got["test_error"]}) > 5

def test_gram_test_error_polyrelu_uses_each_configurations_activation():
    a = tiny(backend="gram", n_test=200, activation="polyrelu", q=2.5)
    run = GroupRun([a, a.replace(seed=1)])
    g = torch.Generator().manual_seed(1)
    state = run.backend.init_state() + 0.3 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    got = run._test_error(state)
    draws = [draw_test_set(c) for c in run.configs]
    out = run.backend.test_outputs(state, run.act, draws, run.param("sigma_p"), run.param("signal_strength"),
                                   True, run.layout.noise_multiplicity)
    for c, dr in enumerate(draws):
        y = np.where(dr.flip_u < run.configs[c].label_flip, -dr.yhat, dr.yhat)
        assert float(got["test_error"][c]) == np.mean(y * _np(out[c]) <= 0)
    assert run._act_slice(slice(0, 1)).q.shape == (1,)
    relu = GroupRun([tiny()])
    assert relu._act_slice(slice(0, 1)) is relu.act


def test_run_results_metrics_trajectory_and_coefficients():
    from simulations.unlearning import METHODS

    a = tiny(backend="weights", d=16, label_flip=0.3, n_test=100, forget_size=3, sigma_0=0.3, steps=4,
             unlearn_steps=2, unlearn_method="neggrad", optimizer="sam", rho=0.3, log_points=4)
    configs = [a, a.replace(seed=4, sigma_p=1.3)]
    import time

    start = time.perf_counter()
    res = GroupRun(configs, save_coefficients=True).run()
    elapsed = time.perf_counter() - start
    # the same run by hand: pretraining, metrics, unlearning, metrics
    ref = GroupRun(configs)
    w = ref.sampler(torch.ones_like(ref.forget), ref.train_batch, STREAM_BATCH)
    state = ref.backend.init_state()
    for t in range(4):
        state = ref.step(state, ref.labels, w(t), ref.train_lr, ref.train_rho)
    pre = _metrics_by_hand(ref, state)
    state = METHODS["neggrad"].run(ref, state)
    final = _metrics_by_hand(ref, state)
    kappa, zeta_bar, _ = ref.tracker.coefficients(ref.backend.signal_norm_sq(), ref.backend.noise_norms_sq())
    assert ref.log_steps == [0, 2, 4, 6]
    for c, r in enumerate(res):
        assert r.config is configs[c]
        assert set(r.metrics) == ({f"pretrain_{k}" for k in pre} | set(final)
                                  | {"signal_coef_max", "noise_coef_max", "diverged", "diverged_step", "wall_s"})
        for k in pre:
            assert r.metrics[f"pretrain_{k}"] == pytest.approx(float(pre[k][c]), rel=1e-12, abs=1e-15), k
            assert r.metrics[k] == pytest.approx(float(final[k][c]), rel=1e-12, abs=1e-15), k
            assert type(r.metrics[k]) is float
        assert r.metrics["signal_coef_max"] == pytest.approx(float(kappa[c].max()), rel=1e-12)
        assert r.metrics["noise_coef_max"] == pytest.approx(float(zeta_bar[c].max()), rel=1e-12)
        assert r.metrics["diverged"] is False and r.metrics["diverged_step"] == -1
        assert type(r.metrics["diverged_step"]) is int
        assert isinstance(r.metrics["wall_s"], float) and 0 < r.metrics["wall_s"] <= elapsed / 2  # per config
        # every log step, the final one recorded after the last update
        np.testing.assert_array_equal(r.trajectory["step"], [0.0, 2.0, 4.0, 6.0])
        np.testing.assert_array_equal(r.trajectory["forget_indices"], np.flatnonzero(_np(ref.forget[c])))
        assert "kappa" not in r.trajectory and "zeta" not in r.trajectory and "zeta_bar" not in r.trajectory
        assert set(r.coefficients) == {"kappa", "zeta_bar", "zeta"}
        assert r.coefficients["kappa"].shape == (4, 2, 3) and r.coefficients["zeta_bar"].shape == (4, 2, 3, 10)
        np.testing.assert_allclose(r.coefficients["kappa"][-1], _np(kappa[c]), rtol=1e-12)
        assert r.trajectory["signal_coef_max"][-1] == pytest.approx(r.metrics["signal_coef_max"], rel=1e-12)
        assert r.trajectory["train_loss"][-1] == pytest.approx(r.metrics["train_loss"], rel=1e-12)
        # final record under unlearning: GD unlearning, so the perturbed slope is the plain one
        assert r.trajectory["loss_slope_perturbed_forget"][-1] == r.trajectory["loss_slope_forget"][-1]
        assert r.trajectory["loss_slope_perturbed_forget"][0] != r.trajectory["loss_slope_forget"][0]
    # without save_coefficients: no coefficient arrays
    assert GroupRun([a.replace(steps=1, unlearn_steps=1, log_points=2)]).run()[0].coefficients == {}


def test_run_final_record_uses_the_training_radius_without_unlearning_and_sam_steps():
    a = tiny(backend="weights", d=16, n_test=100, steps=4, optimizer="sam", rho=0.5, log_points=3, sam_steps=2)
    r = GroupRun([a]).run()[0]
    np.testing.assert_array_equal(r.trajectory["step"], [0.0, 2.0, 4.0])
    assert r.trajectory["loss_slope_perturbed_retain"][-1] != r.trajectory["loss_slope_retain"][-1]
    assert not any(k.startswith("pretrain_") for k in r.metrics)
    # sam_steps = 2: SAM for t < 2, then plain GD steps
    ref = GroupRun([a])
    state = ref.backend.init_state()
    w = torch.full((1, 10), 0.1, dtype=F64)
    for t in range(4):
        state = ref.step(state, ref.labels, w, ref.train_lr, ref.train_rho if t < 2 else _t([0.0]))
    assert r.metrics["train_loss"] == pytest.approx(float(_metrics_by_hand(ref, state)["train_loss"][0]), rel=1e-12)
    # no training at all: one log row at step 0
    z = GroupRun([a.replace(steps=0, sam_steps=0, log_points=2)]).run()[0]
    np.testing.assert_array_equal(z.trajectory["step"], [0.0])


def test_simulate_keeps_input_order_across_groups_and_chunks():
    a = tiny(backend="weights", d=12, n=6, n_test=20, steps=1, log_points=2, forget_size=1)
    configs = [a, tiny(n=6, d=12, n_test=20, steps=1, log_points=2, forget_size=1), a.replace(seed=3)]
    res = simulate(configs, max_chunk=1)
    assert [r.config for r in res] == configs
    assert all(r.coefficients == {} for r in res)  # save_coefficients defaults to False
    assert len({r.metrics["train_loss"] for r in res}) == 3
    saved = simulate(configs[:1], save_coefficients=True)[0]
    assert set(saved.coefficients) == {"kappa", "zeta_bar", "zeta"}
    assert saved.metrics["train_loss"] == res[0].metrics["train_loss"]


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
def test_results_mark_divergence_including_at_step_0():
    a = tiny(backend="weights", d=12, n=6, n_test=50, log_points=2, forget_size=1)
    # initial weights so large that the outputs overflow: diverged at step 0 (no training step at all)
    (at0,) = GroupRun([a.replace(steps=0, sigma_0=1e308)]).run()
    (fine,) = GroupRun([a.replace(steps=3)]).run()
    assert at0.metrics["diverged"] is True and at0.metrics["diverged_step"] == 0
    assert math.isnan(at0.metrics["train_loss"]) and math.isnan(at0.metrics["test_error"])
    # diverged on the first step and still overflowing at the end (even from the initial weights): step 0 is kept
    (first,) = GroupRun([a.replace(steps=1, sigma_0=1e308)]).run()
    assert first.metrics["diverged"] is True and first.metrics["diverged_step"] == 0
    assert fine.metrics["diverged"] is False and fine.metrics["diverged_step"] == -1
    assert not math.isnan(fine.metrics["train_loss"])


@pytest.mark.parametrize("P, seed", [(2, 2), (3, 3)])
def test_gradient_is_the_autograd_gradient_of_the_weighted_loss(P, seed):
    """Against autograd over all P patches; with P = 3 and shared noise the one stored noise vector stands for
    P − 1 = 2 patches (multiplicity 2, not the default 1)."""
    from _helpers import autograd_grad, full_patches

    cfg = tiny(backend="weights", d=16, P=P, shared_noise=True, label_flip=0.3, sigma_0=0.3)
    run = GroupRun([cfg])
    assert run.layout.noise_multiplicity == P - 1
    X = full_patches(cfg, explicit_data(cfg))
    g = torch.Generator().manual_seed(seed)
    W = run.backend.init_state() + 0.2 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    weights = _t([[0.3, 0.0, 0.1, 0.05, 0.2, 0.0, 0.15, 0.1, 0.05, 0.05]])
    got = run.gradient(W, run.labels, weights)
    ref = autograd_grad(W[0], X, run.labels[0], weights[0], "relu")
    assert got.shape == W.shape
    np.testing.assert_allclose(_np(got[0]), _np(ref), rtol=1e-10, atol=1e-13)
    assert float(ref.abs().max()) > 1e-3


def test_evaluate_marks_overflowing_training_outputs_even_when_the_test_outputs_are_finite():
    from simulations.data import explicit_test_noise

    cfg = tiny(backend="weights", d=16, n_test=10)
    run = GroupRun([cfg])
    train = _np(run.backend.X.view(1, 10, 2, 16)[0, :, 1, :])
    test = cfg.sigma_p * np.concatenate([noise[:, 0, :] for _, noise in explicit_test_noise(cfg)])
    # a coordinate where some training noise value exceeds 1.1 and every test one stays below 1
    k = int(np.flatnonzero((train.max(axis=0) > 1.1) & (test.max(axis=0) < 1.0))[0])
    state = run.backend.init_state()
    state[0, 0, 0, :] = 0.0
    state[0, 0, 0, k] = 1.7e308  # finite weights: 1.7e308 * 1.1 overflows, 1.7e308 * 1.0 does not
    assert bool(torch.isfinite(state).all())
    assert bool(torch.isfinite(run._test_error(state)["test_error"]).all())  # the test outputs stay finite
    got = run.evaluate(state)
    assert torch.equal(run.diverged_step, torch.tensor([0]))
    assert all(math.isnan(float(v[0])) for v in got.values())


# ======================================================================== survivors of the partial run of 2026-12-02
def test_restart_from_retrain_init_keeps_the_run_precision():
    """The retraining restart builds its state in the run's dtype (float32 runs stay float32) on both backends."""
    for backend in ("weights", "gram"):
        cfg = tiny(backend=backend, d=16, sigma_0=0.3, precision="float32")
        run = GroupRun([cfg])
        fresh = run.restart_from_retrain_init()
        assert fresh.dtype == torch.float32, backend
        assert run.backend.init_state().dtype == torch.float32, backend


def test_simulate_refuses_a_cuda_device_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=re.escape("--device cuda: no CUDA GPU is visible here; use --device cpu")):
        simulate([tiny()], device="cuda")


def test_the_final_record_is_taken_at_the_training_sam_point_with_adaptive_and_mix(monkeypatch):
    """The last trajectory row comes from one extra SAM pass at lr 0: with the run's radius, its mix (the signed
    λ of sam_sign/sam_lambda) and ASAM's adaptive ε when the run is ASAM, over all n samples with weight 1/n."""
    import simulations.engine as engine

    calls = []
    real = engine.sam_step

    def spy(backend, act, state, labels, weights, lr, rho, mix=None, adaptive=False, **masks):
        calls.append({"weights": weights.clone(), "lr": lr.clone(), "rho": rho.clone(),
                      "mix": None if mix is None else mix.clone(), "adaptive": adaptive})
        return real(backend, act, state, labels, weights, lr, rho, mix, adaptive=adaptive, **masks)

    monkeypatch.setattr(engine, "sam_step", spy)
    a = tiny(backend="weights", d=16, n_test=100, steps=3, optimizer="sam", rho=0.5, log_points=2,
             sam_adaptive=True, sam_sign="max", sam_lambda=0.5)
    run = GroupRun([a])
    run.run()
    last = calls[-1]
    assert last["adaptive"] is True and last["lr"].dtype == F64 and torch.equal(last["lr"], torch.zeros(1, dtype=F64))
    assert torch.equal(last["rho"], run.train_rho) and torch.equal(last["mix"], run.mix)
    assert last["weights"].dtype == F64 and torch.equal(last["weights"], torch.full((1, a.n), 1.0 / a.n, dtype=F64))
    assert float(run.mix[0]) == -0.5


def test_evaluate_counts_a_shared_noise_vector_once_per_noise_patch():
    """P = 3 with shared noise: the training outputs count the stored noise vector for both noise patches."""
    from _helpers import full_patches

    cfg = tiny(backend="weights", d=16, P=3, shared_noise=True, label_flip=0.3, sigma_0=0.3, n_test=100)
    run = GroupRun([cfg])
    g = torch.Generator().manual_seed(5)
    state = run.backend.init_state() + 0.3 * torch.randn(run.backend.shape, generator=g, dtype=F64)
    X = full_patches(cfg, explicit_data(cfg))  # (n, P, d): signal patch, then the same xi twice
    F = torch.relu(torch.einsum("jrd,ipd->jrip", state[0], X)).sum(dim=(1, 3)) / cfg.m
    margin = run.labels[0] * (F[0] - F[1])
    got = run.evaluate(state)
    assert float(got["train_loss"][0]) == pytest.approx(float(torch.nn.functional.softplus(-margin).mean()),
                                                        rel=1e-12)
    assert float(got["train_error"][0]) == float((margin <= 0).to(F64).mean())


def test_evaluate_three_configurations_with_the_middle_one_diverged():
    a = _evaluate_configs()[0]
    run = GroupRun([a, a.replace(seed=4), a.replace(seed=5)])
    state = run.backend.init_state()
    state[1, 0, 0, 0] = math.inf
    run.t = 0
    got = run.evaluate(state)
    assert torch.equal(run.diverged_step, torch.tensor([-1, 0, -1]))
    expected = _metrics_by_hand(run, run.backend.init_state())
    for k, v in got.items():
        assert math.isnan(float(v[1])), k
        for c in (0, 2):
            assert float(v[c]) == pytest.approx(float(expected[k][c]), rel=1e-12, abs=1e-15), (k, c)


def test_polyrelu_q_is_held_in_the_run_precision():
    cfg = tiny(backend="weights", d=16, activation="polyrelu", q=2.7)
    q = GroupRun([cfg]).param("q_value")
    assert q.dtype == F64 and float(q[0]) == 2.7  # 2.7 is not exact in float32


def test_configurations_sharing_test_draws_are_evaluated_alike():
    """Two configurations differing only in the learning rate share their test draws (one cached draw): at the same
    weights their test metrics are equal to those of each evaluated alone."""
    a = tiny(backend="weights", d=16, label_flip=0.3, n_test=200, sigma_0=0.3)
    b = a.replace(lr=a.lr / 2)
    run = GroupRun([a, b])
    state = run.backend.init_state()
    got = run._test_error(state)
    alone = GroupRun([a])._test_error(GroupRun([a]).backend.init_state())
    for k, v in alone.items():
        assert float(got[k][0]) == float(got[k][1]) == float(v[0]), k


def test_minibatch_training_follows_the_batch_stream():
    """SGD (batch 4 of n = 10): the run's training is the sequence of steps on the sampler's STREAM_BATCH weights."""
    a = tiny(backend="weights", d=16, n_test=100, steps=4, optimizer="sgd", batch_size=4, lr=0.3, log_points=2)
    r = GroupRun([a]).run()[0]
    ref = GroupRun([a])
    state = ref.backend.init_state()
    weights = ref.sampler(torch.ones_like(ref.forget), 4, STREAM_BATCH)
    for t in range(4):
        state = ref.step(state, ref.labels, weights(t), ref.train_lr, ref.train_rho)
    assert r.metrics["train_loss"] == pytest.approx(float(_metrics_by_hand(ref, state)["train_loss"][0]), rel=1e-12)


# ============================================================ every tensor on the run's device (a CPU stand-in)
DEVICE_CASES = {
    "weights-sgd-sam-neggrad-polyrelu-bias": dict(backend="weights", d=16, optimizer="sam", rho=0.3, batch_size=4,
                                                  unlearn_method="neggrad", unlearn_optimizer="sam",
                                                  regime="pretrain_then_unlearn", activation="polyrelu", q=2.5,
                                                  filter_bias=True, label_flip=0.2),
    "gram-float32-retrain": dict(backend="gram", optimizer="sam", rho=0.3, unlearn_method="retrain",
                                 precision="float32", label_flip=0.2),
    "gram-sharp-minmax-polyrelu-sgd": dict(backend="gram", unlearn_method="sharp_minmax", activation="polyrelu",
                                           q=2.5, batch_size=4, regime="pretrain_then_unlearn", label_flip=0.2),
    "weights-float32-rl-shared-P3": dict(backend="weights", d=16, P=3, shared_noise=True, unlearn_method="rl",
                                         precision="float32", regime="pretrain_then_unlearn", sam_steps=5,
                                         optimizer="sam", rho=0.2),
}


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_every_tensor_is_made_on_the_runs_device(case):
    from _helpers import assert_same_with_meta_default

    cfg = tiny(**DEVICE_CASES[case])
    assert_same_with_meta_default([cfg, cfg.replace(seed=3, signal_strength=0.9)])
