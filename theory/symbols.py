"""The symbols of docs/model.md, with the assumptions sympy reasons under.

Every quantity is a positive real (``positive=True, real=True``): sizes, dimensions, scales, rates and the unknown
constants of the theorems alike. Two carry a tighter range that sympy cannot hold as an assumption and that is
therefore only documented here (``RANGES``) and used by the numerical spot checks:

* ``p``, the label-flip probability, lies in (0, 1/2) (docs/model.md#data-model [hi]);
* ``alpha``, NegGrad's retain weight, lies in (0, 1) (docs/model.md#unlearning-objectives [seen]); checks that need ``1
- alpha > 0`` write
  ``alpha = 1/(1 + u)`` with ``u > 0``.

``mu`` is the signal strength ``||mu||`` of (Cao)/(K)/(C); ``phi`` is the same quantity in (U)'s notation
(``||varphi||``), kept as its own symbol so the unlearning statements read like the paper.

Constants ``C1, C2, C3, C_sam, ...`` are the theorems' unknown absolute constants (docs/model.md#theory-statements:
"check scalings and orderings, not absolute thresholds"). The same name in two papers need not be the same number: see
the docstrings of :mod:`theory.statements`.
"""

from __future__ import annotations

import sympy as sp


def _positive(name: str) -> sp.Symbol:
    return sp.Symbol(name, positive=True, real=True)


# data model and network (docs/model.md#data-model, #network)
n = _positive("n")                # number of training samples (|S| in U)
n_R = _positive("n_R")            # retain-set size (U)
n_F = _positive("n_F")            # forget-set size (U)
d = _positive("d")                # patch dimension
m = _positive("m")                # filters per class (2m in all)
P = _positive("P")                # patches per sample (P >= 2)
q = _positive("q")                # exponent of the polynomial ReLU of (Cao), q > 2
sigma_p = _positive("sigma_p")    # noise scale per coordinate
sigma_0 = _positive("sigma_0")    # initialisation scale
mu = _positive("mu")              # signal strength ||mu|| (Cao/K/C)
phi = _positive("phi")            # signal strength ||varphi|| (U)
p = _positive("p")                # label-flip probability, documented range (0, 1/2)

# optimisation (docs/model.md#optimizers, #unlearning-objectives)
eta = _positive("eta")            # learning rate
rho = _positive("rho")            # SAM radius (U's code); (C) calls it tau
tau = _positive("tau")            # SAM radius in (C)'s notation
B = _positive("B")                # batch size
alpha = _positive("alpha")        # NegGrad retain weight, documented range (0, 1)
eps = _positive("epsilon")        # target training loss / excess test error
delta = _positive("delta")        # tolerance in the alpha-threshold definition (error <= p + delta)
T = _positive("T")                # number of (S)GD steps
test_error = _positive("test_error")
loss_slope = _positive("g")       # |l'(z)| = 1/(1 + e^z), in (0, 1); 1/2 at initialisation
grad_norm = _positive("G")        # ||grad L(W)||_F over all 2m filters (SAM normalisation)
preactivation = _positive("a0")   # <w_{y_i,r}, xi_i> of a neuron active on xi_i (a0 > 0)

# derived quantities named in the statements
mu_star = _positive("mu_star")            # SGD boundary ||mu||* of (C)
alpha_star_sgd = _positive("alpha_star_SGD")
alpha_star_sam = _positive("alpha_star_SAM")
phi_star_maxpart = _positive("phi_star_maxpart")  # Sharp MinMax forget-part boundary (U remark)
snr_ratio = _positive("r")                # d / n, used to solve the SAM-only window for d/n
lam = _positive("lambda")                 # a common scale factor of all lengths (dimensional checks)
u = _positive("u")                        # alpha = 1/(1 + u) parametrises alpha in (0, 1)

# unknown absolute constants
C1 = _positive("C1")              # benign threshold constant (of the fourth-power form n mu^4 >= C1 d ...)
C1_U = _positive("C1_U")          # U Thm 3.2's C1, which multiplies d^(1/4) n^(-1/4) P sigma_p (= C1^(1/4))
C2 = _positive("C2")              # (K) error-exponent constant
C3 = _positive("C3")              # harmful threshold constant
C_sam = _positive("C_sam")        # SAM's signal threshold Omega~(1) of (C) / U Thm 3.3
C_T = _positive("C_T")            # (K) time-bound constant
C_surplus = _positive("C_surplus")  # U Lemma 3.4: Delta kappa_SAM - Delta kappa_SGD = C_surplus phi^2 (a difference)
C_ratio = _positive("C_ratio")      # U Lemma 3.4 read-out: Delta kappa_SAM / Delta kappa_SGD = C_ratio = Theta(1)
C_alpha = _positive("C_alpha")    # alpha-gap constant, O(sqrt(d/n))
C_maxpart = _positive("C_maxpart")  # Sharp MinMax remark: phi*_maxpart = C_maxpart * phi*_SGD, C_maxpart >= 1

CONSTANTS = (C1, C1_U, C2, C3, C_sam, C_T, C_surplus, C_ratio, C_alpha, C_maxpart)

# Ranges used to draw random points for numerical spot checks: (low, high, log-uniform?). Only p and alpha have
# ranges that matter to the theory; the others are just "positive, moderately sized".
RANGES: dict[str, tuple[float, float, bool]] = {
    "p": (1e-3, 0.499, False),
    "alpha": (1e-3, 0.999, False),
    "g": (1e-3, 0.999, False),
    "P": (2.0, 8.0, False),
    "q": (2.01, 6.0, False),
    "d": (10.0, 1e6, True),
    "n": (2.0, 1e4, True),
    "n_R": (2.0, 1e4, True),
    "n_F": (1.0, 1e3, True),
}
DEFAULT_RANGE = (0.1, 10.0, True)
