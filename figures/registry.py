"""Figures registered by name: each names the sweep it reads and a function that renders it from results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    name: str
    sweep: str | tuple[str, ...]  # key(s) of figures.defaults.SWEEPS
    render: Callable  # render(results, out_dir) -> list[Path]; results: SweepResults, or a dict of them by key

    @property
    def sweeps(self) -> tuple[str, ...]:
        return (self.sweep,) if isinstance(self.sweep, str) else tuple(self.sweep)
    description: str


FIGURES: dict[str, Figure] = {}


def register(name: str, sweep: str, description: str):
    def wrap(fn):
        FIGURES[name] = Figure(name, sweep, fn, description)
        return fn

    return wrap


@dataclass
class SweepResults:
    """What a figure may read: the sweep's ``results.csv`` and per-run trajectories (by config hash)."""

    folder: Path

    def table(self):
        import pandas as pd

        return pd.read_csv(self.folder / "results.csv")

    def trajectory(self, config_hash: str):
        from simulations.store import ResultStore

        return ResultStore(self.folder / "cache").trajectory(config_hash)
