"""Symbolic checks of the statements in :mod:`theory.statements` (docs/model.md#theory-statements).

Each check is a named function registered in ``CHECKS``; ``run_checks()`` runs them all. A check reads its
statements through :func:`theory.statements.get` at run time, records sympy steps, and every claim goes through
:meth:`Proof.require` — a failed claim fails the check, a check without claims cannot pass. Signs are proved from the
symbols' assumptions (``is_positive``/``is_negative``), else after ``simplify``, else only numerically at seeded
random points from :data:`theory.symbols.RANGES`, and the steps say which. Nothing is a hard-coded verdict: replacing
a statement by a wrong one (e.g. the SGD threshold growing in n) makes the checks on it fail; :mod:`theory.mutations`
applies many such wrong statements in turn and reports which checks catch each.

Checks test *consequences* of a statement rather than restating it: the direction of a benign/harmful condition is
read off its limits at strong and vanishing signal, disjointness of two regions off the solved relations, Lemma 3.4
off a model of the kappa recursion, the alpha ordering off a model of NegGrad's signal race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import sympy as sp

from .statements import HARMFUL_EXCESS, RECONSTRUCTION_TAGS, get, kappa_step
from .symbols import (
    C1,
    C1_U,
    C2,
    C3,
    DEFAULT_RANGE,
    RANGES,
    B,
    C_maxpart,
    C_sam,
    P,
    T,
    alpha,
    alpha_star_sam,
    alpha_star_sgd,
    d,
    eps,
    lam,
    loss_slope,
    mu,
    n,
    n_F,
    n_R,
    p,
    phi,
    phi_star_maxpart,
    preactivation,
    q,
    sigma_0,
    sigma_p,
    snr_ratio,
    tau,
    test_error,
    u,
)

SPOT_POINTS = 20


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: the claim, whether it held, the sympy steps, a counterexample when it failed."""

    name: str
    statement: str
    passed: bool
    steps: list[str]
    counterexample: str | None
    tag: str
    reconstruction: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Proof:
    """Step recorder of one check."""

    steps: list[str] = field(default_factory=list)
    claims: int = 0
    failed: bool = False
    counterexample: str | None = None

    def note(self, text: str, expr=None) -> None:
        self.steps.append(text if expr is None else f"{text} {sp.sstr(expr)}")

    def require(self, ok, text: str) -> bool:
        self.claims += 1
        self.steps.append(("[ok] " if ok else "[FAILED] ") + text)
        self.failed = self.failed or not ok
        return bool(ok)

    def require_zero(self, expr, text: str) -> bool:
        """Claim ``expr == 0`` after ``simplify``; on failure look for a numerical counterexample."""
        residual = sp.simplify(expr)
        if residual != 0:
            point = find_point(lambda value: abs(value) < 1e-9, residual)
            if point is not None and self.counterexample is None:
                self.counterexample = f"{sp.sstr(residual)} != 0 at {point}"
        return self.require(residual == 0, f"{text} (residual after simplify: {sp.sstr(residual)})")

    def require_free_of(self, expr, symbols, text: str) -> bool:
        expr = sp.simplify(expr)
        present = sorted(str(s) for s in expr.free_symbols & set(symbols))
        told = f"depends on {', '.join(present)}" if present else "is free of " + ", ".join(sorted(map(str, symbols)))
        return self.require(not present, f"{text}: {sp.sstr(expr)} {told}")

    def require_sign(self, expr, sign: int, label: str) -> bool:
        """Claim ``sign * expr > 0`` for all positive values of the symbols."""
        word, attr = ("positive", "is_positive") if sign > 0 else ("negative", "is_negative")
        self.note(f"{label} =", expr)
        known = getattr(expr, attr)
        if known is None:
            simplified = sp.simplify(expr)
            known = getattr(simplified, attr)
            if known is not None:
                self.note(f"simplified: {label} =", simplified)
        if known:
            return self.require(True, f"{label} is {word} under the assumptions (sympy {attr})")
        point = find_point(lambda value: sign * value > 0, expr)
        if point is not None:
            self.counterexample = self.counterexample or f"{label} = {sp.sstr(expr)} is not {word} at {point}"
            return self.require(False, f"{label} is not {word}: counterexample at {point}")
        if known is False:
            return self.require(False, f"sympy finds {label} not {word} (no counterexample among the spot points)")
        return self.require(True, f"{label} is {word} at {SPOT_POINTS} random points (numerical evidence only: "
                                  "sympy could not decide the sign)")

    def require_decided(self, relation, expected: bool, label: str) -> bool:
        """Claim that ``relation`` (a sympy relation or boolean) is ``expected`` for all values of its symbols."""
        verdict = decide(relation)
        shown = "undecided" if verdict is None else str(verdict)
        told = "" if isinstance(relation, (bool, sp.logic.boolalg.BooleanAtom)) else f" {sp.sstr(relation)}"
        return self.require(verdict is expected, f"{label}:{told} is {shown} (expected {expected})")

    def require_limit(self, relation, symbol, point, holds: bool, label: str) -> bool:
        """Claim that the inequality ``relation`` holds (``holds=True``) or fails in the limit ``symbol -> point``.

        Decided from the limit of its :func:`margin` (positive: holds, negative: fails); a zero or undecided limit
        proves neither.
        """
        gap = margin(relation)
        limit = sp.limit(gap, symbol, point, "+")
        verdict = True if limit.is_extended_positive else False if limit.is_extended_negative else None
        where = f"{symbol} -> {sp.sstr(point)}" + ("+" if point == 0 else "")
        word = "holds" if holds else "fails"
        return self.require(verdict is holds, f"{label} {word} as {where}: margin {sp.sstr(gap)} -> {sp.sstr(limit)}")

    def require_slope(self, expr, symbol, expected, label: str) -> bool:
        slope = log_slope(expr, symbol)
        return self.require(sp.simplify(slope - expected) == 0,
                            f"d log({label}) / d log({symbol}) = {sp.sstr(slope)} (expected {sp.sstr(expected)})")


def find_point(holds: Callable[[float], bool], expr, points: int = SPOT_POINTS, seed: int = 0):
    """A seeded random point (``{name: value}``) where ``holds(value of expr)`` is false, or None."""
    rng = np.random.default_rng(seed)
    expr = sp.sympify(expr)
    for _ in range(points):
        point = {}
        for symbol in sorted(expr.free_symbols, key=str):
            low, high, log = RANGES.get(str(symbol), DEFAULT_RANGE)
            value = np.exp(rng.uniform(np.log(low), np.log(high))) if log else rng.uniform(low, high)
            point[symbol] = float(f"{value:.4g}")
        value = complex(expr.subs(point).evalf())
        if abs(value.imag) > 1e-12 or not holds(value.real):
            return {str(k): v for k, v in point.items()}
    return None


def log_slope(expr, symbol) -> sp.Expr:
    """``d log(expr) / d log(symbol)``: the slope of ``expr`` against ``symbol`` on log-log axes."""
    return sp.simplify(sp.diff(sp.log(expr), symbol) * symbol)


def scaling_ratio(expr, factors: dict) -> sp.Expr:
    """``expr`` with each symbol multiplied by its factor, divided by ``expr``, simplified."""
    scaled = expr.subs({s: f * s for s, f in factors.items()}, simultaneous=True)
    return sp.simplify(sp.powsimp(sp.expand_power_base(scaled / expr, force=True), force=True))


def condition_ratio(relation) -> sp.Expr:
    """``lhs / rhs`` of an inequality: the quantity the condition compares to 1."""
    return sp.simplify(relation.lhs / relation.rhs)


def margin(relation) -> sp.Expr:
    """``lhs - rhs`` of ``>=``/``>``, ``rhs - lhs`` of ``<=``/``<``: the inequality holds iff its margin is >= 0."""
    if isinstance(relation, (sp.GreaterThan, sp.StrictGreaterThan)):
        return relation.lhs - relation.rhs
    if isinstance(relation, (sp.LessThan, sp.StrictLessThan)):
        return relation.rhs - relation.lhs
    raise TypeError(f"not an inequality: {sp.sstr(relation)}")


def decide(relation) -> bool | None:
    """True/False when ``relation`` holds/fails for all values of its (positive) symbols, None when sympy cannot tell.

    Tries ``simplify`` first, then the sign of the factored margin of an inequality or difference of an equation.
    """
    value = sp.simplify(relation)
    if value in (sp.true, True):
        return True
    if value in (sp.false, False):
        return False
    if isinstance(value, (sp.Equality, sp.Unequality)):
        zero = sp.simplify(value.lhs - value.rhs)
        nonzero = zero.is_nonzero
        if zero == 0 or nonzero is not None:
            is_equal = zero == 0 or not nonzero
            return is_equal if isinstance(value, sp.Equality) else not is_equal
        return None
    if isinstance(value, sp.core.relational.Relational):
        gap = sp.factor(sp.simplify(margin(value)))
        strict = isinstance(value, (sp.StrictGreaterThan, sp.StrictLessThan))
        if gap.is_positive or (not strict and gap.is_nonnegative):
            return True
        if gap.is_negative or (strict and gap.is_nonpositive):
            return False
    return None


def solution_in(relation, symbol) -> sp.Set:
    """The positive values of ``symbol`` satisfying the inequality ``relation`` (``solve_univariate_inequality``)."""
    solved = sp.solve_univariate_inequality(relation, symbol, relational=False)
    if isinstance(solved, sp.Interval) and (solved.inf == -sp.oo or solved.inf.is_nonpositive):
        return sp.Interval(0, solved.sup, True, solved.right_open)  # sympy leaves such intersections unevaluated
    if isinstance(solved, sp.Interval) and solved.inf.is_nonnegative:
        return solved
    return sp.Intersection(solved, sp.Interval.open(0, sp.oo))


CHECKS: dict[str, Callable[[], CheckResult]] = {}


def check(name: str, statement: str, tag: str, reconstruction: bool = False):
    """Register ``fn(proof)`` as check ``name``; the registered callable returns a :class:`CheckResult`."""
    reconstruction = reconstruction or tag in RECONSTRUCTION_TAGS

    def register(fn: Callable[[Proof], None]) -> Callable[[], CheckResult]:
        def run() -> CheckResult:
            proof = Proof()
            try:
                fn(proof)
            except Exception as exc:  # a check that crashes fails, with the error as its last step
                proof.require(False, f"error while checking: {type(exc).__name__}: {exc}")
            passed = proof.claims > 0 and not proof.failed
            return CheckResult(name, statement, passed, list(proof.steps),
                               None if passed else proof.counterexample, tag, reconstruction)

        run.__name__, run.__doc__ = name, fn.__doc__ or f"{statement} [{tag}]"
        if name in CHECKS:
            raise ValueError(f"check {name!r} registered twice")
        CHECKS[name] = run
        return run

    return register


def run_checks(names=None) -> list[CheckResult]:
    """Run the named checks (default: all, in registration order)."""
    return [CHECKS[name]() for name in (names or CHECKS)]


def _sgd_threshold():
    return get("chen_sgd").relations["threshold"]


# --- (C) SGD threshold: monotonicity, slopes, solved forms ------------------------------------------------------

def _monotone(symbol, sign: int):
    def body(proof: Proof) -> None:
        threshold = _sgd_threshold()
        proof.note("||mu||*_SGD =", threshold)
        proof.require_sign(sp.diff(threshold, symbol), sign, f"d||mu||*/d{symbol}")
    return body


for _symbol, _sign, _word in ((d, 1, "increases"), (n, -1, "decreases"), (P, 1, "increases"),
                              (sigma_p, 1, "increases")):
    check(f"sgd_threshold_{_word}_in_{_symbol}", f"(C) ||mu||*_SGD = (C1 d P^4 sigma_p^4 / n)^(1/4) {_word} in "
          f"{_symbol}", "hi")(_monotone(_symbol, _sign))
del _symbol, _sign, _word


@check("sgd_threshold_log_slopes", "(C) on log axes ||mu||*_SGD has slope +1/4 in d, -1/4 in n, 1 in P and sigma_p "
       "(docs/model.md#checkable-predictions, prediction 2)", "hi")
def sgd_threshold_log_slopes(proof: Proof) -> None:
    threshold = _sgd_threshold()
    for symbol, slope in ((d, sp.Rational(1, 4)), (n, sp.Rational(-1, 4)), (P, 1), (sigma_p, 1)):
        proof.require_slope(threshold, symbol, slope, "||mu||*")


@check("sgd_boundary_solved_forms", "(C) the boundary n ||mu||^4 = C1 d P^4 sigma_p^4 solved for ||mu||, n and d; "
       "each solution satisfies it, and the ||mu|| solution is the stated threshold", "hi")
def sgd_boundary_solved_forms(proof: Proof) -> None:
    statement = get("chen_sgd")
    boundary = statement.relations["boundary"]
    proof.note("boundary:", boundary)
    for symbol in (mu, n, d):
        solutions = sp.solve(boundary, symbol)
        proof.note(f"solve for {symbol}:", solutions)
        if proof.require(len(solutions) == 1, f"one positive solution for {symbol}"):
            proof.require_zero((boundary.lhs - boundary.rhs).subs(symbol, solutions[0]),
                               f"back-substituting {symbol} satisfies the boundary")
            if symbol == mu:
                proof.require_zero(solutions[0] - statement.relations["threshold"], "solution = stated threshold")


# --- (Cao) ------------------------------------------------------------------------------------------------------

@check("cao_threshold_and_race", "(Cao) the poly-ReLU threshold ||mu||* = (C1/n)^(1/q) sigma_p sqrt d solves the "
       "boundary, has slopes +1/2 in d and -1/q in n, and the benign condition is the signal-vs-noise growth race",
       "hi")
def cao_threshold_and_race(proof: Proof) -> None:
    statement = get("cao_benign")
    condition, threshold = statement.relations["benign_condition"], statement.relations["threshold"]
    solutions = sp.solve(sp.Eq(condition.lhs, condition.rhs), mu)
    proof.note("solve n ||mu||^q = C1 (sigma_p sqrt d)^q for ||mu||:", solutions)
    if proof.require(len(solutions) == 1, "one positive solution"):
        proof.require_zero(sp.powdenest(solutions[0] - threshold, force=True), "solution = stated threshold")
    proof.require_slope(threshold, d, sp.Rational(1, 2), "||mu||*_Cao")
    proof.require_slope(threshold, n, -1 / q, "||mu||*_Cao")
    race = sp.simplify(statement.relations["signal_growth"] / statement.relations["noise_growth"])
    proof.note("signal growth / noise growth =", race)
    proof.require_zero(race - C1 * condition_ratio(condition), "race ratio = n ||mu||^q / (sigma_p sqrt d)^q, the "
                       "benign condition's ratio")


# --- benign/harmful directions, disjoint regions, harmful levels ------------------------------------------------

# (statement, signal symbol, {relation: holds at strong signal?}, symbols whose growth helps (n) / hurts (d) the benign
# condition). A benign condition must hold at strong signal and fail at vanishing signal; a harmful one the reverse.
DIRECTIONS = {
    "cao_benign": (mu, {"benign_condition": True, "harmful_condition": False}, True),
    "kou_bounds": (mu, {"benign_condition": True, "harmful_condition": False}, True),
    "chen_sgd": (mu, {"benign_condition": True, "harmful_condition": False}, True),
    "chen_sam": (mu, {"benign_condition": True}, False),
    "unlearning_thm_3_2": (phi, {"benign_condition": True}, True),
    "unlearning_thm_3_3": (phi, {"benign_condition": True}, False),
}


def _directions(name: str):
    signal, relations, sample_dependent = DIRECTIONS[name]

    def body(proof: Proof) -> None:
        statement = get(name)
        for key, benign in relations.items():
            relation = statement.relations[key]
            proof.note(f"{key}:", relation)
            proof.require_limit(relation, signal, sp.oo, benign, f"{key} at strong signal")
            proof.require_limit(relation, signal, 0, not benign, f"{key} at vanishing signal")
            if sample_dependent:
                proof.require_limit(relation, n, sp.oo, benign, f"{key} with many samples")
                proof.require_limit(relation, d, sp.oo, not benign, f"{key} in high dimension")
    return body


for _name, (_signal, _relations, _dependent) in DIRECTIONS.items():
    check(f"{_name}_directions", f"{get(_name).source.split(',')[0]}: {' and '.join(_relations)} point the right "
          f"way: benign at strong signal{', many samples' if _dependent else ''}, not at vanishing signal"
          f"{' or in high dimension' if _dependent else ''}; harmful the reverse", get(_name).tag,
          get(_name).is_reconstruction)(_directions(_name))
del _name, _signal, _relations, _dependent


def _regions(proof: Proof, name: str) -> tuple[sp.Set, sp.Set]:
    """Benign and harmful regions of statement ``name`` in n, solved from its relations; claims they are disjoint
    exactly when C3 < C1."""
    rel = get(name).relations
    benign, harmful = (solution_in(rel[key], n) for key in ("benign_condition", "harmful_condition"))
    proof.note("benign region in n:", benign)
    proof.note("harmful region in n:", harmful)
    proof.require(isinstance(benign, sp.Interval) and benign.sup == sp.oo and benign.inf.is_positive,
                  "the benign region is [n*, oo): enough samples make overfitting benign")
    proof.require(isinstance(harmful, sp.Interval) and harmful.inf == 0 and harmful.sup.is_finite,
                  "the harmful region is (0, n**]: too few samples")
    if not (isinstance(benign, sp.Interval) and isinstance(harmful, sp.Interval)):
        return benign, harmful
    overlap = sp.factor(harmful.sup - benign.inf)
    proof.note("a common point needs n** - n* >= 0, with n** - n* =", overlap)
    k = sp.Symbol("k", positive=True)
    proof.require_sign(overlap.subs(C3, C1 / (1 + k)), -1, "n** - n* at C3 = C1/(1 + k), k > 0 (C3 < C1)")
    proof.require_sign(overlap.subs(C3, C1 * (1 + k)), 1, "n** - n* at C3 = C1 (1 + k) (C3 > C1: the regions meet)")
    return benign, harmful


for _name in ("cao_benign", "chen_sgd"):
    check(f"{_name}_regions_disjoint", f"{get(_name).source.split(',')[0]}: solved for n, the benign region is "
          "[n*, oo), the harmful one (0, n**], and they are disjoint iff C3 < C1", get(_name).tag)(
        lambda proof, _name=_name: _regions(proof, _name))
del _name


HARMFUL_LEVELS = (("kou_bounds", "harmful_error", p), ("chen_sgd", "harmful_error", p),
                  ("unlearning_thm_3_2", "harmful_error_with_floor", p), ("unlearning_thm_3_2", "harmful_error", 0))


@check("harmful_error_is_above_the_floor", "(K), (C) SGD, (U) Thm 3.2: each harmful error bound is a lower bound on "
       "the test error that excludes the benign floor (p, or 0 without the floor) and admits p + 2/10", "hi")
def harmful_error_is_above_the_floor(proof: Proof) -> None:
    for name, key, floor in HARMFUL_LEVELS:
        relation = get(name).relations[key]
        proof.require_decided(relation.subs(test_error, floor), False, f"{name}.{key} at test error {floor}")
        proof.require_decided(relation.subs(test_error, p + 2 * HARMFUL_EXCESS), True,
                              f"{name}.{key} at test error p + 2/10")
    bound_limit = sp.limit(_kou_bound(), n, sp.oo)
    proof.require_decided(get("kou_bounds").relations["harmful_error"].subs(test_error, bound_limit), False,
                          "(K) harmful bound at the benign bound's limit (n -> oo)")


# --- (C) SAM vs SGD ---------------------------------------------------------------------------------------------

@check("sam_only_window_nonempty", "(C) the SAM-only benign window C_sam <= ||mu|| < ||mu||*_SGD is non-empty iff "
       "d/n > C_sam^4 / (C1 P^4 sigma_p^4)", "med")
def sam_only_window_nonempty(proof: Proof) -> None:
    window = get("chen_sam").relations["window"]
    upper = next(rel.rhs for rel in window.args if isinstance(rel, sp.StrictLessThan))
    proof.note("window:", window)
    at_ratio = sp.simplify(upper.subs(d, snr_ratio * n))
    proof.note("upper end with d = r n:", at_ratio)
    proof.require_sign(sp.diff(at_ratio, snr_ratio), 1, "d(upper end)/dr")
    proof.note("both sides positive and t -> t^4 increasing: C_sam < upper  <=>  C_sam^4 < upper^4 =",
               sp.expand(at_ratio**4))
    solved = sp.solve(sp.Lt(C_sam**4, sp.expand(at_ratio**4)), snr_ratio)
    proof.note("solve for r:", solved)
    expected = sp.Gt(snr_ratio, C_sam**4 / (C1 * P**4 * sigma_p**4))
    proof.require(sp.simplify(solved) == expected, f"solution is {sp.sstr(expected)}")


@check("sgd_sam_threshold_ratio", "(C) ||mu||*_SGD / C_sam grows like (d/n)^(1/4) P sigma_p "
       "(docs/model.md#checkable-predictions, prediction 4)", "med")
def sgd_sam_threshold_ratio(proof: Proof) -> None:
    sam_threshold = get("chen_sam").relations["benign_condition"].rhs
    proof.require_free_of(sam_threshold, (d, n, P, sigma_p), "SAM threshold")
    ratio = sp.simplify(_sgd_threshold() / sam_threshold)
    proof.note("ratio =", ratio)
    for symbol, slope in ((d, sp.Rational(1, 4)), (n, sp.Rational(-1, 4)), (P, 1), (sigma_p, 1)):
        proof.require_slope(ratio, symbol, slope, "ratio")


@check("sam_radius_switches_activation", "(C) with tau = m sqrt(B)/(P sigma_p sqrt d) and sigma_0 = 1/(P sigma_p "
       "sqrt d), SAM's perturbation along a training noise patch is of the order of the initial pre-activation "
       "sigma_0 sigma_p sqrt d: their ratio is free of d, n, sigma_p, B (depends on m, P only)", "med")
def sam_radius_switches_activation(proof: Proof) -> None:
    rel = get("chen_sam").relations
    general, at_choice = rel["perturbation_along_noise_at_radius"], rel["perturbation_along_noise"]
    init = rel["init_preactivation"]
    proof.note("reconstruction (statements.sam_gradient_model): <eps, xi_i> =", general)
    extra_patches = sp.Symbol("P_noise", positive=True)
    proof.note("P >= 2 written as P = 1 + P_noise, P_noise > 0")
    proof.require_sign(general.subs(P, 1 + extra_patches), -1, "<eps_{y_i,r}, xi_i>")
    proof.require_zero(general.subs(tau, rel["radius"].rhs) - at_choice, "at tau = (C)'s choice it equals")
    proof.note("initial pre-activation sigma_0 sigma_p sqrt d at (C)'s sigma_0 =", init)
    proof.require_zero(init - (sigma_0 * sigma_p * sp.sqrt(d)).subs(sigma_0, rel["init_scale"].rhs),
                       "it is sigma_0 sigma_p sqrt d")
    ratio = sp.simplify(-at_choice / init)
    proof.require_free_of(ratio, (d, n, sigma_p, B, mu, loss_slope), "|<eps, xi_i>| / (sigma_0 sigma_p sqrt d)")
    switching = sp.solve(sp.Eq(-general, init), tau)
    proof.note("radius at which |<eps, xi_i>| equals the initial pre-activation:", switching)
    if proof.require(len(switching) == 1, "one positive solution"):
        proof.require_free_of(rel["radius"].rhs / switching[0], (d, n, sigma_p, B), "tau_choice / tau_switch")
    proof.note("so the activation switches off when m >= P - 1 (ratio sqrt(m/(P-1)) >= 1); m and P are constants "
               "in (C), and (C)'s tau carries one more factor sqrt(m) than needed in this reconstruction")


# --- unlearning (U) ---------------------------------------------------------------------------------------------

@check("lemma_3_1_neggrad_flips_perturbation", "(U) Lemma 3.1, reconstructed: under SAM-NegGrad the perturbation "
       "lowers the pre-activation of retain noise (switching it off once larger than it) and raises that of forget "
       "noise, so SAM's noise step equals SGD's on F and vanishes on R", "seen", reconstruction=True)
def lemma_3_1_neggrad_flips_perturbation(proof: Proof) -> None:
    rel = get("unlearning_lemma_3_1").relations
    in_range = {alpha: 1 / (1 + u)}
    proof.note("alpha in (0, 1) written as alpha = 1/(1 + u), u > 0")
    retain, forget = (rel[k].subs(in_range) for k in ("perturbation_along_noise_retain",
                                                       "perturbation_along_noise_forget"))
    proof.require_sign(retain, -1, "<eps, xi_i>, i in R")
    proof.require_sign(forget, 1, "<eps, xi_i>, i in F")
    sam_forget = rel["noise_step_sam_forget"].subs(in_range)
    proof.note("SAM noise step on F, Heaviside evaluated from the signs:", sam_forget)
    proof.require_zero(sam_forget - rel["noise_step_sgd_forget"].subs(in_range), "SAM step on F = SGD step on F")
    v = sp.Symbol("v", positive=True)
    switched = rel["noise_step_sam_retain"].subs(preactivation, -rel["perturbation_along_noise_retain"] / (1 + v))
    switched = switched.replace(sp.Heaviside, lambda arg, *rest: sp.Heaviside(sp.factor(arg), *rest))
    proof.note("SAM noise step on R when |<eps, xi_i>| = (1 + v) a0, v > 0:", switched)
    proof.require_zero(switched, "SAM step on R vanishes")
    active = rel["noise_step_sam_retain"].subs(preactivation, -rel["perturbation_along_noise_retain"] * (1 + v))
    active = active.replace(sp.Heaviside, lambda arg, *rest: sp.Heaviside(sp.factor(arg), *rest))
    proof.require_zero(active - rel["noise_step_sgd_retain"], "SAM step on R = SGD step while a0 = (1 + v) "
                       "|<eps, xi_i>| (the perturbation is too small to switch the neuron off)")
    proof.require_decided(rel["forget_like_sgd"].subs(in_range), True, "relation forget_like_sgd")
    denoised = rel["retain_denoised"]
    if proof.require(isinstance(denoised, sp.Implies), "relation retain_denoised is an implication"):
        for label, factor, holds in (("switched off", 1 / (1 + v), True), ("still active", 1 + v, False)):
            at = {preactivation: -rel["perturbation_along_noise_retain"] * factor}
            proof.require_decided(denoised.args[0].subs(at), holds, f"its premise, neuron {label}")
        at = {preactivation: -rel["perturbation_along_noise_retain"] / (1 + v)}
        proof.require_decided(denoised.args[1].subs(at), True, "its conclusion, neuron switched off")


@check("thm_3_2_retain_threshold_above_full", "(U) Thm 3.2: the SGD-NegGrad threshold with n = n_R exceeds the one "
       "with n = n_R + n_F, by a relative ~ n_F/(4 n_R)", "seen")
def thm_3_2_retain_threshold_above_full(proof: Proof) -> None:
    rel = get("unlearning_thm_3_2").relations
    ratio = sp.simplify(rel["threshold_retain"] / rel["threshold_all"])
    proof.note("threshold(n_R) / threshold(n_R + n_F) =", ratio)
    proof.require_sign(sp.simplify(ratio**4 - 1), 1, "ratio^4 - 1")
    f = sp.Symbol("f", positive=True)
    series = sp.series(sp.simplify(ratio.subs(n_F, f * n_R)) - 1, f, 0, 3).removeO()
    proof.note("relative gap, n_F = f n_R, to second order:", series)
    proof.require_zero(series.coeff(f, 1) - sp.Rational(1, 4), "first-order coefficient is 1/4")
    five_percent = (ratio.subs(n_F, f * n_R) - 1).subs(f, sp.Rational(5, 95))
    proof.note("at |F| = 5% of |S| the relative gap is", sp.N(five_percent, 3))


@check("thm_3_2_matches_chen_sgd", "(U) Thm 3.2's threshold has (C)'s SGD scaling in d, n, P, sigma_p; the two agree "
       "when C1_U = C1^(1/4)", "derived")
def thm_3_2_matches_chen_sgd(proof: Proof) -> None:
    unlearning = get("unlearning_thm_3_2").relations["threshold"]
    ratio = sp.simplify(unlearning / _sgd_threshold())
    proof.require_free_of(ratio, (d, n, P, sigma_p), "threshold_U / threshold_C")
    proof.require_zero(ratio.subs(C1_U, C1 ** sp.Rational(1, 4)) - 1, "ratio at C1_U = C1^(1/4) is 1")


@check("thm_3_3_window_with_thm_3_2", "(U) Thm 3.3: SAM-NegGrad's threshold on ||phi|| is free of d and n, and the "
       "window where SAM-NegGrad is benign below SGD-NegGrad's Thm 3.2 threshold is non-empty exactly for large d/n",
       "seen")
def thm_3_3_window_with_thm_3_2(proof: Proof) -> None:
    condition = get("unlearning_thm_3_3").relations["benign_condition"]
    solved = sp.solve(sp.Eq(condition.lhs, condition.rhs), phi)
    proof.note("Thm 3.3 boundary solved for ||phi||:", solved)
    if not proof.require(len(solved) == 1, "one positive solution"):
        return
    sam = solved[0]
    proof.require_free_of(sam, (d, n, n_R, n_F), "SAM-NegGrad threshold")
    sgd = get("unlearning_thm_3_2").relations["threshold"]
    upper = sp.simplify(sgd.subs(d, snr_ratio * n))
    proof.note("Thm 3.2 threshold with d = r n:", upper)
    window = sp.solve(sp.Lt(sam.subs(d, snr_ratio * n) ** 4, sp.expand(upper**4)), snr_ratio)
    proof.note("SAM threshold < SGD threshold solved for r = d/n:", window)
    large = isinstance(window, sp.StrictGreaterThan) and window.lhs == snr_ratio and window.rhs.is_positive
    if proof.require(large, "the window is non-empty iff d/n exceeds a positive constant"):
        proof.require_free_of(window.rhs, (d, n, n_R, n_F), "that constant")


@check("lemma_3_4_surplus_is_a_difference", "(U) Lemma 3.4 (a difference: docs/model.md#theory-statements): "
       "from the kappa step "
       "(eta ||phi||^2/m) sum_i a_i |l'(z_i)| yhat_i y_i sigma'_i at W (SGD) and W + eps (SAM), early on (margins "
       "z_i = delta (phi c_i + b_i), delta -> 0) the SAM - SGD difference scales like ||phi||^2 and the ratio is free "
       "of ||phi||; the stated surplus has the difference's order and is positive, the stated ratio read-out has the "
       "ratio's order", "seen", reconstruction=True)
def lemma_3_4_surplus_is_a_difference(proof: Proof) -> None:
    rel = get("unlearning_lemma_3_4").relations
    delta = sp.Symbol("delta", positive=True)
    signs = (1, 1, -1)  # two clean retain samples and one with a flipped label
    weights = sp.symbols("a1:4", positive=True)

    def step(optimizer: str) -> sp.Expr:
        active = sp.symbols(f"A_{optimizer}_1:4", nonnegative=True)
        slope, offset = sp.symbols(f"c_{optimizer}_1:4", real=True), sp.symbols(f"b_{optimizer}_1:4", real=True)
        margins = [delta * (phi * c + b) for c, b in zip(slope, offset, strict=True)]
        return kappa_step(weights, signs, active, margins)

    sgd, sam = step("SGD"), step("SAM")
    proof.note("kappa step of SGD (statements.kappa_step):", sgd)
    leading_sgd, leading_sam = sgd.subs(delta, 0), sam.subs(delta, 0)
    difference, ratio = sp.factor(leading_sam - leading_sgd), sp.simplify(leading_sam / leading_sgd)
    proof.note("leading order (delta -> 0): SAM - SGD =", difference)
    proof.require_slope(difference, phi, 2, "SAM - SGD step")
    proof.require_free_of(ratio, (phi,), "leading-order SAM / SGD step")
    correction = sp.diff(sam / sgd, delta).subs(delta, 0)
    proof.require_zero(sp.diff(correction, phi, 2), "the ratio's first correction in delta is linear in ||phi|| "
                       "(||phi|| enters the ratio only as delta ||phi||, small early on)")
    surplus, readout = rel["signal_surplus"], rel["rate_ratio_readout"]
    proof.note("stated surplus:", surplus)
    proof.require_free_of(difference / surplus, (phi,), "model difference / stated surplus")
    proof.require_free_of(ratio / readout, (phi,), "model ratio / stated ratio read-out")
    proof.require_sign(surplus, 1, "stated surplus (SAM learns retain signal faster)")
    proof.require_free_of(surplus / phi**2, (d, n, n_R, n_F), "stated surplus / ||phi||^2")


@check("surplus_matches_alpha_gap", "(U) at the SGD boundary with P sigma_p = 1, ||phi||^2 = sqrt(C1) sqrt(d/n): the "
       "signal surplus Theta(||phi||^2) has the order O(sqrt(d/n)) of the alpha gap", "derived", reconstruction=True)
def surplus_matches_alpha_gap(proof: Proof) -> None:
    squared = sp.simplify((_sgd_threshold() ** 2).subs(sigma_p, 1 / P))
    proof.note("||mu||*_SGD^2 at sigma_p = 1/P:", squared)
    proof.require_zero(squared - sp.sqrt(C1) * sp.sqrt(d / n), "equals sqrt(C1) sqrt(d/n)")
    surplus = get("unlearning_lemma_3_4").relations["signal_surplus"].subs(phi, sp.sqrt(squared))
    gap = get("alpha_threshold").relations["gap_order"]
    proof.note("surplus at the boundary:", surplus)
    proof.require_free_of(surplus / gap, (d, n), "surplus / alpha-gap order")
    general = sp.simplify(_sgd_threshold() ** 2 / (sp.sqrt(d / n) * P**2 * sigma_p**2))
    proof.require_free_of(general, (d, n, P, sigma_p), "in general ||mu||*^2 / (sqrt(d/n) P^2 sigma_p^2)")
    squared_u = get("unlearning_thm_3_2").relations["threshold"] ** 2
    proof.require_free_of(squared_u / (sp.sqrt(d / n) * P**2 * sigma_p**2), (d, n, P, sigma_p),
                          "same with U Thm 3.2's form")


@check("alpha_ordering_follows_surplus", "(U) alpha thresholds, reconstructed: in a linear model of NegGrad's signal "
       "race (docs/model.md#unlearning-objectives: forget signal enters with weight -(1 - alpha)), alpha*_M solves "
       "alpha r_M - (1 - alpha) f = N; "
       "with SAM's retain rate r_SGD + the Lemma 3.4 surplus, the stated ordering of alpha*_SGD and alpha*_SAM "
       "follows, and the gap is first order in the surplus", "seen", reconstruction=True)
def alpha_ordering_follows_surplus(proof: Proof) -> None:
    rate, forget_rate, noise = sp.symbols("r_SGD f_F N", positive=True)
    a = sp.Symbol("a")
    surplus = get("unlearning_lemma_3_4").relations["signal_surplus"]
    race = sp.Eq(a * rate - (1 - a) * forget_rate, noise)
    proof.note("alpha* solves", race)
    thresholds = {}
    for label, retain_rate in (("SGD", rate), ("SAM", rate + surplus)):
        solved = sp.solve(race.subs(rate, retain_rate), a)
        if not proof.require(len(solved) == 1, f"one alpha*_{label}"):
            return
        thresholds[label] = sp.simplify(solved[0])
        proof.note(f"alpha*_{label} =", thresholds[label])
    ordering = get("alpha_threshold").relations["ordering"]
    proof.require_decided(ordering.subs({alpha_star_sgd: thresholds["SGD"], alpha_star_sam: thresholds["SAM"]}), True,
                          "the stated ordering at the model's thresholds")
    s = sp.Symbol("s", positive=True)
    gap = (thresholds["SGD"] - thresholds["SAM"]).subs(surplus, s)
    first = sp.simplify(sp.diff(gap, s).subs(s, 0))
    proof.require_sign(first, 1, "alpha*_SGD - alpha*_SAM with surplus s, first order in s")
    proof.require_zero(gap.subs(s, 0), "no surplus, no gap")


@check("sharp_minmax_threshold_ordering", "(U) remark, reconstructed: for every constant the remark allows, the Sharp "
       "MinMax forget part's threshold C_maxpart ||phi||*_SGD (U Thm 3.2) is at least SGD's, the stated ordering "
       "says the same, and the threshold keeps SGD's slopes in d and n", "seen", reconstruction=True)
def sharp_minmax_threshold_ordering(proof: Proof) -> None:
    rel = get("sharp_minmax_remark").relations
    sgd = get("unlearning_thm_3_2").relations["threshold"]
    solved = sp.solve(rel["threshold"], phi_star_maxpart)
    if not proof.require(len(solved) == 1, "one phi*_maxpart solves the threshold relation"):
        return
    maxpart = solved[0]
    allowed = solution_in(rel["constant"], C_maxpart)
    proof.note("constants allowed by the remark:", allowed)
    proof.require(sp.Rational(1, 2) not in allowed, "C_maxpart = 1/2 (max part benign below SGD) is excluded")
    for value in (1, 2, 10):
        if value in allowed:
            at = maxpart.subs(C_maxpart, value)
            proof.require_decided(sp.Ge(at, sgd), True, f"phi*_maxpart >= phi*_SGD at allowed C_maxpart = {value}")
            proof.require_decided(rel["ordering"].subs(phi_star_maxpart, at), True,
                                  f"stated ordering at C_maxpart = {value}")
    proof.require_decided(rel["ordering"].subs(phi_star_maxpart, sgd / 2), False,
                          "stated ordering with the max part at half SGD's threshold")
    proof.require_slope(maxpart, d, sp.Rational(1, 4), "phi*_maxpart")
    proof.require_slope(maxpart, n, sp.Rational(-1, 4), "phi*_maxpart")


@check("alpha_gap_bound_consistent", "(U) alpha thresholds, reconstructed: the gap bound is an upper bound on "
       "alpha*_SGD - alpha*_SAM by the stated gap order, which grows in d and vanishes as n -> oo with slopes +1/2 "
       "and -1/2 (docs/model.md#checkable-predictions, prediction 9)", "seen", reconstruction=True)
def alpha_gap_bound_consistent(proof: Proof) -> None:
    rel = get("alpha_threshold").relations
    gap, bound = rel["gap_order"], rel["gap_bound"]
    difference = alpha_star_sgd - alpha_star_sam
    proof.require_decided(bound.subs(alpha_star_sgd, alpha_star_sam + gap), True, "bound at a gap equal to the order")
    proof.require_decided(bound.subs(alpha_star_sgd, alpha_star_sam + 2 * gap), False, "bound at twice the order")
    proof.require_decided(bound.subs(alpha_star_sgd, alpha_star_sam), True, "bound at no gap")
    proof.note("bound compares", difference)
    proof.require_sign(sp.diff(gap, d), 1, "d gap / d d")
    proof.require(sp.limit(gap, n, sp.oo) == 0, "the gap order vanishes as n -> oo")
    proof.require_slope(gap, d, sp.Rational(1, 2), "gap")
    proof.require_slope(gap, n, sp.Rational(-1, 2), "gap")


# --- (K) bounds -------------------------------------------------------------------------------------------------

def _kou_bound():
    return get("kou_bounds").relations["benign_error_bound"]


@check("kou_bound_tends_to_p", "(K) the benign bound p + exp(-n ||mu||^4/(C2 d sigma_p^4)) tends to p as "
       "n ||mu||^4 / d -> infinity", "hi")
def kou_bound_tends_to_p(proof: Proof) -> None:
    bound = _kou_bound()
    proof.note("bound =", bound)
    for symbol in (n, mu):
        limit = sp.limit(bound, symbol, sp.oo)
        proof.require(sp.simplify(limit - p) == 0, f"limit {symbol} -> oo is {sp.sstr(limit)}")
    x = sp.Symbol("x", positive=True)
    in_x = sp.simplify(bound.subs(n, x * d * sigma_p**4 / mu**4))
    proof.note("with x = n ||mu||^4 / (d sigma_p^4):", in_x)
    proof.require(sp.simplify(sp.limit(in_x, x, sp.oo) - p) == 0, "limit x -> oo is p")
    proof.note("limit x -> 0+ is", sp.limit(in_x, x, 0, "+"))


@check("kou_bound_monotone", "(K) the benign bound decreases in n and ||mu|| and increases in d and sigma_p", "hi")
def kou_bound_monotone(proof: Proof) -> None:
    bound = _kou_bound()
    for symbol, sign in ((n, -1), (mu, -1), (d, 1), (sigma_p, 1)):
        proof.require_sign(sp.diff(bound, symbol), sign, f"d bound / d{symbol}")


@check("kou_log_excess_linear", "(K) log(error bound - p) is linear in n ||mu||^4 / (d sigma_p^4) with slope -1/C2 "
       "(docs/model.md#checkable-predictions, prediction 3)", "hi")
def kou_log_excess_linear(proof: Proof) -> None:
    x = sp.Symbol("x", positive=True)
    log_excess = sp.expand_log(sp.log(_kou_bound() - p), force=True)
    in_x = sp.simplify(log_excess.subs(n, x * d * sigma_p**4 / mu**4))
    proof.note("log(bound - p) with x = n ||mu||^4 / (d sigma_p^4):", in_x)
    proof.require_zero(sp.diff(in_x, x, 2), "second derivative in x is 0")
    proof.require_zero(sp.diff(in_x, x) + 1 / C2, "slope is -1/C2")


@check("kou_constants_consistent", "(K) derived: solved for n, the benign and harmful regions are disjoint iff "
       "C3 < C1, and the benign bound at the benign boundary is below the harmful level p + 0.1 iff C1 > C2 ln 10",
       "derived")
def kou_constants_consistent(proof: Proof) -> None:
    rel = get("kou_bounds").relations
    benign, _ = _regions(proof, "kou_bounds")
    if not isinstance(benign, sp.Interval):
        return
    at_boundary = _kou_bound().subs(n, benign.inf)
    proof.note("bound at the benign boundary n* =", at_boundary)
    solved = sp.solve(sp.Lt(at_boundary, rel["harmful_error"].rhs), C1)
    proof.note("bound < harmful level solved for C1:", solved)
    proof.require(sp.simplify(solved) == sp.Gt(C1, C2 * sp.log(10)), "C1 > C2 log(10)")


@check("kou_time_bound_direction", "(K) the time bound is a lower bound on the number of steps: enough steps satisfy "
       "it, few do not, and the required T grows as the target loss eps falls and shrinks as d grows", "hi")
def kou_time_bound_direction(proof: Proof) -> None:
    relation = get("kou_bounds").relations["time_bound"]
    proof.require_limit(relation, T, sp.oo, True, "time bound")
    proof.require_limit(relation, T, 0, False, "time bound")
    region = solution_in(relation, T)
    proof.note("steps allowed:", region)
    if proof.require(isinstance(region, sp.Interval) and region.sup == sp.oo, "allowed steps are [T*, oo)"):
        proof.require_sign(sp.diff(region.inf, eps), -1, "d T* / d eps")
        proof.require_sign(sp.diff(region.inf, d), -1, "d T* / d d")


# --- dimensions -------------------------------------------------------------------------------------------------

@check("snr_conditions_scale_invariant", "scaling every length (||mu||, sigma_p) by lambda leaves the SNR conditions "
       "and the (K) bound unchanged (degree 0), thresholds scale like lengths (degree 1), tau and sigma_0 like weights "
       "(degree -1)", "derived")
def snr_conditions_scale_invariant(proof: Proof) -> None:
    lengths = {mu: lam, phi: lam, sigma_p: lam}
    conditions = {"(Cao) benign": get("cao_benign").relations["benign_condition"],
                  "(K) benign": get("kou_bounds").relations["benign_condition"],
                  "(C) SGD benign": get("chen_sgd").relations["benign_condition"],
                  "(U) Thm 3.2": get("unlearning_thm_3_2").relations["benign_condition"]}
    for label, relation in conditions.items():
        proof.require_zero(scaling_ratio(condition_ratio(relation), lengths) - 1, f"{label}: lhs/rhs has degree 0")
    proof.require_zero(scaling_ratio(_kou_bound(), lengths) - 1, "(K) error bound has degree 0")
    for label, threshold in (("(C) ||mu||*", _sgd_threshold()), ("(Cao) ||mu||*", get("cao_benign").relations[
            "threshold"]), ("(U) ||phi||*", get("unlearning_thm_3_2").relations["threshold"])):
        proof.require_zero(scaling_ratio(threshold, lengths) - lam, f"{label} has degree 1")
    rel = get("chen_sam").relations
    for label, value in (("tau", rel["radius"].rhs), ("sigma_0", rel["init_scale"].rhs)):
        proof.require_zero(scaling_ratio(value, lengths) - 1 / lam, f"(C) {label} has degree -1")
    proof.require_zero(scaling_ratio(rel["init_preactivation"], lengths) - 1, "initial pre-activation has degree 0")
    degree = log_slope(scaling_ratio(condition_ratio(rel["benign_condition"]), lengths), lam)
    proof.note(f"note: (C)'s SAM condition ||mu|| >= C_sam has degree {sp.sstr(degree)}: it is stated at a fixed "
               "noise scale, so C_sam carries the unit of a length")
