"""Deliberately wrong statements, to show that the checks of :mod:`theory.checks` can fail (mutation testing).

Each :class:`Mutation` replaces one entry of :data:`theory.statements.STATEMENTS` by a builder that returns the
original statement with a relation changed (a condition reversed, an exponent changed, a sign flipped); statements
built on it (the SAM window on the SGD threshold, the Sharp MinMax remark on U Thm 3.2) see the change through
:func:`theory.statements.get`. :func:`run_mutations` applies each in turn — restoring the registry afterwards, even on
error — runs every check, and records which fail. A mutation that no check notices is a blind spot of the checks:

    python -m theory mutations          # table: mutation, statement, failed checks; exit 1 on a blind spot
    python -m theory mutations --json   # JSON list of {mutation, statement, description, failed_checks}

Which checks run under a mutation: the unmutated run records, per check, every statement it builds through ``get``
(nested builds included, :func:`theory.statements.recording_reads`). A check that never built the mutated statement
sees exactly the same values under the mutation, so it takes the same path and returns the same (passing) result:
it is skipped. ``all_checks=True`` runs every check anyway (``python -m theory mutations --all-checks``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sympy as sp

from . import statements
from .checks import CHECKS
from .statements import HARMFUL_EXCESS, Statement, recording_reads
from .symbols import C1_U, C_sam, C_surplus, d, mu, n, n_F, n_R, p, phi, preactivation, q, tau

Transform = Callable[[Statement], Statement]


@dataclass(frozen=True)
class Mutation:
    """A wrong version of statement ``statement``: ``transform`` maps the correct statement to the wrong one."""

    name: str
    statement: str
    description: str
    transform: Transform


@dataclass(frozen=True)
class MutationResult:
    """Checks that failed under one mutation; ``changed`` is False when the mutated statement equals the original
    (a mutation that does nothing, like the identity control), ``checks_run`` how many checks read the statement."""

    mutation: str
    statement: str
    description: str
    failed_checks: list[str]
    changed: bool = True
    checks_run: int = 0

    @property
    def caught(self) -> bool:
        return bool(self.failed_checks)

    def to_dict(self) -> dict:
        return {"mutation": self.mutation, "statement": self.statement, "description": self.description,
                "failed_checks": list(self.failed_checks), "caught": self.caught, "changed": self.changed,
                "checks_run": self.checks_run}


@dataclass(frozen=True)
class MutationReport:
    """The unmutated run (``baseline_failures`` must be empty) and one result per mutation."""

    baseline_failures: list[str]
    results: list[MutationResult]

    @property
    def missed(self) -> list[str]:
        return [r.mutation for r in self.results if not r.caught]

    @property
    def ok(self) -> bool:
        return not self.baseline_failures and not self.missed


@contextlib.contextmanager
def applied(mutation: Mutation) -> Iterator[None]:
    """Replace the registry entry of ``mutation.statement`` for the duration of the block, then restore it."""
    original = statements.STATEMENTS[mutation.statement]

    def mutated() -> Statement:
        return mutation.transform(original())

    statements.STATEMENTS[mutation.statement] = mutated
    try:
        yield
    finally:
        statements.STATEMENTS[mutation.statement] = original


# --- transforms -------------------------------------------------------------------------------------------------

REVERSED = {sp.GreaterThan: sp.LessThan, sp.LessThan: sp.GreaterThan,
            sp.StrictGreaterThan: sp.StrictLessThan, sp.StrictLessThan: sp.StrictGreaterThan}


def relation(key: str, change: Callable[[sp.Basic], sp.Basic]) -> Transform:
    """Transform replacing relation ``key`` by ``change(old)``."""
    def transform(statement: Statement) -> Statement:
        relations = dict(statement.relations)
        relations[key] = change(relations[key])
        return dataclasses.replace(statement, relations=relations)
    return transform


def reversed_inequality(key: str) -> Transform:
    """``a >= b`` becomes ``a <= b`` (and ``>`` becomes ``<``)."""
    return relation(key, lambda rel: REVERSED[type(rel)](rel.lhs, rel.rhs))


def substituted(mapping: Callable[[Statement], dict]) -> Transform:
    """Transform replacing subexpressions in every relation (``xreplace``), the mapping built from the statement."""
    def transform(statement: Statement) -> Statement:
        swap = mapping(statement)
        relations = {key: value.xreplace(swap) for key, value in statement.relations.items()}
        return dataclasses.replace(statement, relations=relations)
    return transform


def _fingerprint(statement: Statement) -> dict[str, str]:
    return {key: sp.srepr(value) for key, value in statement.relations.items()}


def _identity(statement: Statement) -> Statement:
    return statement


IDENTITY = Mutation("identity", "chen_sgd", "control: changes nothing, so no check may fail", _identity)


def _lemma_3_1_signs(statement: Statement) -> dict:
    rel = statement.relations
    retain, forget = rel["perturbation_along_noise_retain"], rel["perturbation_along_noise_forget"]
    return {retain: -retain, forget: -forget}


def _lemma_3_1_sam_denoises_forget(statement: Statement) -> Statement:
    rel = dict(statement.relations)
    step = rel["noise_step_sgd_forget"] * sp.Heaviside(preactivation - rel["perturbation_along_noise_forget"])
    rel["noise_step_sam_forget"] = step
    rel["forget_like_sgd"] = sp.Eq(step, rel["noise_step_sgd_forget"], evaluate=False)
    return dataclasses.replace(statement, relations=rel)


def _kou_exponent(statement: Statement) -> dict:
    bound = statement.relations["benign_error_bound"]
    exponent = next(arg for arg in bound.args if isinstance(arg, sp.exp))
    return {exponent: exponent.xreplace({mu**4: mu**2})}


# --- the mutations ----------------------------------------------------------------------------------------------

def _reversed_premise(implication: sp.Implies) -> sp.Implies:
    premise, conclusion = implication.args
    return sp.Implies(REVERSED[type(premise)](premise.lhs, premise.rhs), conclusion)


QUARTER, HALF = sp.Rational(1, 4), sp.Rational(1, 2)

_TABLE: list[tuple[str, str, str, Transform]] = [  # name, statement, what is wrong, transform
    # benign / harmful directions
    ("cao_benign_reversed", "cao_benign", "(Cao) benign condition n ||mu||^q >= ... reversed to <=",
     reversed_inequality("benign_condition")),
    ("cao_harmful_reversed", "cao_benign", "(Cao) harmful condition <= reversed to >=",
     reversed_inequality("harmful_condition")),
    ("kou_benign_reversed", "kou_bounds", "(K) benign condition >= reversed to <=",
     reversed_inequality("benign_condition")),
    ("kou_harmful_reversed", "kou_bounds", "(K) harmful condition <= reversed to >=",
     reversed_inequality("harmful_condition")),
    ("chen_sgd_benign_reversed", "chen_sgd", "(C) SGD benign condition >= reversed to <=",
     reversed_inequality("benign_condition")),
    ("chen_sgd_harmful_reversed", "chen_sgd", "(C) SGD harmful condition <= reversed to >=",
     reversed_inequality("harmful_condition")),
    ("chen_sam_benign_reversed", "chen_sam", "(C) SAM benign condition ||mu|| >= C_sam reversed to <=",
     reversed_inequality("benign_condition")),
    ("thm_3_2_benign_reversed", "unlearning_thm_3_2", "U Thm 3.2 benign condition ||phi|| >= threshold reversed",
     reversed_inequality("benign_condition")),
    ("thm_3_3_benign_reversed", "unlearning_thm_3_3", "U Thm 3.3 benign condition ||phi|| >= C_sam reversed",
     reversed_inequality("benign_condition")),
    ("kou_time_bound_reversed", "kou_bounds", "(K) time bound T >= ... reversed to T <= ...",
     reversed_inequality("time_bound")),
    # exponents
    ("chen_sgd_threshold_square_root", "chen_sgd", "(C) SGD threshold (C1 d/n)^(1/4) P sigma_p: 1/4 -> 1/2",
     relation("threshold", lambda t: t.xreplace({QUARTER: HALF}))),
    ("cao_threshold_q_to_2", "cao_benign", "(Cao) threshold exponent 1/q -> 1/2 (ReLU's q = 2)",
     relation("threshold", lambda t: t.xreplace({1 / q: HALF}))),
    ("kou_exponent_mu_squared", "kou_bounds", "(K) bound exp(-n ||mu||^4 / (C2 d sigma_p^4)): ||mu||^4 -> ||mu||^2",
     substituted(_kou_exponent)),
    ("thm_3_2_square_root_in_d", "unlearning_thm_3_2", "U Thm 3.2 threshold d^(1/4) -> d^(1/2) (every form)",
     substituted(lambda s: {d**QUARTER: d**HALF})),
    ("alpha_gap_fourth_root", "alpha_threshold", "alpha gap order sqrt(d/n) -> (d/n)^(1/4) (order and bound)",
     substituted(lambda s: {sp.sqrt(d): d**QUARTER, 1 / sp.sqrt(n): n**-QUARTER})),
    ("surplus_cubic", "unlearning_lemma_3_4", "Lemma 3.4 surplus C_surplus ||phi||^2 -> C_surplus ||phi||^3",
     relation("signal_surplus", lambda s: s * phi)),
    # d-dependence where there is none, and a radius of the wrong order
    ("chen_sam_grows_with_d", "chen_sam", "(C) SAM threshold C_sam -> C_sam d^(1/4)",
     relation("benign_condition", lambda rel: sp.Ge(rel.lhs, rel.rhs * d**QUARTER))),
    ("thm_3_3_grows_with_d", "unlearning_thm_3_3", "U Thm 3.3 threshold C_sam -> C_sam d^(1/4)",
     relation("benign_condition", lambda rel: sp.Ge(rel.lhs, C_sam * d**QUARTER))),
    ("chen_sam_radius_over_d", "chen_sam", "(C) SAM radius m sqrt(B) / (P sigma_p sqrt d) -> m sqrt(B) / (P sigma_p d)",
     relation("radius", lambda rel: sp.Eq(tau, rel.rhs / sp.sqrt(d), evaluate=False))),
    # limits and levels
    ("kou_bound_tends_to_2p", "kou_bounds", "(K) benign bound p + exp(...) -> 2p + exp(...): tends to 2p, not p",
     relation("benign_error_bound", lambda b: b + p)),
    ("kou_harmful_excess_negative", "kou_bounds", "(K) harmful error >= p + 0.1 -> >= p - 0.1",
     relation("harmful_error", lambda rel: sp.Ge(rel.lhs, p - HARMFUL_EXCESS))),
    ("chen_sgd_harmful_excess_negative", "chen_sgd", "(C) SGD harmful error >= p + 0.1 -> >= p - 0.1",
     relation("harmful_error", lambda rel: sp.Ge(rel.lhs, p - HARMFUL_EXCESS))),
    ("thm_3_2_harmful_excess_negative", "unlearning_thm_3_2", "U Thm 3.2 harmful error >= 0.1 -> >= -0.1",
     relation("harmful_error", lambda rel: sp.Ge(rel.lhs, -HARMFUL_EXCESS))),
    # orderings, signs and constants of the unlearning statements
    ("alpha_ordering_reversed", "alpha_threshold", "alpha*_SGD > alpha*_SAM reversed to <",
     reversed_inequality("ordering")),
    ("surplus_negative", "unlearning_lemma_3_4", "Lemma 3.4 surplus -> -C_surplus ||phi||^2 (SGD learns signal faster)",
     relation("signal_surplus", lambda s: -s)),
    ("surplus_as_ratio", "unlearning_lemma_3_4", "Lemma 3.4 read as a ratio: Delta kappa_SAM / Delta kappa_SGD = "
     "C_surplus ||phi||^2 (the earlier, wrong reading)", relation("rate_ratio_readout", lambda r: C_surplus * phi**2)),
    ("sharp_minmax_constant_reversed", "sharp_minmax_remark", "Sharp MinMax C_maxpart >= 1 reversed to <= 1",
     reversed_inequality("constant")),
    ("sharp_minmax_ordering_reversed", "sharp_minmax_remark", "Sharp MinMax phi*_maxpart >= phi*_SGD reversed",
     reversed_inequality("ordering")),
    ("thm_3_2_retain_below_full", "unlearning_thm_3_2", "U Thm 3.2 threshold with n = n_R taken at n_R + 2 n_F",
     relation("threshold_retain", lambda t: t.subs(n_R, n_R + 2 * n_F))),
    ("thm_3_2_constant_mismatch", "unlearning_thm_3_2", "U Thm 3.2 C1_U -> C1_U^2 (no longer (C)'s threshold at "
     "C1_U = C1^(1/4))", substituted(lambda s: {C1_U: C1_U**2})),
    # Lemma 3.1
    ("lemma_3_1_perturbation_signs_swapped", "unlearning_lemma_3_1", "Lemma 3.1 perturbation signs swapped: eps raises "
     "retain pre-activations and lowers forget ones", substituted(_lemma_3_1_signs)),
    ("lemma_3_1_sam_denoises_forget", "unlearning_lemma_3_1", "Lemma 3.1: SAM's forget step switched off like the "
     "retain step (forget_like_sgd broken)", _lemma_3_1_sam_denoises_forget),
    ("lemma_3_1_forget_like_sgd_negated", "unlearning_lemma_3_1", "Lemma 3.1 relation forget_like_sgd: = -> !=",
     relation("forget_like_sgd", lambda rel: sp.Ne(rel.lhs, rel.rhs))),
    ("lemma_3_1_retain_denoised_negated", "unlearning_lemma_3_1", "Lemma 3.1 relation retain_denoised negated",
     relation("retain_denoised", sp.Not)),
    ("lemma_3_1_retain_premise_reversed", "unlearning_lemma_3_1", "Lemma 3.1 retain_denoised premise |eps| > a0 "
     "reversed to |eps| < a0", relation("retain_denoised", _reversed_premise)),
    ("lemma_3_1_sam_retain_step_negated", "unlearning_lemma_3_1", "Lemma 3.1 SAM's retain noise step negated",
     relation("noise_step_sam_retain", lambda s: -s)),
]
MUTATIONS: list[Mutation] = [Mutation(*row) for row in _TABLE]


def run_mutations(mutations: list[Mutation] | None = None, all_checks: bool = False) -> MutationReport:
    """Run every check unmutated, then under each mutation (default :data:`MUTATIONS`) the checks that read the
    mutated statement (every check with ``all_checks``)."""
    reads: dict[str, set[str]] = {}
    baseline = []
    for name, run in CHECKS.items():
        with recording_reads() as names:
            passed = run().passed
        reads[name] = names
        if not passed:
            baseline.append(name)
    results = []
    for mutation in MUTATIONS if mutations is None else mutations:
        selected = [name for name in CHECKS if all_checks or mutation.statement in reads[name]]
        before = _fingerprint(statements.get(mutation.statement))
        with applied(mutation):
            changed = _fingerprint(statements.get(mutation.statement)) != before
            failed = [name for name in selected if not CHECKS[name]().passed]
        results.append(MutationResult(mutation.name, mutation.statement, mutation.description, failed, changed,
                                      len(selected)))
    return MutationReport(baseline, results)


def format_table(report: MutationReport) -> str:
    width = max((len(r.mutation) for r in report.results), default=8)
    lines = [f"{'mutation':<{width}}  caught  failed checks (of the checks reading the statement)"]
    for r in report.results:
        failed = ", ".join(r.failed_checks) or ("- (mutation changes nothing)" if not r.changed else "-")
        lines.append(f"{r.mutation:<{width}}  {'yes' if r.caught else 'NO':<6}  {failed}  [{r.checks_run} run]")
    lines.append("")
    if report.baseline_failures:
        lines.append("unmutated statements FAIL: " + ", ".join(report.baseline_failures))
    caught = len(report.results) - len(report.missed)
    lines.append(f"{caught} of {len(report.results)} mutations caught"
                 + (f"; NOT caught: {', '.join(report.missed)}" if report.missed else ""))
    return "\n".join(lines)
