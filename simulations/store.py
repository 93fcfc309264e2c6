"""Result cache of a sweep, in chunks: ``cache/chunk-*.npz`` (trajectories) + ``cache/chunk-*.json`` (rows).

A chunk holds many runs, so a sweep of 100,000 runs writes a few dozen files. Each chunk is written atomically,
npz first and json last: a json file marks a complete chunk, and an interrupted sweep resumes from the chunks
whose json exists. Runs are identified by the config hash, so a re-run skips cells already done.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .config import FIELD_NAMES
from .engine import RunResult
from .provenance import atomic_write_bytes

METRIC_COLUMNS = ("test_error", "test_error_se", "train_loss", "train_error", "retain_acc", "forget_acc",
                  "forget_flip_acc", "signal_coef_max", "noise_coef_max", "diverged", "wall_s")
EXTRA_COLUMNS = ("test_error_clean", "diverged_step", "pretrain_test_error", "pretrain_test_error_se",
                 "pretrain_test_error_clean", "pretrain_train_error", "pretrain_train_loss", "pretrain_retain_acc",
                 "pretrain_forget_acc", "pretrain_forget_flip_acc")
CSV_COLUMNS = ("hash", *FIELD_NAMES, *METRIC_COLUMNS, *EXTRA_COLUMNS)


def result_row(result: RunResult) -> dict:
    row = {"hash": result.config.hash, **result.config.to_dict()}
    row.update(result.metrics)
    return row


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._rows: dict[str, dict] | None = None
        self._chunk_of: dict[str, str] = {}

    # ------------------------------------------------------------------ reading
    def _load(self) -> dict[str, dict]:
        if self._rows is None:
            self._rows = {}
            if self.folder.exists():
                for path in sorted(self.folder.glob("chunk-*.json")):
                    try:
                        rows = json.loads(path.read_text())
                    except (OSError, json.JSONDecodeError):
                        continue  # a damaged chunk is redone, never trusted
                    for row in rows:
                        self._rows[row["hash"]] = row
                        self._chunk_of[row["hash"]] = path.stem
        return self._rows

    def done(self) -> set[str]:
        return set(self._load())

    def row(self, config_hash: str) -> dict | None:
        return self._load().get(config_hash)

    def trajectory(self, config_hash: str) -> dict[str, np.ndarray]:
        """Per-run trajectory arrays (``step``, ``train_loss``, ``signal_coef_max``, ...; full ``kappa``,
        ``zeta_bar``, ``zeta`` when the sweep saved coefficients)."""
        if getattr(self, "_stale", False):
            self._rows, self._stale = None, False
        self._load()
        if config_hash not in self._chunk_of:
            raise KeyError(f"no result for config hash {config_hash}")
        with np.load(self.folder / (self._chunk_of[config_hash] + ".npz")) as z:
            hashes = list(z["hashes"])
            i = hashes.index(config_hash)
            out = {}
            for key in z.files:
                if key == "hashes" or key.endswith("__length"):
                    continue
                length = int(z[key + "__length"][i]) if key + "__length" in z.files else None
                value = z[key][i]
                out[key] = value[:length] if length is not None else value
            return out

    # ------------------------------------------------------------------ writing
    def write(self, results: Iterable[RunResult]) -> list[dict]:
        """Write one chunk (npz, then json) and return its rows."""
        results = list(results)
        if not results:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"chunk-{uuid.uuid4().hex[:12]}"
        arrays: dict[str, np.ndarray] = {"hashes": np.array([r.config.hash for r in results])}
        keys = sorted({k for r in results for k in (*r.trajectory, *r.coefficients)})
        for key in keys:
            values = [r.trajectory.get(key, r.coefficients.get(key)) for r in results]
            if any(v is None for v in values):
                continue
            longest = max(v.shape[0] for v in values)
            tail = values[0].shape[1:]
            if any(v.shape[1:] != tail for v in values):
                continue
            dtype = np.int64 if key == "forget_indices" else np.float32
            fill = -1 if dtype is np.int64 else np.nan
            stacked = np.full((len(values), longest, *tail), fill, dtype=dtype)
            with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's inf/NaN stay inf/NaN
                for i, v in enumerate(values):
                    stacked[i, : v.shape[0]] = v
            arrays[key] = stacked
            arrays[key + "__length"] = np.array([v.shape[0] for v in values])
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # float trajectories barely compress; zlib would cost more than the runs
        atomic_write_bytes(self.folder / f"{stem}.npz", buf.getvalue())
        rows = [result_row(r) for r in results]
        atomic_write_bytes(self.folder / f"{stem}.json", json.dumps(rows, default=_plain).encode())
        if self._rows is not None:
            self.add_rows(rows, stem)
        return rows

    def add_rows(self, rows: list[dict], stem: str | None = None) -> None:
        """Record rows that a worker wrote to this folder (its chunk file is found again on demand)."""
        loaded = self._load()
        for row in rows:
            loaded[row["hash"]] = row
            if stem is not None:
                self._chunk_of[row["hash"]] = stem
            else:
                self._chunk_of.pop(row["hash"], None)
                self._stale = True


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def write_csv(path: Path, rows: list[dict]) -> None:
    """Atomic CSV of the rows (columns: every config field, then the metrics)."""
    import csv

    buf = io.StringIO()
    extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS))
    columns = [*CSV_COLUMNS, *extra]
    writer = csv.writer(buf)
    writer.writerow(columns)
    nan = float("nan")
    for row in rows:
        writer.writerow(["nan" if (v := row.get(k, "")) is nan or (isinstance(v, float) and v != v) else v
                         for k in columns])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def remove_stale_temporaries(folder: Path) -> None:
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            os.unlink(tmp)
        except OSError:
            pass
