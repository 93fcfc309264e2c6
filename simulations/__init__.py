"""Simulator of the two-layer CNN on the signal–noise data model (docs/model.md).

Entry points: :class:`SimConfig` (one run), :func:`simulate` (many runs as one tensor computation),
:func:`run_sweep` (cached, resumable grids), and the command line ``python -m simulations``.
"""

from .config import PRESETS, ConfigError, SimConfig, preset
from .engine import RunResult, simulate

__all__ = ["SimConfig", "ConfigError", "PRESETS", "preset", "simulate", "RunResult", "load"]


def load(folder) -> list[dict]:
    """The results of a sweep or run folder as a list of rows (plain dicts; no pandas needed).

    * a sweep folder (``python -m simulations sweep``, :func:`run_sweep`, ``results/figures/<sweep>``): one row per
      run of its ``results.csv``, in grid order — ``hash``, every config field (typed as in :class:`SimConfig`),
      the metrics (``test_error``, ``train_error``, ``forget_acc``, ``diverged``, ...) and ``numerics_version``; a
      metric a run did not have is None.
    * a run folder (``python -m simulations run``): one row, ``hash``, its config fields and its metrics from
      ``result.json``.

    >>> rows = load("results/smoke")
    >>> [r["test_error"] for r in rows if r["optimizer"] == "sam"]

    For a pandas table of the same file: ``pandas.read_csv(folder / "results.csv")``."""
    import json
    from pathlib import Path

    from .store import read_csv

    folder = Path(folder)
    if (folder / "results.csv").is_file():
        return read_csv(folder / "results.csv")
    if (folder / "result.json").is_file():
        record = json.loads((folder / "result.json").read_text())
        return [{"hash": record["hash"], **record["config"], **record["metrics"]}]
    raise ConfigError(f"{folder} holds no results.csv (a sweep) or result.json (a run)")
