"""Tests written to kill the mutants that survived `python tests/mutation.py` (docs/testing.md, "What survives"): each
pins a value or an identity that a surviving mutant changed and no other test checked. Hand-computed values and exact
identities only; grouped by the module under mutation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from empirical.sam import SAM
from simulations.config import ConfigError

F64 = torch.float64


# ================================================================================================ empirical/sam.py
def _sgd_sam(params, **kwargs):
    return SAM(params, torch.optim.SGD, **kwargs)


def _half_square_closure(params):
    """``L = ½ Σ ||p||²``, so ∇L = p, for exact hand computations."""
    def closure():
        loss = sum(0.5 * (p * p).sum() for p in params)
        loss.backward()
        return loss
    return closure


def test_sam_defaults_are_plain_sam_with_rho_0_05():
    """The documented signature: rho 0.05, adaptive False, sign "min", lamb 1 (mutants changed each default)."""
    opt = _sgd_sam([nn.Parameter(torch.ones(2))], lr=0.1)
    group = opt.param_groups[0]
    assert (group["rho"], group["adaptive"], group["sign"], group["lamb"]) == (0.05, False, "min", 1.0)
    assert opt.defaults["lr"] == 0.1 and opt.defaults["rho"] == 0.05


def test_sam_lamb_zero_is_the_base_step_and_negative_lamb_is_refused():
    """λ = 0: g_final = g exactly, so one step is w − η w on ½||w||² whatever ρ; λ < 0 is a ConfigError."""
    w0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    w = nn.Parameter(w0.clone())
    _sgd_sam([w], rho=0.5, lamb=0.0, lr=0.25).step(_half_square_closure([w]))
    assert torch.equal(w.detach(), w0 - 0.25 * w0)
    with pytest.raises(ConfigError, match=r"^SAM needs lamb >= 0 \(got -0.1\)"):
        _sgd_sam([w], lamb=-0.1, lr=0.1)


def test_sam_mask_errors_name_the_problem():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    opt = _sgd_sam([a, b], lr=0.1)
    with pytest.raises(ConfigError, match=r"^mask list has 1 entries for 2 parameters$"):
        opt.set_mask([torch.ones(2)])
    with pytest.raises(ConfigError, match=r"^mask given for a tensor that is not a parameter of this optimizer$"):
        opt.set_mask({nn.Parameter(torch.ones(2)): torch.ones(2)})


def test_sam_a_none_mask_does_not_end_the_list():
    """[None, mask]: the first parameter trains, the second is still frozen where its mask is 0."""
    a, b = nn.Parameter(torch.ones(2, dtype=F64)), nn.Parameter(torch.ones(2, dtype=F64))
    opt = _sgd_sam([a, b], rho=0.1, lr=0.5)
    opt.set_mask([None, torch.tensor([1.0, 0.0])])
    opt.step(_half_square_closure([a, b]))
    assert (a.detach() != 1.0).all() and b[0].item() != 1.0 and b[1].item() == 1.0


def test_sam_frozen_entries_keep_their_momentum_and_get_a_zero_gradient():
    """Momentum built up unmasked, then a mask: the frozen entries keep the momentum buffer they had (not 0), their
    weights do not move, and the final gradient there is 0 (module docstring: "their final gradient is zeroed")."""
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=F64))
    opt = _sgd_sam([w], rho=0.1, lr=0.1, momentum=0.9, weight_decay=0.01)
    closure = _half_square_closure([w])
    for _ in range(2):
        opt.step(closure)
    buf = opt.base_optimizer.state[w]["momentum_buffer"].clone()
    before = w.detach().clone()
    assert (buf != 0).all()
    opt.set_mask([torch.tensor([1, 0, 1, 0])])
    opt.step(closure)
    frozen = torch.tensor([False, True, False, True])
    after = opt.base_optimizer.state[w]["momentum_buffer"]
    assert torch.equal(after[frozen], buf[frozen]) and (after[~frozen] != buf[~frozen]).all()
    assert torch.equal(w.detach()[frozen], before[frozen]) and (w.detach()[~frozen] != before[~frozen]).all()
    assert torch.equal(w.grad[frozen], torch.zeros(2, dtype=F64))


def test_sam_masks_with_adam_freeze_the_moments_and_advance_the_step_count():
    """Adam's per-entry moments are put back at frozen entries, its per-tensor step count still advances — also for a
    0-dimensional parameter, whose step count has the parameter's shape ()."""
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=F64))
    s = nn.Parameter(torch.tensor(2.0, dtype=F64))
    opt = SAM([w, s], torch.optim.Adam, rho=0.1, lr=0.1)
    opt.set_mask([torch.tensor([1, 0, 1]), torch.tensor(0)])
    closure = _half_square_closure([w, s])
    for _ in range(3):
        opt.step(closure)
    state_w, state_s = opt.base_optimizer.state[w], opt.base_optimizer.state[s]
    assert float(state_w["step"]) == 3.0 and float(state_s["step"]) == 3.0
    assert state_w["exp_avg"][1] == 0 and state_w["exp_avg_sq"][1] == 0 and (state_w["exp_avg"][[0, 2]] != 0).all()
    assert state_s["exp_avg"] == 0 and state_s["exp_avg_sq"] == 0
    assert w[1].item() == -2.0 and s.item() == 2.0 and w[0].item() != 1.0


class _SGDWithExtraState(torch.optim.SGD):
    """SGD that also keeps a call count (a Python int) and a tensor of another shape in each parameter's state:
    neither is per-entry, so masking must leave both alone."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["calls"] = state.get("calls", 0) + 1
                state["trace"] = torch.full((2,), float(state["calls"]))


def test_sam_masks_leave_state_that_is_not_per_entry_alone():
    w = nn.Parameter(torch.ones(3, dtype=F64))
    opt = SAM([w], _SGDWithExtraState, rho=0.1, lr=0.1, momentum=0.5)
    opt.set_mask([torch.tensor([1, 0, 1])])
    for _ in range(2):
        opt.step(_half_square_closure([w]))
    state = opt.base_optimizer.state[w]
    assert state["calls"] == 2 and torch.equal(state["trace"], torch.full((2,), 2.0))
    assert state["momentum_buffer"][1] == 0 and w[1].item() == 1.0


def test_sam_buffers_follow_a_resized_parameter():
    """A parameter replaced by one of another shape between steps (``p.data = ...``): the stored g and W are
    reallocated, and the step is again w − η(w + ρ w/||w||) on ½||w||²."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=F64))
    opt = _sgd_sam([w], rho=0.5, lr=0.1)
    opt.step(_half_square_closure([w]))
    w0 = torch.tensor([1.0, 2.0, 2.0], dtype=F64)  # ||w0|| = 3
    w.data = w0.clone()
    w.grad = None
    opt.step(_half_square_closure([w]))
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (w0 + 0.5 * w0 / 3.0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_sam_authors_masking_multiplies_the_perturbed_gradient(rho):
    """``set_mask(..., freeze=False)``: g_final = g + sλ(M ⊙ g' − g) (ρ = 0: M ⊙ g), nothing frozen — on ½||w||²
    with λ = 0.5, sign min, SGD without decay: w ← w − η g_final."""
    w0 = torch.tensor([3.0, 4.0, -1.0, 2.0], dtype=F64)
    w = nn.Parameter(w0.clone())
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    opt = _sgd_sam([w], rho=rho, lamb=0.5, lr=0.1)
    opt.set_mask([mask], freeze=False)
    opt.step(_half_square_closure([w]))
    if rho == 0:
        g_final = mask * w0
    else:
        g_prime = w0 + rho * w0 / w0.norm()
        g_final = w0 + 0.5 * (mask * g_prime - w0)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g_final, rtol=0, atol=1e-14)
    assert not opt._frozen


# ============================================================================================ empirical/metrics.py
import math  # noqa: E402

import numpy as np  # noqa: E402

from empirical.metrics import (  # noqa: E402
    MetricError,
    Outputs,
    avg_gap,
    classwise,
    e_var_authors_units,
    entanglement_var,
    entanglement_wp,
    mia_efficacy,
    mia_features,
    shadow_in_indices,
    tow,
    tow_mia,
)

RT = {"retain": 99.9, "forget": 92.5, "test": 92.5}
_KEYS = "(percent, keys retain, forget, test)"


def _exact(text: str) -> str:
    """A regex that matches ``text`` and nothing longer."""
    import re
    return "^" + re.escape(text) + "$"


@pytest.mark.parametrize("metric", [
    lambda a, r: tow(a, r),
    lambda a, r: tow(a, r, signed=True),
    lambda a, r: tow_mia(a, 0.5, r, 0.5),
    lambda a, r: avg_gap(a, 0.5, r, 0.5),
])
def test_metrics_name_the_bad_accuracy_dict_exactly(metric):
    with pytest.raises(MetricError, match=_exact(f"acc lacks retain, test accuracy {_KEYS}")):
        metric({"forget": 50}, RT)
    with pytest.raises(MetricError, match=_exact(f"retrain lacks forget accuracy {_KEYS}")):
        metric(RT, {"retain": 50, "test": 50})
    with pytest.raises(MetricError, match=_exact(
            "acc accuracies must be percentages in [0, 100], got {'retain': 100.5, 'forget': 50.0, 'test': 50.0}")):
        metric({"retain": 100.5, "forget": 50, "test": 50}, RT)
    with pytest.raises(MetricError, match=_exact(
            "retrain accuracies must be percentages in [0, 100], got {'retain': 50.0, 'forget': -0.5, 'test': 50.0}")):
        metric(RT, {"retain": 50, "forget": -0.5, "test": 50})


def test_accuracy_and_mia_ranges_include_their_ends():
    """0 and 100 (percent), 0 and 1 (MIA fraction) are valid; just outside is not."""
    edge = {"retain": 100.0, "forget": 0.0, "test": 0.5}
    assert tow(edge, edge) == 1.0 and avg_gap(edge, 0.0, edge, 1.0) == 25.0
    assert tow_mia(edge, 0.0, edge, 1.0) == 0.0 and tow_mia(edge, 1.0, edge, 1.0) == 1.0
    with pytest.raises(MetricError, match=_exact("mia=1.5: MIA efficacy is a fraction in [0, 1]")):
        tow_mia(edge, 1.5, edge, 0.5)
    with pytest.raises(MetricError, match=_exact("mia_retrain=-0.1: MIA efficacy is a fraction in [0, 1]")):
        tow_mia(edge, 0.5, edge, -0.1)


def test_mia_features_of_one_hot_rows_and_input_checks():
    """Certain rows: entropy 0 (0 log 0 = 0, not nan); a confidently wrong row has modified entropy
    −log ε − log ε = 2·30·ln 10 with ε = 1e-30 (both logs clipped); float32 input is computed in float64; an
    empty input gives empty columns."""
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    f = mia_features(probs, np.array([0, 0]))
    assert f["prob"].dtype == np.float64 and f["confidence"].dtype == np.float64
    assert np.array_equal(f["entropy"][:, 0], [0.0, 0.0])
    assert f["m_entropy"][0, 0] == 0.0 and f["m_entropy"][1, 0] == pytest.approx(60 * math.log(10), rel=1e-12)
    assert np.array_equal(f["correctness"][:, 0], [1.0, 0.0]) and np.array_equal(f["confidence"][:, 0], [1.0, 0.0])
    empty = mia_features(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert empty["confidence"].shape == (0, 1) and empty["m_entropy"].shape == (0, 1)
    ok = np.full((2, 3), 1 / 3)
    with pytest.raises(MetricError, match=_exact("labels must lie in [0, 2]")):
        mia_features(ok, np.array([0, 3]))
    with pytest.raises(MetricError, match=_exact("labels must lie in [0, 2]")):
        mia_features(ok, np.array([-1, 2]))
    with pytest.raises(MetricError, match=_exact("probs must be (N, C) and labels (N,), got (3,) and (3,)")):
        mia_features(np.full(3, 1 / 3), np.array([0, 1, 2]))
    with pytest.raises(MetricError, match=_exact("probs must be (N, C) and labels (N,), got (2, 3) and (3,)")):
        mia_features(ok, np.array([0, 1, 2]))


def _one_hots(classes):
    return np.eye(classes), np.arange(classes)


def test_mia_efficacy_subsample_is_seeded_by_default_with_zero_and_drawn_without_replacement():
    """Feature ``prob``: 8 one-hot members, 1 uniform non-member, so n = 1 member is kept. A one-hot target is
    predicted a member only if it is the kept member (distance 0; another one-hot is √2 away, the uniform row
    √(7/8)). The default seed is 0: the member kept is the one ``default_rng(0).choice(8, 1)`` picks."""
    members = _one_hots(8)
    outsider = (np.full((1, 8), 1 / 8), np.array([0]))
    kept = int(np.random.default_rng(0).choice(8, 1, replace=False)[0])
    target = (np.eye(8)[[kept]], np.array([kept]))
    assert mia_efficacy(members, outsider, target, features=("prob",)) == {"prob": 0.0}
    other = int(np.random.default_rng(1).choice(8, 1, replace=False)[0])
    assert other != kept and mia_efficacy(members, outsider, target, features=("prob",), seed=1) == {"prob": 1.0}
    # balanced sets keep every member (no duplicates): each one-hot target is a member
    many = (np.tile(np.full((1, 8), 1 / 8), (8, 1)), np.zeros(8, dtype=int))
    assert mia_efficacy(members, many, members, features=("prob",), seed=5) == {"prob": 0.0}


def test_mia_efficacy_errors_name_the_feature_and_the_set():
    members = _one_hots(3)
    with pytest.raises(MetricError, match=_exact(
            "unknown MIA feature(s) loss, margin; choose from correctness, confidence, entropy, m_entropy, prob")):
        mia_efficacy(members, members, members, features=("loss", "confidence", "margin"))
    empty = (np.zeros((0, 3)), np.zeros(0, dtype=int))
    for position, name in enumerate(("shadow_in", "shadow_out", "target")):
        sets = [members, members, members]
        sets[position] = empty
        with pytest.raises(MetricError, match=_exact(f"the {name} set is empty")):
            mia_efficacy(*sets, features=("confidence",))


def test_shadow_in_indices_are_sorted_and_need_a_positive_size():
    retain = np.arange(50, 0, -1) * 3
    s = shadow_in_indices(retain, 7, seed=2)
    assert np.array_equal(s, np.sort(s)) and len(np.unique(s)) == 7
    assert len(shadow_in_indices(retain, 1, seed=2)) == 1
    with pytest.raises(MetricError, match=_exact("size=0: the shadow-in set needs at least one sample")):
        shadow_in_indices(retain, 0, seed=2)


def test_entanglement_edge_cases_by_hand():
    """Identical sets: E_Var's between term is 0, so it is within / 1e-30; E_Wp of two identical points is 1 (the
    cost matrix is all zero); a zero feature row stays zero (no nan); the authors' units clip E_Var / 1300."""
    r = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert entanglement_var(r, r.copy()) == pytest.approx(2 * 0.5 / 1e-30)
    assert entanglement_wp(np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 0.0, 0.0]])) == 1.0
    zero = np.array([[0.0, 0.0], [1.0, 0.0]])
    far = np.array([[0.0, 1.0], [0.0, 1.0]])
    # normalised: R = {0, e1} (mean e1/2), F = {e2, e2}; within = 1/4 + 0, μ = (1/4, 1/2), between = ½(5/16 + 5/16)
    assert entanglement_var(zero, far) == pytest.approx(0.25 / (5 / 16))
    assert (e_var_authors_units(650.0), e_var_authors_units(2600.0), e_var_authors_units(-1.0)) == (0.5, 1.0, 0.0)
    assert entanglement_wp(zero, far, max_points=1) == entanglement_wp(zero, far, max_points=1, seed=0)
    with pytest.raises(MetricError, match=_exact("retain and forget features differ in width: 2 vs 3")):
        entanglement_var(r, np.ones((2, 3)))
    with pytest.raises(MetricError, match=_exact("retain and forget features differ in width: 2 vs 3")):
        entanglement_wp(r, np.ones((2, 3)))
    with pytest.raises(MetricError, match=_exact("max_points=0: must be positive")):
        entanglement_wp(r, r, max_points=0)
    with pytest.raises(MetricError, match=_exact("forget features must be a non-empty (N, D) array, got shape (0, 2)")):
        entanglement_var(r, np.zeros((0, 2)))
    with pytest.raises(MetricError, match=_exact("retain features must be a non-empty (N, D) array, got shape (2,)")):
        entanglement_var(np.ones(2), r)


def test_entanglement_wp_default_seed_is_zero():
    rng = np.random.default_rng(8)
    big_r, big_f = rng.normal(size=(60, 3)), rng.normal(size=(50, 3))
    assert entanglement_wp(big_r, big_f, max_points=5) == entanglement_wp(big_r, big_f, max_points=5, seed=0)
    assert entanglement_wp(big_r, big_f, max_points=5) != entanglement_wp(big_r, big_f, max_points=5, seed=1)


def test_classwise_weights_are_class_sizes_in_R_and_F():
    """Class 0: 4 + 6 = 10 rows, class 1: 10 + 2 = 12 rows (class 2 only in R is skipped)."""
    rng = np.random.default_rng(9)
    r, f = rng.normal(size=(17, 3)), rng.normal(size=(8, 3))
    yr, yf = np.array([0] * 4 + [1] * 10 + [2] * 3), np.array([0] * 6 + [1] * 2)
    per = [entanglement_var(r[yr == c], f[yf == c]) for c in (0, 1)]
    assert classwise(entanglement_var, r, yr, f, yf) == pytest.approx((10 * per[0] + 12 * per[1]) / 22)
    message = _exact("one label per feature row is needed for the class-wise metric")
    with pytest.raises(MetricError, match=message):
        classwise(entanglement_var, r, yr[:-1], f, yf)
    with pytest.raises(MetricError, match=message):
        classwise(entanglement_var, r, yr, f, yf[:-1])
    with pytest.raises(MetricError, match=_exact("no class has samples in both R and F (class-wise forgetting?): "
                                                 "class-wise entanglement is undefined")):
        classwise(entanglement_var, r, yr, f, yf + 3)


def test_outputs_accuracy_in_percent_and_nan_when_empty():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert Outputs(probs, np.array([0, 1, 1, 1]), np.zeros((4, 1))).accuracy == 75.0
    assert math.isnan(Outputs(np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros((0, 1))).accuracy)


def test_entanglement_is_computed_in_float64_and_names_each_bad_set():
    """float32 features are converted to float64 first: the same values as float64 input, bit for bit."""
    rng = np.random.default_rng(10)
    r, f = rng.normal(size=(9, 4)).astype(np.float32), rng.normal(size=(7, 4)).astype(np.float32)
    assert entanglement_var(r, f) == entanglement_var(r.astype(np.float64), f.astype(np.float64))
    assert entanglement_wp(r, f) == entanglement_wp(r.astype(np.float64), f.astype(np.float64))
    good, shape = np.eye(2), "features must be a non-empty (N, D) array, got shape"
    for metric in (entanglement_var, entanglement_wp):
        with pytest.raises(MetricError, match=_exact(f"retain {shape} (0, 2)")):
            metric(np.zeros((0, 2)), good)
        with pytest.raises(MetricError, match=_exact(f"forget {shape} (2,)")):
            metric(good, np.ones(2))


def test_entanglement_wp_default_caps_at_1000_points():
    rng = np.random.default_rng(11)
    r, f = rng.normal(size=(1001, 2)), rng.normal(size=(1001, 2))
    assert entanglement_wp(r, f) == entanglement_wp(r, f, max_points=1000, seed=0)
    assert entanglement_wp(r, f) != entanglement_wp(r, f, max_points=1001)


def test_mia_efficacy_is_an_rbf_svc_with_c_3_and_gamma_auto():
    """On overlapping member / non-member confidences the attack is exactly SVC(C=3, gamma='auto', kernel='rbf')
    fitted on the balanced shadow sets (a different C or gamma moves the boundary and the efficacy)."""
    from sklearn.svm import SVC

    rng = np.random.default_rng(12)
    members, non_members = _probs_with_confidence(rng, 60, 0.7), _probs_with_confidence(rng, 60, 0.55)
    target = _probs_with_confidence(rng, 200, 0.62)
    got = mia_efficacy(members, non_members, target, features=("confidence", "entropy"))
    for name in ("confidence", "entropy"):
        x = np.concatenate([mia_features(*members)[name], mia_features(*non_members)[name]])
        y = np.concatenate([np.ones(60), np.zeros(60)])
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        assert got[name] == float(np.mean(clf.predict(mia_features(*target)[name]) == 0))


def _probs_with_confidence(rng, n, mean, classes=4):
    labels = rng.integers(0, classes, n)
    p_y = np.clip(rng.normal(mean, 0.15, n), 0.26, 0.99)
    probs = np.tile(((1 - p_y) / (classes - 1))[:, None], (1, classes))
    probs[np.arange(n), labels] = p_y
    return probs, labels


# ====================================================================================== simulations/unlearning.py
def test_every_registered_method_carries_its_name_function_fields_and_description():
    from simulations.config import FIELD_NAMES
    from simulations.unlearning import METHODS

    for name, method in METHODS.items():
        assert method.name == name and callable(method.run) and method.run.__name__ != "wrap"
        assert isinstance(method.uses, tuple) and method.uses and set(method.uses) <= set(FIELD_NAMES), name
        assert isinstance(method.description, str) and method.description, name


def test_uniform_relabelling_is_the_relabel_stream_at_counter_0():
    """forget_target="uniform": a forget sample's new label is +1 where hash_uniform(STREAM_RELABEL, key, 0, n) < ½
    and −1 otherwise; retain samples keep theirs."""
    import numpy as np
    from _helpers import tiny

    from simulations.data import STREAM_RELABEL, hash_uniform
    from simulations.engine import GroupRun
    from simulations.unlearning import relabelled

    run = GroupRun([tiny(unlearn_method="rl", forget_target="uniform", n=40, forget_size=30)])
    u = hash_uniform(STREAM_RELABEL, run.keys, 0, run.cfg.n)
    target = torch.as_tensor(np.where(u < 0.5, 1, -1)).to(run.labels.dtype)
    labels = relabelled(run)
    assert torch.equal(labels, torch.where(run.forget, target, run.labels))
    assert set(labels[run.forget].tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("granularity", ["filter", "coordinate"])
def test_forget_part_mask_on_a_batch_and_with_a_tiny_fraction(granularity):
    """Two configurations in one batch (different forget sets): each row's mask holds its own top
    ceil(fraction · size) scores of |∇L(F)|; a fraction below one entry still marks exactly one."""
    from _helpers import tiny

    from simulations.engine import GroupRun
    from simulations.unlearning import forget_part_mask

    cfg = tiny(backend="weights", unlearn_method="sharp_minmax", mask_granularity=granularity, mask_fraction=0.3,
               n=12, forget_size=3)
    run = GroupRun([cfg, cfg.replace(seed=cfg.seed + 1)])
    g = torch.Generator().manual_seed(3)
    state = run.backend.init_state() + 0.2 * torch.randn(run.backend.shape, generator=g, dtype=torch.float64)
    mask = forget_part_mask(run, state)
    weights = run.forget.double() / run.forget.sum(dim=1, keepdim=True)
    grad = run.gradient(state, run.labels, weights)
    score = run.backend.filter_sq_norm(grad) if granularity == "filter" else grad.abs()
    size = score[0].numel()
    for c in range(2):
        assert int(mask[c].sum()) == math.ceil(0.3 * size)
        assert float(score[c][mask[c] == 1].min()) >= float(score[c][mask[c] == 0].max())
    assert not torch.equal(run.forget[0], run.forget[1])
    tiny_run = GroupRun([cfg.replace(mask_fraction=1e-6)])
    assert int(forget_part_mask(tiny_run, state[:1]).sum()) == 1


# ========================================================================================== simulations/optim.py
def _sim_setup(backend="weights", configs=1, **overrides):
    from _helpers import tiny

    from simulations.engine import GroupRun

    cfg = tiny(backend=backend, d=25, n=8, m=4, sigma_0=0.3, label_flip=0.25, **overrides)
    run = GroupRun([cfg] * configs)
    g = torch.Generator().manual_seed(1)
    W = run.backend.init_state() + 0.2 * torch.randn(run.backend.shape[1:], generator=g, dtype=F64)
    weights = torch.full((configs, cfg.n), 1.0 / cfg.n, dtype=F64)
    return run, W, weights


def _t(*values):
    return torch.tensor(values, dtype=F64)


def test_sam_step_is_not_adaptive_by_default():
    from simulations.optim import sam_step

    run, W, weights = _sim_setup()
    args = (run.backend, run.act, W, run.labels, weights, _t(0.7), _t(0.4))
    default, _ = sam_step(*args)
    plain, _ = sam_step(*args, adaptive=False)
    asam, _ = sam_step(*args, adaptive=True)
    assert torch.equal(default, plain) and not torch.allclose(default, asam, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_sam_step_with_a_zero_rate_keeps_the_state_but_still_perturbs(backend):
    """lr = 0: no step, but the perturbed pre-activations (StepInfo) are those at W + ε with the true gradient's ε,
    the same as for a positive rate (ε is scale-free) and not those at W."""
    from _helpers import joined

    from simulations.optim import sam_step

    run, W, weights = _sim_setup(backend)
    new, info = sam_step(run.backend, run.act, W, run.labels, weights, _t(0.0), _t(0.4))
    _, moving = sam_step(run.backend, run.act, W, run.labels, weights, _t(0.5), _t(0.4))
    assert torch.equal(new, W)
    at_w = joined(run.backend.expand(run.backend.basis_preacts(W)))
    torch.testing.assert_close(joined(info.perturbed_preacts), joined(moving.perturbed_preacts), rtol=1e-12,
                               atol=1e-14)
    assert float((joined(info.perturbed_preacts) - at_w).abs().max()) > 1e-4


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_normalises_each_configuration_of_a_batch_separately(adaptive):
    """Two copies of one configuration in a batch, radii 0.3 and 0.6: each row is that radius's single-config step
    (the norm in ε is per configuration, not over the batch)."""
    from simulations.optim import sam_step

    run1, W1, w1 = _sim_setup()
    run2, W2, w2 = _sim_setup(configs=2)
    assert torch.equal(W2[0], W2[1]) and torch.equal(W2[:1], W1)
    both, _ = sam_step(run2.backend, run2.act, W2, run2.labels, w2, _t(0.5, 0.5), _t(0.3, 0.6), _t(1.0, -0.5),
                       adaptive=adaptive)
    for row, (rho, mix) in enumerate(((0.3, 1.0), (0.6, -0.5))):
        single, _ = sam_step(run1.backend, run1.act, W1, run1.labels, w1, _t(0.5), _t(rho), _t(mix),
                             adaptive=adaptive)
        torch.testing.assert_close(both[row], single[0], rtol=1e-12, atol=1e-14)


def test_gram_sam_step_filter_masks_of_ones_and_zeros():
    """Gram backend (per-filter signal coefficients, 3-d): an all-ones filter mask is the unmasked step exactly, an
    all-zero mask leaves the state unchanged."""
    from simulations.optim import sam_step

    run, W, weights = _sim_setup("gram")
    args = (run.backend, run.act, W, run.labels, weights, _t(0.7), _t(0.4))
    plain, _ = sam_step(*args)
    ones, _ = sam_step(*args, filter_mask=torch.ones(W.shape[:3], dtype=F64))
    zeros, _ = sam_step(*args, filter_mask=torch.zeros(W.shape[:3], dtype=F64))
    assert torch.equal(ones, plain) and torch.equal(zeros, W) and not torch.equal(plain, W)


def test_mia_attack_is_built_with_c_3(monkeypatch):
    """The attack's hyperparameters themselves (a C of 4 predicts the same on easy data, so the construction is
    checked): every SVC the attack fits has C = 3, gamma 'auto' and the RBF kernel."""
    import sklearn.svm

    built = []

    class Recording(sklearn.svm.SVC):
        def fit(self, x, y, sample_weight=None):
            built.append(self.get_params())
            return super().fit(x, y, sample_weight)

    monkeypatch.setattr(sklearn.svm, "SVC", Recording)
    rng = np.random.default_rng(3)
    mia_efficacy(_probs_with_confidence(rng, 20, 0.8), _probs_with_confidence(rng, 20, 0.5),
                 _probs_with_confidence(rng, 10, 0.6), features=("confidence",))
    assert built and all((p["C"], p["gamma"], p["kernel"]) == (3, "auto", "rbf") for p in built)


def test_entanglement_wp_takes_min_of_both_set_sizes_and_any_positive_largest_cost():
    """m = min(max_points, |R|, |F|): with |R| = 2 < |F| = 3 the subsamples have 2 points each (all costs √2 → E_Wp
    exactly 0). A largest cost below 1 is still a distance: two single points 30° apart give E_Wp = 0, not the
    "identical sets" value 1."""
    from empirical.metrics import entanglement_wp

    r = np.array([[1.0, 0.0], [1.0, 0.0]])
    f = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert entanglement_wp(r, f) == 0.0
    a = np.deg2rad(30)
    assert entanglement_wp(np.array([[1.0, 0.0]]), np.array([[np.cos(a), np.sin(a)]])) == 0.0
    assert entanglement_wp(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])) == 1.0  # the same point once normalised


def test_sam_mask_moves_to_its_parameter_device():
    """A mask built on the CPU for a parameter elsewhere (a GPU run) is kept on the parameter's device. CPU-only
    stand-in for the GPU: a parameter on "meta", whose tensors cannot be mixed with CPU ones."""
    w = nn.Parameter(torch.zeros(2, 3, device="meta"))
    opt = SAM([w], torch.optim.SGD, rho=0.1, lr=0.1)
    opt.set_mask([torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])])
    assert opt._frozen[w].device.type == "meta" and opt._frozen[w].shape == (2, 3)
    opt.set_mask([torch.ones(2, 3)], freeze=False)
    assert opt._scale[w].device.type == "meta"


def test_eval_batch_size_is_1024_on_cuda_and_256_elsewhere():
    from empirical.metrics import eval_batch_size

    assert eval_batch_size(torch.device("cuda")) == 1024 and eval_batch_size("cuda:1") == 1024
    assert eval_batch_size(torch.device("cpu")) == 256 and eval_batch_size("cpu") == 256


def test_model_layout_follows_the_first_convolution():
    """channels_last when the model's first 4-d parameter is channels_last (and not plainly contiguous), else the
    batch as it is; 2-d and 5-d parameters before it do not decide."""
    from empirical.metrics import model_layout

    x = torch.randn(2, 3, 4, 4)
    plain = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(3, 3, 3))
    assert model_layout(plain)(x) is x
    cl = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(3, 3, 3)).to(memory_format=torch.channels_last)
    y = model_layout(cl)(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous() and torch.equal(y, x)
    # a 1×1 convolution is both contiguous and channels_last: it says nothing, so the batch stays as it is
    one = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 3)).to(memory_format=torch.channels_last)
    assert model_layout(one)(x) is x
    # the first 4-d parameter decides even when a later one is channels_last
    mixed = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv2d(3, 3, 3))
    mixed[1].to(memory_format=torch.channels_last)
    assert model_layout(mixed)(x) is x
    # a 5-d parameter is not a convolution of this pipeline
    conv3d = nn.Sequential(nn.Conv3d(3, 3, 3)).to(memory_format=torch.channels_last_3d)
    assert model_layout(conv3d)(x) is x
