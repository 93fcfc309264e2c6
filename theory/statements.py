"""The conditions, theorems and lemmas of docs/model.md#theory-statements as sympy relations and expressions.

One function per statement, each returning a :class:`Statement`; ``STATEMENTS`` maps names to those functions and
:func:`get` builds one by name. Statements that reuse another one (the SAM window reuses the SGD threshold, U's
remarks reuse Thm 3.2) look it up through :func:`get`, so replacing a registry entry (as the tests do to show the
checks can fail) changes every statement built on it.

Papers: (Cao) Cao, Chen, Belkin, Gu, NeurIPS 2022, arXiv 2202.06526; (K) Kou, Chen, Chen, Gu, ICML 2023,
arXiv 2303.04145; (C) Chen, Zhang, Kou, Chen, Hsieh, Gu, NeurIPS 2023, arXiv 2310.07269; (U) Tang & Khanna,
*Sharpness-Aware Machine Unlearning*, arXiv 2506.13715, ICLR 2026.

Tags (docs/model.md#confidence-tags): ``seen`` read in a summary, review or the authors' code; ``hi`` structure and
exponents very likely right; ``med`` structure right, constants/log factors may be off; ``lo`` best guess; ``derived``
follows from the model's definitions. A statement is a *reconstruction* when its tag is ``med``/``lo``, or when the
sympy form was written here from a qualitative summary (``reconstructed=True``): it is never the paper's exact
statement. Theta/Omega are written as equalities/inequalities with an unknown constant; log factors (Omega~) are
dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sympy as sp

from .symbols import (
    C1,
    C1_U,
    C2,
    C3,
    C_T,
    B,
    C_alpha,
    C_maxpart,
    C_ratio,
    C_sam,
    C_surplus,
    P,
    T,
    alpha,
    alpha_star_sam,
    alpha_star_sgd,
    d,
    eps,
    eta,
    grad_norm,
    loss_slope,
    m,
    mu,
    n,
    n_F,
    n_R,
    p,
    phi,
    phi_star_maxpart,
    preactivation,
    q,
    rho,
    sigma_0,
    sigma_p,
    tau,
    test_error,
)

TAGS = ("seen", "hi", "med", "lo", "derived")
RECONSTRUCTION_TAGS = ("med", "lo")
HARMFUL_EXCESS = sp.Rational(1, 10)  # "test error >= p + 0.1" in (K), (C), U Thm 3.2


@dataclass(frozen=True)
class Statement:
    """One statement of docs/model.md#theory-statements: named sympy relations (``Ge``, ``Eq``, ...) and expressions
    (thresholds, bounds).

    ``tag`` is its confidence tag (docs/model.md#confidence-tags); ``reconstructed`` marks a sympy form written here
    from a qualitative summary. ``is_reconstruction`` is what every printout must show.
    """

    name: str
    source: str
    tag: str
    relations: dict[str, sp.Basic]
    description: str
    reconstructed: bool = False

    def __post_init__(self):
        if self.tag not in TAGS:
            raise ValueError(f"statement {self.name!r}: unknown tag {self.tag!r}, use one of {TAGS}")

    @property
    def is_reconstruction(self) -> bool:
        return self.tag in RECONSTRUCTION_TAGS or self.reconstructed


def _eq(lhs, rhs) -> sp.Equality:
    """An equation kept unevaluated, so an identity still prints as a relation instead of ``True``."""
    return sp.Eq(lhs, rhs, evaluate=False)


def cao_benign() -> Statement:
    """(Cao) benign/harmful overfitting of the two-layer CNN with polynomial ReLU ``max(0, z)^q``, q > 2 [hi].

    Benign iff ``n ||mu||^q >~ (sigma_p sqrt d)^q``, else test loss >= Theta(1); the mechanism is a race between
    signal growth ``eta sigma0^(q-2) ||mu||^q / m`` and per-sample noise growth
    ``eta sigma0^(q-2) (sigma_p sqrt d)^q / (n m)``. Threshold slopes: +1/2 in d, -1/q in n (prediction 2 of
    docs/model.md#checkable-predictions).
    """
    noise_scale = (sigma_p * sp.sqrt(d)) ** q
    return Statement(
        name="cao_benign",
        source="(Cao) Cao et al., NeurIPS 2022, arXiv 2202.06526, main theorems; docs/model.md#theory-statements",
        tag="hi",
        relations={
            "benign_condition": sp.Ge(n * mu**q, C1 * noise_scale),
            "harmful_condition": sp.Le(n * mu**q, C3 * noise_scale),
            "threshold": (C1 / n) ** (1 / q) * sigma_p * sp.sqrt(d),
            "signal_growth": eta * sigma_0 ** (q - 2) * mu**q / m,
            "noise_growth": eta * sigma_0 ** (q - 2) * noise_scale / (n * m),
        },
        description="benign overfitting iff n ||mu||^q >~ (sigma_p sqrt d)^q (poly-ReLU, no label noise)",
    )


def kou_bounds() -> Statement:
    """(K) two-layer ReLU CNN with label-flip noise p [hi thresholds].

    After ``T = Omega(n m / (eta eps d sigma_p^2))`` GD steps the training loss is <= eps, and
    if ``n ||mu||^4 >= C1 d sigma_p^4``: test error <= ``p + exp(-n ||mu||^4 / (C2 d sigma_p^4))``;
    if ``n ||mu||^4 <= C3 d sigma_p^4``: test error >= ``p + 0.1``.
    """
    benign_error_bound = p + sp.exp(-n * mu**4 / (C2 * d * sigma_p**4))
    return Statement(
        name="kou_bounds",
        source="(K) Kou et al., ICML 2023, arXiv 2303.04145, main theorem; docs/model.md#theory-statements",
        tag="hi",
        relations={
            "time_bound": sp.Ge(T, C_T * n * m / (eta * eps * d * sigma_p**2)),
            "benign_condition": sp.Ge(n * mu**4, C1 * d * sigma_p**4),
            "benign_error_bound": benign_error_bound,
            "benign_error": sp.Le(test_error, benign_error_bound),
            "harmful_condition": sp.Le(n * mu**4, C3 * d * sigma_p**4),
            "harmful_error": sp.Ge(test_error, p + HARMFUL_EXCESS),
        },
        description="GD with label noise: error <= p + exp(-n||mu||^4/(C2 d sigma_p^4)) above the SNR threshold, "
                    ">= p + 0.1 below",
    )


def chen_sgd() -> Statement:
    """(C) SGD on the two-layer ReLU CNN with P patches [hi thresholds].

    Benign iff ``n ||mu||^4 >= C1 d P^4 sigma_p^4``, i.e. ``||mu|| >= ||mu||* = (C1 d P^4 sigma_p^4 / n)^(1/4)``
    (also written ``C d^(1/4) n^(-1/4) P sigma_p`` with ``C = C1^(1/4)``); harmful (error >= p + 0.1) when
    ``n ||mu||^4 <= C3 d P^4 sigma_p^4``.
    """
    scale = d * P**4 * sigma_p**4
    return Statement(
        name="chen_sgd",
        source="(C) Chen et al., NeurIPS 2023, arXiv 2310.07269, SGD theorem; docs/model.md#theory-statements",
        tag="hi",
        relations={
            "benign_condition": sp.Ge(n * mu**4, C1 * scale),
            "boundary": _eq(n * mu**4, C1 * scale),
            "threshold": (C1 * d / n) ** sp.Rational(1, 4) * P * sigma_p,
            "harmful_condition": sp.Le(n * mu**4, C3 * scale),
            "harmful_error": sp.Ge(test_error, p + HARMFUL_EXCESS),
        },
        description="SGD is benign iff ||mu|| >= C d^(1/4) n^(-1/4) P sigma_p",
    )


def sam_gradient_model(radius: sp.Expr) -> dict[str, sp.Expr]:
    """Early-phase size of SAM's perturbation along a training noise patch (reconstruction, [derived] from §2–3).

    At initialisation ``|l'| = g`` for every sample and about half of the neurons are active on each patch. With
    batch size B, ``P - 1`` independent noise patches per sample (squared norm ``sigma_p^2 d`` each, near-orthogonal
    in high d) and the noise part dominating the gradient (``(P-1) sigma_p^2 d >> B ||mu||^2``):

        ||grad L||_F^2 = 2m * B/2 * (g/(B m))^2 * (P-1) sigma_p^2 d = g^2 (P-1) sigma_p^2 d / (B m),
        <eps_{y_i,r}, xi_i> = -(radius / ||grad L||_F) * (g/(B m)) * sigma_p^2 d.
    """
    grad_norm_sq = 2 * m * (B / 2) * (loss_slope / (B * m)) ** 2 * (P - 1) * sigma_p**2 * d
    along_noise = -(radius / sp.sqrt(grad_norm_sq)) * (loss_slope / (B * m)) * sigma_p**2 * d
    return {"gradient_norm": sp.sqrt(grad_norm_sq), "perturbation_along_noise": sp.simplify(along_noise)}


def chen_sam() -> Statement:
    """(C) SAM on the same model [med].

    Test error <= p + eps needs only ``||mu|| >= Omega~(1)`` (here ``C_sam``), independent of d and n. (C) picks the
    radius ``tau = Theta(m sqrt(B) / (P sigma_p sqrt d))`` and ``sigma_0 = Theta~(1 / (P sigma_p sqrt d))``; at the
    perturbed point ``<w_{y_i,r} + eps, xi_i> < 0`` switches off the neurons that would memorise ``xi_i``, so the noise
    coefficients stay at the init scale ``sigma_0 sigma_p sqrt d``. SAM is strictly better than SGD in the window
    ``C_sam <= ||mu|| < ||mu||*_SGD``. The perturbation size is :func:`sam_gradient_model`.
    """
    tau_choice = m * sp.sqrt(B) / (P * sigma_p * sp.sqrt(d))
    sigma_0_choice = 1 / (P * sigma_p * sp.sqrt(d))
    at_choice = sam_gradient_model(tau_choice)["perturbation_along_noise"]
    return Statement(
        name="chen_sam",
        source="(C) Chen et al., NeurIPS 2023, arXiv 2310.07269, SAM theorem; docs/model.md#theory-statements",
        tag="med",
        relations={
            "benign_condition": sp.Ge(mu, C_sam),
            "benign_error": sp.Le(test_error, p + eps),
            "radius": _eq(tau, tau_choice),
            "init_scale": _eq(sigma_0, sigma_0_choice),
            "init_preactivation": sigma_0_choice * sigma_p * sp.sqrt(d),
            "perturbation_along_noise_at_radius": sam_gradient_model(tau)["perturbation_along_noise"],
            "perturbation_along_noise": at_choice,
            "noise_dominates_gradient": sp.Gt((P - 1) * sigma_p**2 * d, B * mu**2),
            "window": sp.And(sp.Ge(mu, C_sam), sp.Lt(mu, get("chen_sgd").relations["threshold"])),
        },
        description="SAM is benign for ||mu|| >= Omega~(1), independent of d and n (log factors dropped)",
    )


def unlearning_lemma_3_1() -> Statement:
    """(U) Lemma 3.1 [seen, summary; sympy form reconstructed here]: under NegGrad, SAM denoises R but not F.

    Summary: SAM keeps its denoising on R, but NegGrad's ascent on F reverses the effect of eps: forget-set noise
    neurons stay active, so on F SAM behaves like SGD. Reconstruction: for the neuron (y_i, r) active on ``xi_i``
    (pre-activation ``a0 > 0``), the NegGrad gradient ``alpha grad L(R) - (1-alpha) grad L(F)`` has coefficient
    ``-alpha g/(B m)`` on ``xi_i`` for ``i in R`` and ``+(1-alpha) g/(B m)`` for ``i in F`` (``l' = -g``); the SAM
    perturbation ``eps = rho grad/G`` inherits those signs, so the perturbed pre-activation ``a0 + <eps, xi_i>`` falls
    on R and rises on F. The per-step noise-coefficient change is the SGD one times ``Heaviside(a0 + <eps, xi_i>)``.
    """
    noise_sq = sigma_p**2 * d
    eps_retain = -rho * alpha * loss_slope / (B * m * grad_norm) * noise_sq
    eps_forget = rho * (1 - alpha) * loss_slope / (B * m * grad_norm) * noise_sq
    step_sgd_retain = eta * alpha * loss_slope * noise_sq / (B * m)
    step_sgd_forget = eta * (1 - alpha) * loss_slope * noise_sq / (B * m)
    step_sam_retain = step_sgd_retain * sp.Heaviside(preactivation + eps_retain)
    step_sam_forget = step_sgd_forget * sp.Heaviside(preactivation + eps_forget)
    return Statement(
        name="unlearning_lemma_3_1", source="(U) Tang & Khanna, ICLR 2026, Lemma 3.1 (from a summary); "
               "docs/model.md#theory-statements",
        tag="seen", reconstructed=True,
        relations={
            "perturbation_along_noise_retain": eps_retain,
            "perturbation_along_noise_forget": eps_forget,
            "noise_step_sgd_retain": step_sgd_retain,
            "noise_step_sgd_forget": step_sgd_forget,
            "noise_step_sam_retain": step_sam_retain,
            "noise_step_sam_forget": step_sam_forget,
            "forget_like_sgd": _eq(step_sam_forget, step_sgd_forget),
            "retain_denoised": sp.Implies(sp.Gt(-eps_retain, preactivation), _eq(step_sam_retain, 0)),
        },
        description="SAM-NegGrad: noise neurons of R are switched off at the perturbed point, those of F stay "
                    "active, so SAM's noise-coefficient growth on F equals SGD's",
    )


def unlearning_thm_3_2() -> Statement:
    """(U) Thm 3.2 [seen, summary]: SGD under NegGrad is benign only if ``||phi|| >= C1 d^(1/4) n^(-1/4) P sigma_p``.

    Otherwise test error >= 0.1 (possibly p + 0.1: both are given). Whether n is |S| = n_R + n_F or |R| = n_R is not
    known, so both variants are stated. U's ``C1`` multiplies the fourth root, so it matches (C) when it equals
    ``C1^(1/4)`` of (C)'s fourth-power form; it is kept as its own symbol ``C1_U``.
    """
    def threshold(size):
        return C1_U * d ** sp.Rational(1, 4) * size ** sp.Rational(-1, 4) * P * sigma_p

    return Statement(
        name="unlearning_thm_3_2", source="(U) Tang & Khanna, ICLR 2026, Thm 3.2 (from a summary); "
               "docs/model.md#theory-statements",
        tag="seen",
        relations={
            "threshold": threshold(n),
            "threshold_retain": threshold(n_R),
            "threshold_all": threshold(n_R + n_F),
            "benign_condition": sp.Ge(phi, threshold(n)),
            "harmful_error": sp.Ge(test_error, HARMFUL_EXCESS),
            "harmful_error_with_floor": sp.Ge(test_error, p + HARMFUL_EXCESS),
        },
        description="SGD-NegGrad is benign only if ||phi|| >= C1_U d^(1/4) n^(-1/4) P sigma_p, n = n_R or n_R + n_F",
    )


def unlearning_thm_3_3() -> Statement:
    """(U) Thm 3.3 [seen, summary]: SAM under NegGrad reaches low test error for ``||phi|| >= Omega(1)``.

    The extra hypothesis "given enough retain signal" is not known in formal form and is kept in the description.
    """
    return Statement(
        name="unlearning_thm_3_3", source="(U) Tang & Khanna, ICLR 2026, Thm 3.3 (from a summary); "
               "docs/model.md#theory-statements",
        tag="seen",
        relations={
            "benign_condition": sp.Ge(phi, C_sam),
            "benign_error": sp.Le(test_error, p + eps),
        },
        description="SAM-NegGrad is benign for ||phi|| >= Omega(1), given enough retain signal (not formalised)",
    )


def kappa_step(weights, signs, active, margins) -> sp.Expr:
    """One signal-coefficient step on the retain set, the kappa recursion of docs/model.md#signal-and-noise-coefficients
    [derived].

        Delta kappa = (eta ||phi||^2 / m) * sum_i a_i |l'(z_i)| yhat_i y_i sigma'(<w~, yhat_i phi>),
        |l'(z)| = 1 / (1 + e^z),  z_i = y_i f(W~, x_i),

    with ``W~ = W`` for SGD and ``W~ = W + eps`` for SAM. ``weights`` are the a_i (batch weights times alpha under
    NegGrad), ``signs`` the yhat_i y_i (-1 for a flipped label), ``active`` the ReLU derivatives sigma'(.) in [0, 1] and
    ``margins`` the z_i, all at W~.
    """
    terms = (a * s * act / (1 + sp.exp(z)) for a, s, act, z in zip(weights, signs, active, margins, strict=True))
    return eta * phi**2 / m * sp.Add(*terms)


def unlearning_lemma_3_4() -> Statement:
    """(U) Lemma 3.4, "signal surplus" [seen, abstract; sympy form reconstructed here; docs/model.md#theory-statements].

    The abstract: "the signal surplus of SAM in the order of signal strength". Read (docs/model.md#theory-statements) as
    a
    *difference* per step on R: ``Delta kappa_SAM - Delta kappa_SGD = C_surplus ||phi||^2`` with ``C_surplus > 0``
    (SAM learns retain signal faster), so SAM tolerates a smaller retain weight alpha. The *ratio*
    ``Delta kappa_SAM / Delta kappa_SGD`` is kept as a read-out only, ``C_ratio = Theta(1)`` in ``||phi||``: every
    kappa step carries the factor ``||phi||^2`` (:func:`kappa_step`), so it cancels in the ratio. An earlier version
    of this module stated the ratio as ``Theta(||phi||^2)``, which cannot hold in this model.
    """
    return Statement(
        name="unlearning_lemma_3_4", source="(U) Tang & Khanna, ICLR 2026, Lemma 3.4 (from the abstract); "
               "docs/model.md#theory-statements",
        tag="seen", reconstructed=True,
        relations={
            "signal_surplus": C_surplus * phi**2,
            "rate_ratio_readout": C_ratio,
        },
        description="SAM's retain-signal step exceeds SGD's by Theta(||phi||^2) (a difference; the ratio of the two "
                    "steps is a Theta(1) read-out)",
    )


def alpha_threshold() -> Statement:
    """(U) alpha thresholds [seen, summary; sympy form reconstructed here].

    ``alpha*`` is the smallest retain weight keeping test error <= p + delta (prediction 9 of
    docs/model.md#checkable-predictions). Summary: SAM tolerates a smaller alpha, and in the benign range ``alpha*_SGD -
    alpha*_SAM = O(sqrt(d/n))``. Written here as the ordering plus the gap bound ``C_alpha sqrt(d/n)``; whether the gap
    is also Theta(sqrt(d/n)) is not known. Consistency [derived]: at the SGD boundary ``||phi||^2 ~ sqrt(d/n) P^2
    sigma_p^2``.
    """
    return Statement(
        name="alpha_threshold", source="(U) Tang & Khanna, ICLR 2026, after Lemma 3.4 (from a summary); "
               "docs/model.md#theory-statements",
        tag="seen", reconstructed=True,
        relations={
            "ordering": sp.Gt(alpha_star_sgd, alpha_star_sam),
            "gap_order": C_alpha * sp.sqrt(d / n),
            "gap_bound": sp.Le(alpha_star_sgd - alpha_star_sam, C_alpha * sp.sqrt(d / n)),
        },
        description="alpha*_SGD > alpha*_SAM with gap O(sqrt(d/n)) in the benign range",
    )


def sharp_minmax_remark() -> Statement:
    """(U) remark on Sharp MinMax [seen; sympy form reconstructed here].

    The forget part (sharpness maximisation) needs a *higher* signal strength than SGD to avoid harmful overfitting:
    written as ``phi*_maxpart = C_maxpart phi*_SGD`` with ``C_maxpart >= 1``, phi*_SGD the U Thm 3.2 threshold.
    """
    sgd_threshold = get("unlearning_thm_3_2").relations["threshold"]
    return Statement(
        name="sharp_minmax_remark", source="(U) Tang & Khanna, ICLR 2026, remark on Sharp MinMax; "
               "docs/model.md#theory-statements",
        tag="seen", reconstructed=True,
        relations={
            "threshold": _eq(phi_star_maxpart, C_maxpart * sgd_threshold),
            "constant": sp.Ge(C_maxpart, 1),
            "ordering": sp.Ge(phi_star_maxpart, sgd_threshold),
        },
        description="the Sharp MinMax forget part needs ||phi|| above the SGD threshold to stay benign",
    )


STATEMENTS: dict[str, Callable[[], Statement]] = {
    "cao_benign": cao_benign,
    "kou_bounds": kou_bounds,
    "chen_sgd": chen_sgd,
    "chen_sam": chen_sam,
    "unlearning_lemma_3_1": unlearning_lemma_3_1,
    "unlearning_thm_3_2": unlearning_thm_3_2,
    "unlearning_thm_3_3": unlearning_thm_3_3,
    "unlearning_lemma_3_4": unlearning_lemma_3_4,
    "alpha_threshold": alpha_threshold,
    "sharp_minmax_remark": sharp_minmax_remark,
}


_RECORDERS: list[set[str]] = []


@contextlib.contextmanager
def recording_reads() -> Iterator[set[str]]:
    """Collect the names of all statements built through :func:`get` inside the block, nested builds included.

    :mod:`theory.mutations` uses it to run, under a mutated statement, only the checks that read that statement.
    """
    names: set[str] = set()
    _RECORDERS.append(names)
    try:
        yield names
    finally:
        _RECORDERS.pop()


def get(name: str) -> Statement:
    """Build the statement registered under ``name``."""
    for names in _RECORDERS:
        names.add(name)
    try:
        builder = STATEMENTS[name]
    except KeyError:
        raise KeyError(f"unknown statement {name!r}; known: {', '.join(STATEMENTS)}") from None
    return builder()


def all_statements() -> list[Statement]:
    return [builder() for builder in STATEMENTS.values()]
