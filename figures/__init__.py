"""Figures regenerated from results only: ``python -m figures`` runs the missing sweeps of the embedded default
(:mod:`figures.defaults`) and renders every registered figure into ``figures/out/`` (PNG and PDF)."""

from .registry import FIGURES, Figure

__all__ = ["FIGURES", "Figure"]
