"""The papers' conditions, theorems and bounds in sympy, symbolic checks of them, and numeric predictions.

Described in ``docs/model.md`` (#theory-statements, #checkable-predictions). Papers: (U) Tang & Khanna, *Sharpness-Aware
Machine Unlearning*, ICLR 2026 (arXiv 2506.13715); (C) Chen et al., NeurIPS 2023 (arXiv 2310.07269); (K) Kou et al.,
ICML 2023 (arXiv 2303.04145); (Cao) Cao et al., NeurIPS 2022 (arXiv 2202.06526).

* :mod:`theory.symbols` — the symbols (positive reals) and the unknown constants ``C1, C2, C3, C_sam, ...``;
* :mod:`theory.statements` — one function per statement, returning a :class:`Statement` with its confidence
  tag; ``[med]``/``[lo]`` items and sympy forms written here from a summary are flagged ``is_reconstruction``;
* :mod:`theory.checks` — named symbolic checks (``CHECKS``, ``run_checks()``) returning :class:`CheckResult`;
* :mod:`theory.predictions` — lambdified boundaries and bounds for figure overlays.

``python -m theory check [--json]`` prints the check report (exit status 1 if a check fails);
``python -m theory statements`` lists the statements.
"""

from .checks import CHECKS, CheckResult, run_checks
from .predictions import (
    PREDICTIONS,
    cao_boundary,
    kou_benign_error,
    neggrad_sgd_boundary,
    sam_boundary,
    sgd_boundary,
)
from .statements import STATEMENTS, Statement, all_statements, get

__all__ = [
    "CHECKS", "CheckResult", "run_checks", "PREDICTIONS", "cao_boundary", "kou_benign_error", "neggrad_sgd_boundary",
    "sam_boundary", "sgd_boundary", "STATEMENTS", "Statement", "all_statements", "get",
]
