"""Defining properties of the empirical unlearning methods and metrics (docs/protocol.md), written so that a
wrong sign, a wrong data set or a wrong scale fails: each method's step against a hand computation on a tiny network
(gradient ascent, SCRUB's KL direction and T² scale, Sharp MinMax's SAM-min / SAM-max split and radii), the index
sets and labels every method's epoch passes over in the real loop, BatchNorm statistics under SAM steps, MIA efficacy
scored on F, and ToW on both sides of the retrained model's accuracies."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_empirical_trainer import tiny, write_fixture
from torch import nn
from torch.func import functional_call

from empirical.augment import DeviceData
from empirical.methods import METHODS, Scrub
from empirical.metrics import tow
from empirical.sam import SAM
from empirical.steps import optimizer_step
from empirical.trainer import train
from empirical.unlearn import UnlearnConfig, UnlearnRun, unlearn

CPU = torch.device("cpu")
C = 4  # classes of the hand-checked runs


class Small(nn.Module):
    """A tiny classifier: 8×8 average pooling of the image, one tanh hidden layer (BatchNorm before it if ``bn``)."""

    def __init__(self, bn: bool = False):
        super().__init__()
        norm = [nn.BatchNorm1d(6)] if bn else []
        self.body = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(48, 6), *norm, nn.Tanh(), nn.Linear(6, C))

    def forward(self, x):
        return self.body(x)


class FixedLogits(nn.Module):
    """Logits that are the module's only parameter, one row per sample of the batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits[: len(x)]


def make_run(method: str, model: nn.Module | None = None, masks=None, n_retain: int = 8, n_forget: int = 4,
             **settings) -> UnlearnRun:
    """An :class:`UnlearnRun` of ``method`` on random images (R = the first ``n_retain``, F = the rest), plain steps:
    no momentum, no weight decay unless given."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = n_retain + n_forget
    data = DeviceData(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, C, n))
    prepared = SimpleNamespace(data=data, retain_idx=torch.arange(n_retain), forget_idx=torch.arange(n_retain, n),
                               num_classes=C)
    base = dict(device="cpu", bf16=False, channels_last=False, momentum=0.0, weight_decay=0.0, lr=0.5,
                batch_size=n_retain)
    cfg = UnlearnConfig(method=method, **{**base, **settings})
    run = UnlearnRun(cfg, model if model is not None else Small(), prepared, CPU, torch.Generator().manual_seed(0))
    run.masks = masks
    run.optimizers = METHODS[method].setup(run)
    return run


def batch(run: UnlearnRun, idx: torch.Tensor):
    """The samples ``idx`` as one batch, in order, without augmentation."""
    return next(run.prepared.data.batches(idx, len(idx)))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def grad(model: nn.Module, w: dict, objective) -> dict[str, torch.Tensor]:
    """∇ objective(forward) at the weights ``w`` (``forward`` is ``model`` with those weights)."""
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    loss = objective(lambda x: functional_call(model, params, (x,)))
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def sam_direction(model, w, objective, rho: float, sign: str, adaptive: bool = False) -> dict[str, torch.Tensor]:
    """By hand: g, ε = ρ T² g / ||T g|| (T = |w| for ASAM, one global norm), g' = ∇ at w + ε; the final gradient is g'
    for SAM-min (λ = 1) and 2g − g' for SAM-max."""
    g = grad(model, w, objective)
    scale = {k: w[k].abs() if adaptive else torch.ones_like(w[k]) for k in w}
    norm = torch.sqrt(sum(((scale[k] * g[k]) ** 2).sum() for k in w))
    perturbed = grad(model, {k: w[k] + rho * scale[k] ** 2 * g[k] / norm for k in w}, objective)
    return {k: perturbed[k] if sign == "min" else 2 * g[k] - perturbed[k] for k in w}


def assert_weights(model: nn.Module, expected: dict, **tol):
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), expected[k], **tol, msg=k)


def ce(x, y):
    return lambda f: F.cross_entropy(f(x), y)


# --------------------------------------------------------------------------------------------------- GA
def test_gradient_ascent_passes_over_F_and_steps_up_its_loss_by_lr_times_the_gradient():
    run = make_run("ga", lr=0.5)
    (phase,) = METHODS["ga"].phases(run, 0)
    assert torch.equal(phase.indices, run.forget)  # F only
    x, y = batch(run, run.forget)
    w0 = weights(run.model)
    g = grad(run.model, w0, ce(x, y))
    with torch.no_grad():
        before = float(ce(x, y)(run.model))
    loss = METHODS["ga"].step(run, phase, x, y, 0)
    assert float(loss) == pytest.approx(-before, rel=1e-6)  # the objective is −CE(F)
    assert_weights(run.model, {k: w0[k] + 0.5 * g[k] for k in w0})  # ascent: +lr ∇CE, not −lr ∇CE
    with torch.no_grad():
        assert float(ce(x, y)(run.model)) > before


# ------------------------------------------------------------------------------------------- RL, SalUn
@pytest.mark.parametrize("method", ["rl", "salun"])
def test_random_labelling_passes_over_R_and_F_and_redraws_only_the_labels_of_F(method):
    masks = [torch.ones_like(p, dtype=torch.bool) for p in Small().parameters()] if method == "salun" else None
    run = make_run(method, masks=masks, rl_exclude_true=True)
    (phase,) = METHODS[method].phases(run, 0)
    assert sorted(phase.indices.tolist()) == list(range(12))  # R ∪ F, each sample once
    true = run.prepared.data.labels
    draws = [phase.relabel() for _ in range(3)]
    for labels in draws:
        assert torch.equal(labels[run.retain], true[run.retain])  # R keeps its true labels
        assert (labels[run.forget] != true[run.forget]).all()  # F relabelled (from the other classes)
    assert not all(torch.equal(draws[0], d) for d in draws[1:])  # a fresh draw each epoch


# ------------------------------------------------------------------------------------------------- SCRUB
STUDENT = [[2.0, -1.0, 0.5, 0.0], [0.0, 1.5, -0.5, 1.0]]
TEACHER = [[0.5, 0.5, 2.0, -1.0], [1.0, -2.0, 0.0, 3.0]]
LABELS = [0, 3]


def _softmax(v, t=1.0):
    e = [math.exp(a / t) for a in v]
    return [a / sum(e) for a in e]


def _kl(p, q):  # KL(p ‖ q)
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _scrub_run(t: float, **settings):
    run = make_run("scrub", model=FixedLogits(STUDENT), n_retain=2, n_forget=2, scrub_temperature=t, **settings)
    run.teacher = FixedLogits(TEACHER).eval().requires_grad_(False)
    return run, torch.zeros(2, 3, 32, 32, dtype=torch.float64), torch.tensor(LABELS)


@pytest.mark.parametrize("t", [4.0, 2.5])
def test_scrub_kl_is_t_squared_times_kl_of_teacher_to_student(t):
    """SCRUB's distillation loss (its DistillKL: ``kl_div(log p_s, p_t) · T²``) is T² KL(p_teacher ‖ p_student) at
    temperature T, averaged over the batch — by hand on two rows of logits where the other direction and the other
    scale differ. (The KL is computed in fp32, hence the tolerance.)"""
    run, x, y = _scrub_run(t)
    ce_loss, kl = (v.detach() for v in Scrub.distill(run, x, y))
    rows = list(zip(STUDENT, TEACHER))
    by_hand = t * t * sum(_kl(_softmax(tt, t), _softmax(s, t)) for s, tt in rows) / 2
    reversed_ = t * t * sum(_kl(_softmax(s, t), _softmax(tt, t)) for s, tt in rows) / 2
    assert abs(by_hand - reversed_) > 0.05 * by_hand and t != 1  # the test can tell the directions and scales apart
    assert float(kl) == pytest.approx(by_hand, rel=1e-6)
    assert float(ce_loss) == pytest.approx(-sum(math.log(_softmax(s)[c]) for s, c in zip(STUDENT, LABELS)) / 2,
                                           rel=1e-6)  # CE at temperature 1


def test_scrub_max_step_ascends_the_kl_on_F_and_min_step_descends_gamma_ce_plus_beta_kl_on_R():
    """The gradient of T² KL(p_t ‖ softmax(s/T)) in the student logits s is T (p_s − p_t) / B: the max-step moves the
    logits by +lr T (p_s − p_t) / B; the min-step by −lr (γ (softmax(s) − onehot) + β T (p_s − p_t)) / B."""
    t, lr, beta, gamma = 4.0, 0.5, 0.7, 0.6
    run, x, y = _scrub_run(t, lr=lr, scrub_beta=beta, scrub_gamma=gamma, scrub_msteps=2)
    kinds = [(p.kind, p.indices.tolist()) for p in METHODS["scrub"].phases(run, 0)]
    assert kinds == [("scrub_max", run.forget.tolist()), ("scrub_min", run.retain.tolist())]
    assert [p.kind for p in METHODS["scrub"].phases(run, 2)] == ["scrub_min"]  # max-steps while epoch < msteps
    max_phase, min_phase = METHODS["scrub"].phases(run, 0)

    def kl_grad(s):
        return np.array([[t * (a - b) / 2 for a, b in zip(_softmax(row, t), _softmax(tt, t))]
                         for row, tt in zip(s, TEACHER)])

    s0 = np.array(STUDENT)
    kl0 = Scrub.distill(run, x, y)[1].detach()
    loss = METHODS["scrub"].step(run, max_phase, x, y, 0)
    assert float(loss) == pytest.approx(-float(kl0), rel=1e-6)  # minimises −KL
    s1 = s0 + lr * kl_grad(s0)
    np.testing.assert_allclose(run.model.logits.detach().numpy(), s1, rtol=1e-6, atol=1e-7)

    ce1, kl1 = (v.detach() for v in Scrub.distill(run, x, y))
    loss = METHODS["scrub"].step(run, min_phase, x, y, 1)
    assert float(loss) == pytest.approx(gamma * float(ce1) + beta * float(kl1), rel=1e-6)
    onehot = np.eye(C)[LABELS]
    ce_grad = (np.array([_softmax(row) for row in s1]) - onehot) / 2
    s2 = s1 - lr * (gamma * ce_grad + beta * kl_grad(s1))
    np.testing.assert_allclose(run.model.logits.detach().numpy(), s2, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------ Sharp MinMax
def _masks(model: nn.Module) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(p.shape, generator=gen) < 0.5 for p in model.parameters()]


def _sharp_minmax_step(optimizer: str, **settings):
    model = Small()
    masks = _masks(model)
    alpha = 0.6
    run = make_run("sharp_minmax", model=model, masks=masks, optimizer=optimizer, alpha=alpha, **settings)
    (phase,) = METHODS["sharp_minmax"].phases(run, 0)
    assert torch.equal(phase.indices, run.retain)  # an epoch is a pass over R, one F batch per step
    x, y = batch(run, run.retain)
    xf, yf = batch(run, run.forget)
    run.next_forget = lambda: (xf, yf)
    w0 = weights(model)
    METHODS["sharp_minmax"].step(run, phase, x, y, 0)
    mask = dict(zip(w0, masks))
    return run, model, mask, w0, alpha, (x, y), (xf, yf)


@pytest.mark.parametrize("optimizer, rho, forget_rho", [("sam", 0.3, -1.0), ("sam", 0.2, 0.6), ("asam", 0.5, 2.0)])
def test_sharp_minmax_is_sam_min_on_R_over_W_R_then_sam_max_ascent_on_F_over_W_F(optimizer, rho, forget_rho):
    """One step by hand (λ = 1, lr 0.5, no momentum, no decay): W_R = ¬M moves by −lr g'(α CE(R)) at radius ρ; then,
    from there, W_F = M moves by −lr (2g − g')(−(1−α) CE(F)) at the forget radius (``forget_rho``, or ρ when < 0):
    sharpness *maximisation* of an *ascent* on F. A min-step on F, a descent on F, a forget radius of 0 or ρ in place
    of ``forget_rho``, or the two masks swapped all fail."""
    run, model, mask, w0, alpha, (x, y), (xf, yf) = _sharp_minmax_step(optimizer, rho=rho, forget_rho=forget_rho)
    adaptive = optimizer == "asam"
    radius = rho if forget_rho < 0 else forget_rho
    assert [g["rho"] for o in run.optimizers for g in o.param_groups] == [rho, radius]
    g_r = sam_direction(model, w0, lambda f: alpha * F.cross_entropy(f(x), y), rho, "min", adaptive)
    w1 = {k: torch.where(mask[k], w0[k], w0[k] - 0.5 * g_r[k]) for k in w0}
    g_f = sam_direction(model, w1, lambda f: -(1 - alpha) * F.cross_entropy(f(xf), yf), radius, "max", adaptive)
    w2 = {k: torch.where(mask[k], w1[k] - 0.5 * g_f[k], w1[k]) for k in w0}
    assert_weights(model, w2, rtol=1e-5, atol=1e-6)
    # the step is visible at this tolerance: the forget part alone, with a min-step instead, lands elsewhere
    g_min = sam_direction(model, w1, lambda f: -(1 - alpha) * F.cross_entropy(f(xf), yf), radius, "min", adaptive)
    assert max(float((0.5 * (g_min[k] - g_f[k]))[mask[k]].abs().max()) for k in w0) > 1e-3


def test_sharp_minmax_with_sgd_is_the_masked_neggrad_ablation():
    """``optimizer=sgd`` is the ablation "masked NegGrad with SGD on both parts"
    (docs/protocol.md#unlearning-methods): both radii are 0 — W_R descends α CE(R), then W_F ascends (1−α) CE(F)."""
    run, model, mask, w0, alpha, (x, y), (xf, yf) = _sharp_minmax_step("sgd", rho=0.3)
    g_r = grad(model, w0, lambda f: alpha * F.cross_entropy(f(x), y))
    w1 = {k: torch.where(mask[k], w0[k], w0[k] - 0.5 * g_r[k]) for k in w0}
    g_f = grad(model, w1, lambda f: (1 - alpha) * F.cross_entropy(f(xf), yf))
    assert_weights(model, {k: torch.where(mask[k], w1[k] + 0.5 * g_f[k], w1[k]) for k in w0}, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ BatchNorm statistics under SAM
def _bn_batch():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(10, 3, 32, 32, generator=gen) * 3, torch.randint(0, C, (10,), generator=gen)


@pytest.mark.parametrize("sam", [True, False])
def test_optimizer_step_lets_batchnorm_statistics_absorb_the_unperturbed_pass_only(sam):
    torch.manual_seed(0)
    model, (x, y) = Small(bn=True), _bn_batch()
    reference = copy.deepcopy(model)
    reference(x)  # one plain train-mode forward
    opt = SAM(model.parameters(), torch.optim.SGD, rho=2.0, lr=0.1) if sam else torch.optim.SGD(
        model.parameters(), lr=0.1)
    optimizer_step(opt, model, lambda: F.cross_entropy(model(x), y))
    bn, ref = model.body[3], reference.body[3]
    assert int(bn.num_batches_tracked) == 1 and bn.track_running_stats
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=0, atol=0)
    # the perturbed weights give other batch statistics, so a second absorbed pass would show
    perturbed = copy.deepcopy(reference)
    perturbed.body[2].weight.data.add_(1.0)
    perturbed(x)
    assert (perturbed.body[3].running_mean - ref.running_mean).abs().max() > 1e-3


def test_unlearning_steps_under_sam_keep_batchnorm_statistics_of_the_unperturbed_pass():
    run = make_run("ft", model=Small(bn=True), optimizer="sam", rho=2.0)
    reference = copy.deepcopy(run.model)
    x, y = _bn_batch()
    reference(x)
    (phase,) = METHODS["ft"].phases(run, 0)
    METHODS["ft"].step(run, phase, x, y, 0)
    bn = run.model.body[3]
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, reference.body[3].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, reference.body[3].running_var, rtol=0, atol=0)


# ---------------------------------------------------------------------------- the loop over real phases
@pytest.fixture(scope="module")
def small_pretrained(tmp_path_factory):
    root = write_fixture(tmp_path_factory.mktemp("cifar"), per_class=4)
    out = tmp_path_factory.mktemp("pre")
    train(tiny(str(root), epochs=1, batch_size=40, forget_size=20), out, progress=False)
    return out


# what each epoch of each method passes over in order (R, F or R ∪ F); neggrad and sharp_minmax also draw one F
# batch per step from a stream of their own
PASSES = {"ft": ["R"], "ga": ["F"], "rl": ["RF"], "neggrad": ["R"], "l1_sparse": ["R"], "scrub": ["F", "R"],
          "salun": ["RF"], "sharp_minmax": ["R"]}
STREAMS = {"neggrad", "sharp_minmax"}


@pytest.mark.parametrize("method", sorted(PASSES))
def test_each_method_passes_over_its_own_sets_in_the_unlearning_loop(small_pretrained, tmp_path, monkeypatch,
                                                                     method):
    """Spy on the batches the generic loop asks for (shuffled, augmented passes; evaluation and the saliency mask
    neither shuffle nor augment): two epochs, SCRUB's max-step in the first only; RL and SalUn pass over R ∪ F with
    F's labels redrawn (from the other classes) each epoch and every other label true."""
    assert set(PASSES) == set(METHODS)
    from empirical.data import load_split

    seen = []
    original = DeviceData.batches

    def spy(self, indices, batch_size, shuffle=False, augment=False, generator=None, labels=None, **kw):
        if shuffle:
            seen.append(dict(seed=generator.initial_seed(), idx=np.sort(indices.cpu().numpy()), true=self.labels,
                             labels=None if labels is None else labels.clone(), augment=augment))
        return original(self, indices, batch_size, shuffle=shuffle, augment=augment, generator=generator,
                        labels=labels, **kw)

    monkeypatch.setattr(DeviceData, "batches", spy)
    own = {"scrub": dict(scrub_msteps=1), "rl": dict(rl_exclude_true=True),
           "salun": dict(rl_exclude_true=True, mask_fraction=0.5)}.get(method, {})
    unlearn(UnlearnConfig(method=method, device="cpu", bf16=False, channels_last=False, batch_size=40, epochs=2,
                          lr=0.01, **own), small_pretrained, tmp_path / method, progress=False)
    split = load_split(small_pretrained / "split.npz")
    sets = {"R": np.sort(split["retain"]), "F": np.sort(split["forget"]), "RF": np.sort(split["train"])}
    assert len(sets["RF"]) == len(sets["R"]) + len(sets["F"])
    loop = [s for s in seen if s["seed"] == 0]  # the loop's generator (seed 0); the forget stream's is seed 1
    stream = [s for s in seen if s["seed"] == 1]
    expected = PASSES[method] + (["R"] if method == "scrub" else PASSES[method])  # scrub_msteps=1: max-step once
    steps = 2 * math.ceil(len(sets["R"]) / 40)
    assert len(loop) == len(expected) and len(stream) == (steps if method in STREAMS else 0)  # one F batch a step
    for s, name in zip(loop, expected):
        assert np.array_equal(s["idx"], sets[name]) and s["augment"], name
    for s in stream:
        assert np.array_equal(s["idx"], sets["F"]) and s["labels"] is None
    if method in ("rl", "salun"):
        forget = torch.as_tensor(sets["F"])
        others = torch.ones(len(loop[0]["true"]), dtype=torch.bool)
        others[forget] = False
        for s in loop:
            assert torch.equal(s["labels"][others], s["true"][others])  # R (and everything else) keeps its labels
            assert (s["labels"][forget] != s["true"][forget]).all()
        assert not torch.equal(loop[0]["labels"], loop[1]["labels"])  # redrawn each epoch
    else:
        assert all(s["labels"] is None for s in loop)


# ----------------------------------------------------------------------------------------------- metrics
class Stub(nn.Module):
    """``features``: the three channel values of the top-left pixel; ``classifier``: logit 10·x₀ for class 0, 0
    for the others. A bright image is predicted class 0 with confidence ≈ 1, a dark one ≈ uniformly."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(3, C)
        with torch.no_grad():
            self.classifier.weight.zero_()
            self.classifier.bias.zero_()
            self.classifier.weight[0, 0] = 10.0

    def features(self, x):
        return x[:, :, 0, 0]

    def forward(self, x):
        return self.classifier(self.features(x))


def test_mia_efficacy_is_scored_on_the_forget_set(monkeypatch):
    """R and the validation set are confidently fit (like members), F and the test set are not: every F sample looks
    like a non-member, so the efficacy on F is 1 — scored on R or on the validation set it would be 0."""
    from empirical.evaluate import describe

    rng = np.random.default_rng(0)

    def images(n, bright):
        level = rng.integers(245, 256, n) if bright else rng.integers(0, 11, n)
        return np.broadcast_to(level[:, None, None, None], (n, 32, 32, 3)).astype(np.uint8)

    kinds = [True] * 20 + [False] * 10 + [True] * 10  # R, F, val
    x = np.concatenate([images(1, k) for k in kinds])
    data = DeviceData(x, np.zeros(len(x), dtype=np.int64))
    test = DeviceData(images(20, False), np.zeros(20, dtype=np.int64))
    prepared = SimpleNamespace(data=data, test=test, retain_idx=torch.arange(20), forget_idx=torch.arange(20, 30),
                               val_idx=torch.arange(30, 40))
    result = describe(Stub(), prepared, CPU, mia_features=("confidence", "entropy"), wp_points=10)
    assert result["mia_efficacy"] == {"confidence": 1.0, "entropy": 1.0}
    assert result["accuracy"] == {"retain": 100.0, "forget": 100.0, "test": 100.0, "val": 100.0}
    # the attack's sets exactly: shadow-in a sample of R (all of it here: |R| = |test|), shadow-out the test set,
    # target F
    import empirical.evaluate as evaluate_module
    from empirical.metrics import model_outputs

    calls = []
    monkeypatch.setattr(evaluate_module, "mia_efficacy", lambda *sets, **kw: calls.append(sets) or {})
    describe(Stub(), prepared, CPU, mia_features=("confidence",), wp_points=10)
    (shadow_in, shadow_out, target), = calls
    for got, (images, idx) in ((shadow_in, (data, prepared.retain_idx)), (shadow_out, (test, torch.arange(20))),
                               (target, (data, prepared.forget_idx))):
        want = model_outputs(Stub(), images, idx, CPU)
        np.testing.assert_array_equal(got[0], want.probs)
        np.testing.assert_array_equal(got[1], want.labels)


RT = {"retain": 95.0, "forget": 60.0, "test": 80.0}


@pytest.mark.parametrize("key", ["retain", "forget", "test"])
@pytest.mark.parametrize("delta", [4.0, -4.0])
def test_tow_penalises_each_accuracy_by_its_distance_from_retrain_on_either_side(key, delta):
    """ToW's factor for each accuracy is 1 − |A − A_rt| / 100 (percent): 0.96 four points above and four below;
    the authors' signed variant rewards RA and TA above and FA below the retrained model (1.04)."""
    acc = {**RT, key: RT[key] + delta}
    assert tow(acc, RT) == pytest.approx(0.96, abs=1e-12)
    rewarded = delta < 0 if key == "forget" else delta > 0
    assert tow(acc, RT, signed=True) == pytest.approx(1.04 if rewarded else 0.96, abs=1e-12)
    both = {"retain": 97.0, "forget": 50.0, "test": 83.0}  # +2, −10, +3
    assert tow(both, RT) == pytest.approx(0.98 * 0.90 * 0.97, abs=1e-12)
    assert tow(both, RT, signed=True) == pytest.approx(1.02 * 1.10 * 1.03, abs=1e-12)
