"""Unlearning metrics (docs/protocol.md#metrics): ToW, ToW-MIA, the avg gap, MIA efficacy (SalUn protocol) and feature
entanglement (E_Var, E_Wp, class-wise), plus the one pass over a model that they read (probabilities, labels,
penultimate features). The loss landscape lives in :mod:`empirical.landscape`.

Units. Accuracies are percentages (0–100), as in the RUM and SalUn papers and in ToW's formula; MIA efficacy is a
fraction in [0, 1], as in ToW-MIA's formula; the avg gap is in percentage points (MIA × 100 there). ToW and ToW-MIA
lie in [0, 1] (report ×100).

docs/protocol.md#departures-from-the-authors-code, item 6: the authors' MIA takes the first 10k retain samples in index
order as shadow-in and computes the modified entropy wrongly; here shadow-in is a seeded random sample of R, and the
modified entropy is ``−(1 − p_y) log p_y − Σ_{c≠y} p_c log(1 − p_c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simulations.errors import ConfigError

ACCURACY_KEYS = ("retain", "forget", "test")
MIA_FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
HEADLINE_MIA_FEATURE = "confidence"
_EPS = 1e-30


class MetricError(ConfigError):
    """Bad input to a metric (shapes, ranges, empty sets)."""


# ----------------------------------------------------------------------------------------------------- ToW
def _accuracies(acc: dict, name: str) -> tuple[float, float, float]:
    missing = [k for k in ACCURACY_KEYS if k not in acc]
    if missing:
        raise MetricError(f"{name} lacks {', '.join(missing)} accuracy (percent, keys {', '.join(ACCURACY_KEYS)})")
    values = tuple(float(acc[k]) for k in ACCURACY_KEYS)
    if not all(0.0 <= v <= 100.0 for v in values):
        raise MetricError(f"{name} accuracies must be percentages in [0, 100], got {dict(zip(ACCURACY_KEYS, values))}")
    return values


def tow(acc: dict, retrain: dict, signed: bool = False) -> float:
    """Tug-of-war (RUM): ``(1 − |RA − RA_rt|/100)(1 − |FA − FA_rt|/100)(1 − |TA − TA_rt|/100)``; 1 is perfect.

    ``acc`` and ``retrain`` map "retain", "forget", "test" to accuracies in percent. ``signed=True`` is the variant
    the authors' code computes, without absolute values, which rewards FA below the retrained model's and TA (and,
    we assume, RA) above it — reported for comparison and labelled as such, not the paper's definition:
    ``(1 − (RA_rt − RA)/100)(1 − (FA − FA_rt)/100)(1 − (TA_rt − TA)/100)``, which can exceed 1."""
    ra, fa, ta = _accuracies(acc, "acc")
    ra_rt, fa_rt, ta_rt = _accuracies(retrain, "retrain")
    if signed:
        return (1 - (ra_rt - ra) / 100) * (1 - (fa - fa_rt) / 100) * (1 - (ta_rt - ta) / 100)
    return (1 - abs(ra - ra_rt) / 100) * (1 - abs(fa - fa_rt) / 100) * (1 - abs(ta - ta_rt) / 100)


def tow_mia(acc: dict, mia: float, retrain: dict, mia_retrain: float) -> float:
    """ToW with the forget factor replaced by ``1 − |MIA − MIA_rt|`` (MIA efficacies as fractions in [0, 1])."""
    ra, _, ta = _accuracies(acc, "acc")
    ra_rt, _, ta_rt = _accuracies(retrain, "retrain")
    for name, value in (("mia", mia), ("mia_retrain", mia_retrain)):
        if not 0.0 <= value <= 1.0:
            raise MetricError(f"{name}={value}: MIA efficacy is a fraction in [0, 1]")
    return (1 - abs(ra - ra_rt) / 100) * (1 - abs(mia - mia_retrain)) * (1 - abs(ta - ta_rt) / 100)


def avg_gap(acc: dict, mia: float, retrain: dict, mia_retrain: float) -> float:
    """SalUn's avg gap in percentage points: the mean of |UA − UA_rt|, |RA − RA_rt|, |TA − TA_rt|, |MIA − MIA_rt|
    with UA = 100 − FA and MIA efficacy × 100. 0 is perfect."""
    ra, fa, ta = _accuracies(acc, "acc")
    ra_rt, fa_rt, ta_rt = _accuracies(retrain, "retrain")
    gaps = (abs((100 - fa) - (100 - fa_rt)), abs(ra - ra_rt), abs(ta - ta_rt), 100 * abs(mia - mia_retrain))
    return float(np.mean(gaps))


# ----------------------------------------------------------------------------------------------------- MIA
def mia_features(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample attack features from softmax probabilities ``probs`` (N, C) and labels (N,): ``correctness``,
    ``confidence`` p_y, ``entropy`` −Σ p log p, ``m_entropy`` (modified entropy, module docstring) as (N, 1)
    columns, and ``prob`` the full vector (N, C)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise MetricError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    if len(probs) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise MetricError(f"labels must lie in [0, {probs.shape[1] - 1}]")
    rows = np.arange(len(probs))
    p_y = probs[rows, labels]
    log_p = np.log(np.clip(probs, _EPS, None))
    log_1mp = np.log(np.clip(1 - probs, _EPS, None))
    entropy = -(probs * log_p).sum(axis=1)
    others = probs * log_1mp
    others[rows, labels] = 0.0
    m_entropy = -(1 - p_y) * log_p[rows, labels] - others.sum(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    return {"correctness": correct[:, None], "confidence": p_y[:, None], "entropy": entropy[:, None],
            "m_entropy": m_entropy[:, None], "prob": probs}


def mia_efficacy(shadow_in: tuple[np.ndarray, np.ndarray], shadow_out: tuple[np.ndarray, np.ndarray],
                 target: tuple[np.ndarray, np.ndarray], features: tuple[str, ...] = MIA_FEATURES,
                 seed: int = 0) -> dict[str, float]:
    """MIA efficacy per feature (SalUn protocol): for each feature an RBF SVC (C = 3, gamma = 'auto') is fitted on
    shadow-in (members, label 1) vs shadow-out (non-members, label 0) and predicts the target set; the efficacy is
    the fraction of targets predicted non-member (higher = better forgetting). Each argument is ``(probs, labels)``.
    The shadow sets are balanced to the smaller of the two by a seeded subsample."""
    from sklearn.svm import SVC

    unknown = [f for f in features if f not in MIA_FEATURES]
    if unknown:
        raise MetricError(f"unknown MIA feature(s) {', '.join(unknown)}; choose from {', '.join(MIA_FEATURES)}")
    sets = {"shadow_in": shadow_in, "shadow_out": shadow_out, "target": target}
    for name, (p, _) in sets.items():
        if len(p) == 0:
            raise MetricError(f"the {name} set is empty")
    rng = np.random.default_rng(seed)
    n = min(len(shadow_in[0]), len(shadow_out[0]))
    keep_in = np.sort(rng.choice(len(shadow_in[0]), n, replace=False))
    keep_out = np.sort(rng.choice(len(shadow_out[0]), n, replace=False))
    f_in = mia_features(shadow_in[0][keep_in], np.asarray(shadow_in[1])[keep_in])
    f_out = mia_features(shadow_out[0][keep_out], np.asarray(shadow_out[1])[keep_out])
    f_target = mia_features(*target)
    result = {}
    for name in features:
        x = np.concatenate([f_in[name], f_out[name]])
        y = np.concatenate([np.ones(n), np.zeros(n)])
        clf = SVC(C=3, gamma="auto", kernel="rbf")
        clf.fit(x, y)
        result[name] = float(np.mean(clf.predict(f_target[name]) == 0))
    return result


def shadow_in_indices(retain_idx: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded random sample of the retain set the size of the test set (docs/protocol.md item 6: not the first
    ``size`` retain indices in order)."""
    retain_idx = np.asarray(retain_idx)
    if not 0 < size:
        raise MetricError(f"size={size}: the shadow-in set needs at least one sample")
    return np.sort(np.random.default_rng(seed).choice(retain_idx, min(size, len(retain_idx)), replace=False))


# ------------------------------------------------------------------------------------------- entanglement
def _normalise(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise MetricError(f"{name} features must be a non-empty (N, D) array, got shape {features.shape}")
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), _EPS)


def entanglement_var(retain_features: np.ndarray, forget_features: np.ndarray) -> float:
    """E_Var on L2-normalised features: ``[mean_R ||r − μ_R||² + mean_F ||f − μ_F||²] / [½(||μ_R − μ||² +
    ||μ_F − μ||²)]``, μ the mean over R ∪ F. Higher = R and F more entangled (within-set spread large against the
    separation of their means)."""
    r, f = _normalise(retain_features, "retain"), _normalise(forget_features, "forget")
    if r.shape[1] != f.shape[1]:
        raise MetricError(f"retain and forget features differ in width: {r.shape[1]} vs {f.shape[1]}")
    mu_r, mu_f = r.mean(axis=0), f.mean(axis=0)
    mu = np.concatenate([r, f]).mean(axis=0)
    within = np.mean(np.sum((r - mu_r) ** 2, axis=1)) + np.mean(np.sum((f - mu_f) ** 2, axis=1))
    between = 0.5 * (np.sum((mu_r - mu) ** 2) + np.sum((mu_f - mu) ** 2))
    return float(within / max(between, _EPS))


E_VAR_AUTHORS_DIVISOR = 1300.0  # docs/protocol.md#metrics: the authors' analysis script divides E_Var by 1300 and clips


def e_var_authors_units(e_var: float) -> float:
    """E_Var in the authors' units (docs/protocol.md#metrics): ``clip(E_Var / 1300, 0, 1)``. Our raw ratio is ``e_var``;
    this one is reported beside it, labelled, so numbers can be set beside theirs."""
    return float(min(1.0, max(0.0, e_var / E_VAR_AUTHORS_DIVISOR)))


def entanglement_wp(retain_features: np.ndarray, forget_features: np.ndarray, max_points: int = 1000,
                    seed: int = 0) -> float:
    """E_Wp = max(0, 1 − W): W is the exact earth mover's distance between seeded subsamples of the L2-normalised R
    and F features under Euclidean cost, divided by the largest pairwise cost. Both subsamples have
    m = min(max_points, |R|, |F|) points with uniform weights, so the optimal transport is an assignment, solved
    exactly (``scipy.optimize.linear_sum_assignment``). Higher = more entangled."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    r, f = _normalise(retain_features, "retain"), _normalise(forget_features, "forget")
    if r.shape[1] != f.shape[1]:
        raise MetricError(f"retain and forget features differ in width: {r.shape[1]} vs {f.shape[1]}")
    if max_points < 1:
        raise MetricError(f"max_points={max_points}: must be positive")
    rng = np.random.default_rng(seed)
    m = min(max_points, len(r), len(f))
    r = r[np.sort(rng.choice(len(r), m, replace=False))]
    f = f[np.sort(rng.choice(len(f), m, replace=False))]
    cost = cdist(r, f)
    largest = cost.max()
    if largest <= 0:
        return 1.0  # identical point sets: fully entangled
    rows, cols = linear_sum_assignment(cost)
    return float(max(0.0, 1.0 - cost[rows, cols].mean() / largest))


def classwise(metric, retain_features: np.ndarray, retain_labels: np.ndarray, forget_features: np.ndarray,
              forget_labels: np.ndarray, **kwargs) -> float:
    """A class-wise version of ``metric`` (:func:`entanglement_var` or :func:`entanglement_wp`): computed within each
    class present in both R and F and averaged with weights = the class's size in R ∪ F."""
    retain_labels, forget_labels = np.asarray(retain_labels), np.asarray(forget_labels)
    if len(retain_labels) != len(retain_features) or len(forget_labels) != len(forget_features):
        raise MetricError("one label per feature row is needed for the class-wise metric")
    shared = np.intersect1d(retain_labels, forget_labels)
    if shared.size == 0:
        raise MetricError("no class has samples in both R and F (class-wise forgetting?): class-wise entanglement "
                          "is undefined")
    values, weights = [], []
    for c in shared:
        r, f = retain_features[retain_labels == c], forget_features[forget_labels == c]
        values.append(metric(r, f, **kwargs))
        weights.append(len(r) + len(f))
    return float(np.average(values, weights=weights))


# ------------------------------------------------------------------------------------------ model read-outs
@dataclass
class Outputs:
    """One eval-mode pass: softmax probabilities (N, C), labels (N,), penultimate features (N, D), all numpy."""

    probs: np.ndarray
    labels: np.ndarray
    features: np.ndarray

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in percent."""
        return float(100.0 * np.mean(self.probs.argmax(axis=1) == self.labels)) if len(self.labels) else float("nan")


def eval_batch_size(device: torch.device) -> int:
    """The evaluation batch: 1024 on CUDA; 256 on a CPU, where larger batches fall out of the cache (width-16
    ResNet-18, one thread, channels_last: 0.83 ms per image at 256 against 1.07 ms at 1024)."""
    return 1024 if torch.device(device).type == "cuda" else 256


def model_layout(model: torch.nn.Module):
    """A function putting a batch in the memory format of ``model``'s convolutions (channels_last or contiguous):
    a channels_last model fed NCHW batches converts every activation."""
    for p in model.parameters():
        if p.dim() == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return lambda x: x.contiguous(memory_format=torch.channels_last)
            break
    return lambda x: x


@torch.no_grad()
def model_outputs(model: torch.nn.Module, data, indices, device: torch.device, batch_size: int | None = None,
                  bf16: bool = False) -> Outputs:
    """Eval mode, no augmentation, fp32 (``bf16=True`` autocasts on CUDA; evaluation never does,
    docs/protocol.md#precision): softmax probabilities and penultimate features of ``data``
    (a :class:`empirical.augment.DeviceData`) at ``indices``. The model needs ``features(x)`` and ``classifier`` as in
    :mod:`empirical.models`; its train/eval mode is restored. ``batch_size`` None: :func:`eval_batch_size`."""
    from .steps import autocast

    was_training = model.training
    model.eval()
    layout = model_layout(model)
    probs, labels, feats = [], [], []
    try:
        for x, y in data.batches(indices, batch_size or eval_batch_size(device), shuffle=False, augment=False):
            x = layout(x)
            with autocast(device, bf16):
                z = model.features(x)
                logits = model.classifier(z)
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            labels.append(y.cpu())
            feats.append(z.float().cpu())
    finally:
        model.train(was_training)
    if not probs:
        raise MetricError("no samples to evaluate (empty index set)")
    return Outputs(torch.cat(probs).numpy(), torch.cat(labels).numpy(), torch.cat(feats).numpy())
