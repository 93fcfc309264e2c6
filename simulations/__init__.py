"""Simulator of the two-layer CNN on the signal–noise data model (spec/theory.md §1–5, §7).

Entry points: :class:`SimConfig` (one run), :func:`simulate` (many runs as one tensor computation),
:func:`run_sweep` (cached, resumable grids), and the command line ``python -m simulations``.
"""

from .config import PRESETS, ConfigError, SimConfig, preset
from .engine import RunResult, simulate

__all__ = ["SimConfig", "ConfigError", "PRESETS", "preset", "simulate", "RunResult"]
