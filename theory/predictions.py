"""Numeric predictions for figure overlays, lambdified from :mod:`theory.statements` (numpy arrays in and out).

The constants ``C1, C2, C_sam`` are unknown (docs/model.md#theory-statements): the defaults 1.0 give the *shape* of a
boundary (its slopes in d, n, P, sigma_p); the level has to be calibrated against simulations. Each function builds its
numpy function from the current statement with ``sympy.lambdify``, so an edit of a statement changes the overlay with
it.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from . import symbols as sym
from .statements import get


def _evaluate(expr: sp.Expr, symbols: tuple, *values) -> np.ndarray:
    function = sp.lambdify(symbols, expr, modules="numpy")
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values))
    out = np.empty(arrays[0].shape)
    out[...] = function(*arrays)  # also broadcasts an expression that ignores some inputs (a constant boundary)
    return out


def sgd_boundary(d, n, P=2, sigma_p=1.0, C1=1.0) -> np.ndarray:
    """(C) SGD boundary ``||mu||* = (C1 d P^4 sigma_p^4 / n)^(1/4)`` [hi]."""
    return _evaluate(get("chen_sgd").relations["threshold"], (sym.d, sym.n, sym.P, sym.sigma_p, sym.C1),
                     d, n, P, sigma_p, C1)


def sam_boundary(C_sam=1.0) -> np.ndarray:
    """(C) SAM boundary ``||mu|| = C_sam = Omega~(1)``, independent of d and n [med, reconstruction]."""
    return _evaluate(get("chen_sam").relations["benign_condition"].rhs, (sym.C_sam,), C_sam)


def cao_boundary(d, n, q=3.0, sigma_p=1.0, C1=1.0) -> np.ndarray:
    """(Cao) poly-ReLU boundary ``||mu||* = (C1/n)^(1/q) sigma_p sqrt d`` [hi]."""
    return _evaluate(get("cao_benign").relations["threshold"], (sym.d, sym.n, sym.q, sym.sigma_p, sym.C1),
                     d, n, q, sigma_p, C1)


def neggrad_sgd_boundary(d, n, P=2, sigma_p=1.0, C1_U=1.0) -> np.ndarray:
    """(U) Thm 3.2 SGD-NegGrad boundary ``C1_U d^(1/4) n^(-1/4) P sigma_p``; pass n = n_R or n_R + n_F [seen]."""
    return _evaluate(get("unlearning_thm_3_2").relations["threshold"],
                     (sym.d, sym.n, sym.P, sym.sigma_p, sym.C1_U), d, n, P, sigma_p, C1_U)


def kou_benign_error(n, d, mu, p, sigma_p=1.0, C2=1.0) -> np.ndarray:
    """(K) benign test-error bound ``p + exp(-n ||mu||^4 / (C2 d sigma_p^4))`` [hi]; valid above the threshold."""
    return _evaluate(get("kou_bounds").relations["benign_error_bound"],
                     (sym.n, sym.d, sym.mu, sym.p, sym.sigma_p, sym.C2), n, d, mu, p, sigma_p, C2)


PREDICTIONS = {
    "sgd_boundary": sgd_boundary,
    "sam_boundary": sam_boundary,
    "cao_boundary": cao_boundary,
    "neggrad_sgd_boundary": neggrad_sgd_boundary,
    "kou_benign_error": kou_benign_error,
}
