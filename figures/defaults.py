"""The embedded default: the sweeps behind the figures, small enough for a CPU in a few minutes.

Settings follow the simulator's ``quick`` preset (n = 20, P = 2, m = 10, sigma_p = 1, p = 0.1, lr 0.5, 200 full-batch
steps, SAM rho = 0.3; NegGrad with alpha = 0.5, 50 steps at lr 0.5 on |F| = 10% of n (2 at n = 20), with the
pretraining optimizer), with SAM for the first 50 pretraining steps only (``sam_steps=50``): with SAM on every step the
label-flipped samples are never fitted and the cells lie outside the theorems (docs/sam-interpolation.md).
"""

from __future__ import annotations

from simulations.config import PRESETS
from theory.validation import PRESETS as VALIDATION_PRESETS
from theory.validation import Sweeps as ValidationSweeps

QUICK = {**PRESETS["quick"].base, "sam_steps": 50}
OPTIMIZERS = {"optimizer+unlearn_optimizer": [("gd", "gd"), ("sam", "sam")]}
SIGNALS = [round(0.25 * k, 2) for k in range(1, 21)]

SWEEPS: dict[str, dict] = {
    # test error over (signal strength, d) at n = 20
    "signal_d": {"base": dict(QUICK), "grid": {"signal_strength": SIGNALS,
                                               "d": [100, 200, 400, 800, 1600, 3200, 6400, 12800],
                                               **OPTIMIZERS, "seed": [0, 1, 2, 3, 4]}},
    # test error over (signal strength, n) at d = 3200, forgetting 10% of the samples
    "signal_n": {"base": {**QUICK, "d": 3200},
                 "grid": {"signal_strength": SIGNALS,
                          "n+forget_size": [(10, 1), (20, 2), (40, 4), (80, 8), (160, 16)],
                          **OPTIMIZERS, "seed": [0, 1, 2, 3, 4]}},
    # coefficient trajectories in a harmful (weak signal) and a benign (strong signal) setting
    "dynamics": {"base": {**QUICK, "log_points": 101, "n_test": 2000},
                 "grid": {"signal_strength": [1.0, 4.0], **OPTIMIZERS, "seed": [0]},
                 "save_coefficients": True},
}

# the sweeps of `python -m theory validate --preset smoke`, drawn by figures/theory_figures.py
for _name, (_base, _grid) in ValidationSweeps(VALIDATION_PRESETS["smoke"], out=".").specs().items():
    SWEEPS[f"theory_{_name}"] = {"base": _base, "grid": _grid}
