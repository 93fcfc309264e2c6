"""Result cache of a sweep, in chunks: ``cache/chunk-*.npz`` (trajectories) + ``cache/chunk-*.json`` (rows).

A chunk holds many runs, so a sweep of 100,000 runs writes a few dozen files. Each chunk is written atomically,
npz first and json last: a json file marks a complete chunk, and an interrupted sweep resumes from the chunks
whose json exists. Runs are identified by the config hash, so a re-run skips cells already done.

What a chunk's json holds: ``{"format": 2, "numerics_version", "npz_sha256", "rows_sha256", "rows"}``; every row
carries the ``numerics_version`` (:func:`simulations.provenance.numerics_version`) of the code that computed it.
A cell counts as done only when a row of the current numerics holds it and its chunk is intact (both checksums
match): a chunk that is truncated, corrupt or not a chunk at all (either file) is recomputed, and a result of other
numerics is never reused (its chunk stays on disk, unused; delete ``cache/`` to reclaim the space). A cell held by
two intact chunks of the current numerics (recomputed to add its coefficients) is read from the one holding its
coefficients (``kappa``, ``zeta_bar``, ``zeta`` in the npz).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .config import FIELD_NAMES
from .engine import RunResult
from .provenance import numerics_version

CHUNK_FORMAT = 2

METRIC_COLUMNS = ("test_error", "test_error_se", "train_loss", "train_error", "retain_acc", "forget_acc",
                  "forget_flip_acc", "signal_coef_max", "noise_coef_max", "diverged", "wall_s")
EXTRA_COLUMNS = ("test_error_clean", "diverged_step", "pretrain_test_error", "pretrain_test_error_se",
                 "pretrain_test_error_clean", "pretrain_train_error", "pretrain_train_loss", "pretrain_retain_acc",
                 "pretrain_forget_acc", "pretrain_forget_flip_acc")
CSV_COLUMNS = ("hash", *FIELD_NAMES, *METRIC_COLUMNS, *EXTRA_COLUMNS, "numerics_version")
COEFFICIENT_KEYS = ("kappa", "zeta_bar", "zeta")  # in a chunk's npz when its sweep saved coefficients


def result_row(result: RunResult) -> dict:
    row = {"hash": result.config.hash, **result.config.to_dict()}
    row.update(result.metrics)
    row["numerics_version"] = numerics_version()
    return row


def _rows_digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, default=_plain, sort_keys=True).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_chunk(path: Path) -> list[dict] | None:
    """The rows of an intact chunk (its json and npz both match their checksums), else None."""
    try:
        data = json.loads(Path(path).read_text())
        rows = data["rows"]
        if data.get("format") != CHUNK_FORMAT or not isinstance(rows, list) \
                or not all(isinstance(r, dict) and isinstance(r.get("hash"), str) for r in rows) \
                or data.get("rows_sha256") != _rows_digest(rows) \
                or data.get("npz_sha256") != _file_digest(Path(path).with_suffix(".npz")):
            return None
        return rows
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


class ResultStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._rows: dict[str, dict] | None = None
        self._chunk_of: dict[str, str] = {}
        self.corrupt: list[Path] = []  # chunks (json files) that failed their checks: recomputed, then removed
        self.stale: set[str] = set()  # hashes cached only by other numerics
        self._coefficients: dict[str, bool] = {}  # chunk stem -> its npz holds the coefficients

    # ------------------------------------------------------------------ reading
    def _load(self) -> dict[str, dict]:
        if self._rows is None:
            self._rows = {}
            current = numerics_version()
            self.corrupt, self.stale = [], set()
            if self.folder.exists():
                for path in sorted(self.folder.glob("chunk-*.json")):
                    rows = read_chunk(path)
                    if rows is None:
                        self.corrupt.append(path)  # a damaged chunk is redone, never trusted
                        continue
                    for row in rows:
                        h = row["hash"]
                        fresh = row.get("numerics_version") == current
                        if not fresh:
                            self.stale.add(h)
                        held = self._rows.get(h)
                        if held is None or held.get("numerics_version") != current or (
                                fresh and self._has_coefficients(path.stem)
                                and not self._has_coefficients(self._chunk_of[h])):
                            self._rows[h] = row
                            self._chunk_of[h] = path.stem
                self.stale -= {h for h, r in self._rows.items() if r.get("numerics_version") == current}
        return self._rows

    def done(self) -> set[str]:
        """Hashes of the cells cached by the current numerics."""
        current = numerics_version()
        return {h for h, r in self._load().items() if r.get("numerics_version") == current}

    def _has_coefficients(self, stem: str) -> bool:
        if stem not in self._coefficients:
            try:
                with np.load(self.folder / f"{stem}.npz") as z:
                    self._coefficients[stem] = all(k in z.files for k in COEFFICIENT_KEYS)
            except (OSError, ValueError):
                self._coefficients[stem] = False
        return self._coefficients[stem]

    def without_coefficients(self, hashes: Iterable[str]) -> set[str]:
        """The cached cells of ``hashes`` whose chunk holds no coefficient trajectories (a sweep run without
        ``save_coefficients``)."""
        self._load()
        return {h for h in hashes if h in self._chunk_of and not self._has_coefficients(self._chunk_of[h])}

    def remove_corrupt(self) -> list[Path]:
        """Delete the chunks that failed their checks (both files); returns the json paths removed."""
        removed = []
        for path in self.corrupt:
            for target in (path, path.with_suffix(".npz")):
                try:
                    target.unlink()
                except FileNotFoundError:
                    pass
            removed.append(path)
        self.corrupt = []
        return removed

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
        blob = buf.getvalue()
        atomic_write_bytes(self.folder / f"{stem}.npz", blob)
        rows = [result_row(r) for r in results]
        chunk = {"format": CHUNK_FORMAT, "numerics_version": numerics_version(),
                 "npz_sha256": hashlib.sha256(blob).hexdigest(), "rows_sha256": _rows_digest(rows), "rows": rows}
        atomic_write_bytes(self.folder / f"{stem}.json", json.dumps(chunk, default=_plain).encode())
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


def read_csv(path: Path) -> list[dict]:
    """The rows of a ``results.csv`` written by :func:`write_csv`, typed: config fields as their
    :class:`~simulations.config.SimConfig` type, ``hash`` and ``numerics_version`` as text, every other column as bool
    (True/False), int or float (``nan`` included) when all its filled cells read so, else text; an empty cell is
    None (a metric the run did not have)."""
    import csv

    from .config import FIELD_TYPES, parse_value

    with open(path, newline="") as fh:
        cells = list(csv.DictReader(fh))
    columns = list(cells[0]) if cells else []

    def kind(column: str):
        if column in FIELD_TYPES:
            return lambda text: parse_value(column, text)
        if column in ("hash", "numerics_version"):
            return str
        filled = [r[column] for r in cells if r[column] != ""]
        if filled and all(v in ("True", "False") for v in filled):
            return lambda text: text == "True"
        for typ in (int, float):
            try:
                for v in filled:
                    typ(v)
                return typ
            except ValueError:
                continue
        return str

    readers = {c: kind(c) for c in columns}
    return [{c: (readers[c](v) if v != "" else None) for c, v in row.items()} for row in cells]


def remove_stale_temporaries(folder: Path) -> None:
    """Remove what writers cut short left behind (call only while no writer can be at work in ``folder``): the
    temporaries of atomic writes, and a chunk's npz whose json (written last) never came."""
    folder = Path(folder)
    orphans = [p for p in folder.glob("chunk-*.npz") if not p.with_suffix(".json").exists()]
    leftovers = [*folder.glob(".*.tmp"), *orphans]
    for path in leftovers:
        try:
            os.unlink(path)
        except OSError:
            pass
