"""Exact behaviour of the result store (``simulations/store.py``) and of atomic writes (``simulations/atomic.py``).

Pins, with values written by hand from the documented formats:

* ``atomic_write_bytes``: the temporary is ``.<name>.<random>.tmp`` in the target's folder, complete before the
  rename, made ``0o666 & ~umask``; a failure is the one-line :class:`OutputError` (exact text), removes the temporary
  and leaves the old file; ``atomic_write_json``'s exact bytes (indent 1, key order kept, numpy values, final newline);
  ``json_default``'s conversions and exact error.
* ``result_row`` (keys and their order), ``_rows_digest`` / ``_file_digest`` (exact sha256), ``_plain``.
* ``read_chunk``: every single check (format, rows a list, rows dicts with a text hash, both checksums) alone rejects
  a chunk; unreadable files are None.
* ``ResultStore``: the initial state, which row holds a cell when several chunks do (current numerics first, then the
  chunk with coefficients, else the first in name order), ``stale``/``corrupt``, ``without_coefficients``,
  ``remove_corrupt``, the exact npz and json a ``write`` produces (padding, dtypes, lengths, skipped keys), the
  trajectory arrays read back, the snapshot semantics of ``add_rows``/``trajectory`` (a store re-reads its folder only
  after rows it was told of without their chunk).
* ``write_csv`` (exact text) and ``read_csv`` (typing of each kind of column), ``remove_stale_temporaries``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from _helpers import tiny

from simulations import atomic
from simulations.config import FIELD_NAMES
from simulations.engine import RunResult
from simulations.errors import OutputError
from simulations.provenance import numerics_version
from simulations.store import (
    CSV_COLUMNS,
    ResultStore,
    _file_digest,
    _plain,
    _rows_digest,
    read_chunk,
    read_csv,
    remove_stale_temporaries,
    result_row,
    write_csv,
)

NV = numerics_version()
OLD = "other-numerics"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _chunk(folder: Path, stem: str, rows, npz: bytes | None = None, **overrides) -> Path:
    """A chunk written by hand in the documented format (module docstring of simulations/store.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    if npz is None:
        hashes = [str(r.get("hash")) if isinstance(r, dict) else "-" for r in rows] if isinstance(rows, list) else ["-"]
        npz = _npz(hashes=np.array(hashes), step=np.zeros((len(hashes), 2), dtype=np.float32))
    (folder / f"{stem}.npz").write_bytes(npz)
    data = {"format": 2, "numerics_version": NV, "npz_sha256": _sha(npz),
            "rows_sha256": _sha(json.dumps(rows, sort_keys=True).encode()), "rows": rows}
    data.update(overrides)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data))
    return path


def _coef_npz(hashes: list[str], keys=("kappa", "zeta_bar", "zeta")) -> bytes:
    k = len(hashes)
    arrays = {"hashes": np.array(hashes)}
    for j, key in enumerate(keys):
        arrays[key] = np.full((k, 2), j + 1.0, dtype=np.float32)
        arrays[key + "__length"] = np.full(k, 2)
    return _npz(**arrays)


def _row(h: str, v: int, version: str = NV) -> dict:
    return {"hash": h, "v": v, "numerics_version": version}


# ---------------------------------------------------------------------------------------------------- atomic.py
def test_atomic_write_bytes_renames_a_complete_sibling_temporary_with_the_shared_mode(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst), Path(src).read_bytes(), stat.S_IMODE(os.stat(src).st_mode)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    monkeypatch.setattr(atomic, "_UMASK", 0o022)
    assert atomic.atomic_write_bytes(str(target), b"new\x00data") is None
    [(src, dst, content, mode)] = calls
    assert src.parent == tmp_path and re.fullmatch(r"\.out\.json\.[A-Za-z0-9_]{8}\.tmp", src.name), src.name
    assert dst == target and content == b"new\x00data" and mode == 0o644
    assert target.read_bytes() == b"new\x00data" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["out.json"]

    monkeypatch.setattr(atomic, "_UMASK", 0o027)  # the umask the process had: 0o666 & ~0o027
    atomic.atomic_write_bytes(target, b"")
    assert target.read_bytes() == b"" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["out.json"] and len(calls) == 2


def test_atomic_write_bytes_failure_is_one_line_removes_the_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_bytes(b"old")
    seen = []

    def full(src, dst):
        seen.append(Path(src).exists())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OutputError) as info:
        atomic.atomic_write_bytes(target, b"new")
    assert str(info.value) == (f"cannot write {str(target)!r} (No space left on device): free disk space or choose "
                               "another --out; files already there are unchanged")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert seen == [True]  # the temporary existed, and is gone
    assert sorted(os.listdir(tmp_path)) == ["results.csv"] and target.read_bytes() == b"old"
    monkeypatch.undo()

    missing = tmp_path / "missing" / "f.bin"  # mkstemp itself fails: nothing to remove
    with pytest.raises(OutputError) as info:
        atomic.atomic_write_bytes(missing, b"x")
    assert str(info.value) == (f"cannot write {str(missing)!r} (No such file or directory): choose another --out; "
                               "files already there are unchanged")
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]


def test_atomic_write_json_exact_bytes_and_json_default(tmp_path):
    path = tmp_path / "r.json"
    obj = {"b": np.float32(0.5), "a": [np.int64(3), np.arange(2)], "c": {"z": True, "y": None}}
    atomic.atomic_write_json(str(path), obj)
    assert path.read_bytes() == (b'{\n "b": 0.5,\n "a": [\n  3,\n  [\n   0,\n   1\n  ]\n ],\n'
                                 b' "c": {\n  "z": true,\n  "y": null\n }\n}\n')
    assert sorted(os.listdir(tmp_path)) == ["r.json"]

    v = atomic.json_default(np.float32(0.5))
    assert v == 0.5 and type(v) is float
    v = atomic.json_default(np.int64(7))
    assert v == 7 and type(v) is int
    v = atomic.json_default(np.array([[1, 2]]))
    assert v == [[1, 2]] and type(v) is list and type(v[0][0]) is int
    for bad, name in ((object(), "object"), ({1}, "set")):
        with pytest.raises(TypeError) as info:
            atomic.json_default(bad)
        assert str(info.value) == f"not JSON serialisable: <class '{name}'>"


# ---------------------------------------------------------------------------------------------------- small helpers
def test_result_row_keys_in_order_and_digests():
    cfg = tiny(seed=3)
    r = RunResult(cfg, {"test_error": 0.25, "diverged": False}, {})
    row = result_row(r)
    assert list(row) == ["hash", *FIELD_NAMES, "test_error", "diverged", "numerics_version"]
    assert row == {"hash": cfg.hash, **cfg.to_dict(), "test_error": 0.25, "diverged": False, "numerics_version": NV}

    assert _rows_digest([{"b": np.float32(0.5), "a": 1}]) == _sha(b'[{"a": 1, "b": 0.5}]')
    assert _rows_digest([]) == _sha(b"[]")

    v = _plain(np.float32(0.25))
    assert v == 0.25 and type(v) is float
    assert _plain(np.bool_(True)) is True
    with pytest.raises(TypeError) as info:
        _plain(object())
    assert info.value.args == (object,)


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 3
    path.write_bytes(data)
    assert _file_digest(path) == _sha(data)
    assert _file_digest(str(path)) == _sha(data)
    path.write_bytes(b"")
    assert _file_digest(path) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---------------------------------------------------------------------------------------------------- read_chunk
def test_read_chunk_each_check_alone_rejects_the_chunk(tmp_path):
    rows = [{"hash": "a", "x": 1}, {"hash": "b"}]
    good = _chunk(tmp_path, "chunk-good", rows)
    assert read_chunk(good) == rows and read_chunk(str(good)) == rows
    assert read_chunk(_chunk(tmp_path, "chunk-empty", [])) == []

    assert read_chunk(_chunk(tmp_path, "chunk-f1", rows, format=1)) is None
    assert read_chunk(_chunk(tmp_path, "chunk-f3", rows, format=3)) is None
    nofmt = _chunk(tmp_path, "chunk-nofmt", rows)
    data = json.loads(nofmt.read_text())
    del data["format"]
    nofmt.write_text(json.dumps(data))
    assert read_chunk(nofmt) is None
    assert read_chunk(_chunk(tmp_path, "chunk-dict", {})) is None  # not a list (every other check passes)
    assert read_chunk(_chunk(tmp_path, "chunk-inthash", [{"hash": 5}])) is None
    assert read_chunk(_chunk(tmp_path, "chunk-nohash", [{"hash": "a"}, {"x": 1}])) is None
    assert read_chunk(_chunk(tmp_path, "chunk-notdict", [1])) is None
    assert read_chunk(_chunk(tmp_path, "chunk-text", ["a"])) is None
    assert read_chunk(_chunk(tmp_path, "chunk-rowsha", rows, rows_sha256="0" * 64)) is None
    assert read_chunk(_chunk(tmp_path, "chunk-npzsha", rows, npz_sha256="0" * 64)) is None
    gone = _chunk(tmp_path, "chunk-gone", rows)
    gone.with_suffix(".npz").unlink()
    assert read_chunk(gone) is None
    (tmp_path / "chunk-garbage.json").write_text("{not json")
    assert read_chunk(tmp_path / "chunk-garbage.json") is None
    (tmp_path / "chunk-list.json").write_text("[1, 2]")
    assert read_chunk(tmp_path / "chunk-list.json") is None
    assert read_chunk(tmp_path / "chunk-absent.json") is None
    norows = _chunk(tmp_path, "chunk-norows", rows)
    data = json.loads(norows.read_text())
    del data["rows"]
    norows.write_text(json.dumps(data))
    assert read_chunk(norows) is None


# ---------------------------------------------------------------------------------------------------- loading
def test_which_chunk_holds_each_cell(tmp_path):
    """Chunks in name order; a row of the current numerics beats one of other numerics, a chunk with coefficients
    beats one without; otherwise the first chunk keeps the cell."""
    cache = tmp_path / "cache"
    store = ResultStore(str(cache))
    assert store.folder == cache and store.corrupt == [] and store.stale == set()
    assert store.done() == set() and store.remove_corrupt() == []  # no folder yet
    bad = _chunk(cache, "chunk-0", [_row("hA", 0)], npz_sha256="0" * 64)  # corrupt: never read, and not the end
    _chunk(cache, "chunk-1", [_row("hA", 1), _row("hB", 1), _row("hS", 1, OLD)])
    _chunk(cache, "chunk-2", [_row("hA", 2)])  # bare after bare: the first keeps hA
    _chunk(cache, "chunk-3", [_row("hB", 3)], npz=_coef_npz(["hB"]))  # coefficients after bare: hB moves
    _chunk(cache, "chunk-3b", [_row("hB", 35)], npz=_coef_npz(["hB"]))  # coefficients after coefficients: stays
    _chunk(cache, "chunk-4", [_row("hA", 4, OLD)], npz=_coef_npz(["hA"]))  # other numerics never win
    _chunk(cache, "chunk-5", [_row("hB", 5)])  # bare after coefficients: hB stays
    _chunk(cache, "chunk-6", [_row("hC", 6, OLD)])
    _chunk(cache, "chunk-7", [_row("hC", 7)])  # current numerics after other numerics
    _chunk(cache, "chunk-8", [_row("hD", 8, OLD)])
    _chunk(cache, "chunk-9", [_row("hD", 9, OLD)])

    store = ResultStore(cache)
    assert store.done() == {"hA", "hB", "hC"}
    assert store.stale == {"hS", "hD"}
    assert store.corrupt == [bad]
    assert {h: store.row(h)["v"] for h in ("hA", "hB", "hC", "hD", "hS")} == dict(hA=1, hB=3, hC=7, hD=9, hS=1)
    assert store.row("hZ") is None
    assert store.without_coefficients(h for h in ["hA", "hB", "hC", "hZ"]) == {"hA", "hC"}
    traj = store.trajectory("hB")
    assert sorted(traj) == ["kappa", "zeta", "zeta_bar"]
    np.testing.assert_array_equal(traj["kappa"], np.array([1.0, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(traj["zeta_bar"], np.array([2.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(traj["zeta"], np.array([3.0, 3.0], dtype=np.float32))
    assert store.remove_corrupt() == [bad] and store.corrupt == []
    assert not bad.exists() and not bad.with_suffix(".npz").exists()
    assert (cache / "chunk-1.npz").exists() and (cache / "chunk-1.json").exists()


def test_coefficient_check_of_partial_unreadable_and_vanished_npz(tmp_path):
    cache = tmp_path / "cache"
    _chunk(cache, "chunk-a", [_row("hE", 1)], npz=b"not an npz")  # checksum right, content no npz
    _chunk(cache, "chunk-b", [_row("hF", 1)], npz=_coef_npz(["hF"], keys=("kappa", "zeta_bar")))  # partial
    _chunk(cache, "chunk-c", [_row("hG", 1)], npz=_coef_npz(["hG"]))
    _chunk(cache, "chunk-d", [_row("hH", 1)], npz=_coef_npz(["hH"]))
    store = ResultStore(cache)
    assert store.done() == {"hE", "hF", "hG", "hH"} and store.corrupt == []
    (cache / "chunk-d.npz").unlink()  # vanished after loading: no coefficients to read
    assert store.without_coefficients(["hE", "hF", "hG", "hH"]) == {"hE", "hF", "hH"}
    assert store.without_coefficients(["hG"]) == set()


def test_remove_corrupt_deletes_both_files_of_each_and_returns_the_json_paths(tmp_path):
    cache = tmp_path / "cache"
    a = _chunk(cache, "chunk-a", [_row("h1", 1)], npz_sha256="0" * 64)
    b = _chunk(cache, "chunk-b", [_row("h2", 1)])
    b.with_suffix(".npz").unlink()  # its npz already gone: still removed without error
    _chunk(cache, "chunk-c", [_row("h3", 1)])
    (cache / "chunk-c.tmp").write_text("unrelated")
    store = ResultStore(cache)
    assert store.remove_corrupt() == []  # nothing loaded yet
    assert store.done() == {"h3"} and store.corrupt == [a, b]
    assert store.remove_corrupt() == [a, b]
    assert store.corrupt == [] and store.remove_corrupt() == []
    assert sorted(p.name for p in cache.iterdir()) == ["chunk-c.json", "chunk-c.npz", "chunk-c.tmp"]


# ---------------------------------------------------------------------------------------------------- writing
def _results():
    c0, c1 = tiny(seed=0), tiny(seed=1)
    r0 = RunResult(c0, {"test_error": np.float32(0.25), "diverged": np.bool_(False)},
                   {"step": np.array([0.0, 1.0, 2.0]), "train_loss": np.array([1e300, -np.inf, np.nan]),
                    "forget_indices": np.array([3, 1]), "a_only": np.array([1.0]), "bad": np.zeros((2, 2))},
                   {"kappa": np.arange(6.0).reshape(3, 2), "zeta_bar": np.arange(6.0).reshape(3, 2) + 10,
                    "zeta": np.arange(6.0).reshape(3, 2, 1) + 20})
    r1 = RunResult(c1, {"test_error": np.float32(0.5), "diverged": np.bool_(True)},
                   {"step": np.array([0.0, 1.0]), "train_loss": np.array([0.5, 0.25]),
                    "forget_indices": np.array([7]), "bad": np.zeros((2, 3))},
                   {"kappa": np.arange(4.0).reshape(2, 2) + 100, "zeta_bar": np.arange(4.0).reshape(2, 2) + 110,
                    "zeta": np.arange(4.0).reshape(2, 2, 1) + 120})
    return r0, r1


def _plain_row(r: RunResult, test_error: float, diverged: bool) -> dict:
    return {"hash": r.config.hash, **r.config.to_dict(), "test_error": test_error, "diverged": diverged,
            "numerics_version": NV}


def test_write_makes_one_exact_chunk_and_reads_it_back(tmp_path):
    r0, r1 = _results()
    cache = tmp_path / "a" / "b" / "cache"
    store = ResultStore(cache)
    assert store.write([]) == [] and not (tmp_path / "a").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1e300 -> float32 inf: no overflow warning
        rows = store.write(iter([r0, r1]))
    expected = [_plain_row(r0, 0.25, False), _plain_row(r1, 0.5, True)]
    assert rows == expected
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and names[0].endswith(".json") and names[1] == names[0][:-5] + ".npz"
    stem = names[0][:-5]
    assert re.fullmatch(r"chunk-[0-9a-f]{12}", stem), stem
    blob = (cache / f"{stem}.npz").read_bytes()
    chunk = json.loads((cache / f"{stem}.json").read_text())
    assert chunk == {"format": 2, "numerics_version": NV, "npz_sha256": _sha(blob),
                     "rows_sha256": _sha(json.dumps(expected, sort_keys=True).encode()), "rows": expected}

    with np.load(cache / f"{stem}.npz") as z:
        assert z.files == ["hashes", "forget_indices", "forget_indices__length", "kappa", "kappa__length", "step",
                           "step__length", "train_loss", "train_loss__length", "zeta", "zeta__length", "zeta_bar",
                           "zeta_bar__length"]
        assert list(z["hashes"]) == [r0.config.hash, r1.config.hash]
        assert z["forget_indices"].dtype == np.int64
        np.testing.assert_array_equal(z["forget_indices"], [[3, 1], [7, -1]])
        assert z["step"].dtype == np.float32 and z["kappa"].dtype == np.float32 and z["zeta"].dtype == np.float32
        np.testing.assert_array_equal(z["step"], np.array([[0, 1, 2], [0, 1, np.nan]], dtype=np.float32))
        np.testing.assert_array_equal(z["train_loss"],
                                      np.array([[np.inf, -np.inf, np.nan], [0.5, 0.25, np.nan]], dtype=np.float32))
        np.testing.assert_array_equal(z["kappa"], [[[0, 1], [2, 3], [4, 5]], [[100, 101], [102, 103], [np.nan] * 2]])
        assert z["zeta"].shape == (2, 3, 2, 1)
        np.testing.assert_array_equal(z["zeta"][1, :, :, 0], [[120, 121], [122, 123], [np.nan, np.nan]])
        for key, lengths in (("forget_indices", [2, 1]), ("kappa", [3, 2]), ("step", [3, 2]), ("train_loss", [3, 2]),
                             ("zeta", [3, 2]), ("zeta_bar", [3, 2])):
            np.testing.assert_array_equal(z[key + "__length"], lengths, err_msg=key)

    fresh = ResultStore(cache)
    assert fresh.done() == {r0.config.hash, r1.config.hash} and fresh.row(r1.config.hash) == expected[1]
    traj = fresh.trajectory(r1.config.hash)
    assert sorted(traj) == ["forget_indices", "kappa", "step", "train_loss", "zeta", "zeta_bar"]
    np.testing.assert_array_equal(traj["forget_indices"], [7])
    assert traj["forget_indices"].dtype == np.int64 and traj["step"].dtype == np.float32
    np.testing.assert_array_equal(traj["step"], [0, 1])
    np.testing.assert_array_equal(traj["train_loss"], [0.5, 0.25])
    np.testing.assert_array_equal(traj["kappa"], [[100, 101], [102, 103]])
    np.testing.assert_array_equal(traj["zeta_bar"], [[110, 111], [112, 113]])
    np.testing.assert_array_equal(traj["zeta"], [[[120], [121]], [[122], [123]]])
    traj = fresh.trajectory(r0.config.hash)
    np.testing.assert_array_equal(traj["forget_indices"], [3, 1])
    np.testing.assert_array_equal(traj["train_loss"], np.array([np.inf, -np.inf, np.nan], dtype=np.float32))
    with pytest.raises(KeyError) as info:
        fresh.trajectory("0000")
    assert info.value.args == ("no result for config hash 0000",)

    # a second chunk into the existing folder, of a single run
    r2 = RunResult(tiny(seed=2), {"test_error": 0.0}, {"step": np.array([5.0]), "w": np.ones((1, 3))})
    rows2 = store.write([r2])
    assert rows2 == [{"hash": r2.config.hash, **r2.config.to_dict(), "test_error": 0.0, "numerics_version": NV}]
    assert len(list(cache.glob("chunk-*.json"))) == 2 and len(list(cache.iterdir())) == 4
    traj = ResultStore(cache).trajectory(r2.config.hash)
    assert sorted(traj) == ["step", "w"]
    np.testing.assert_array_equal(traj["w"], [[1, 1, 1]])


def test_write_into_a_loaded_store_records_the_rows_and_their_chunk(tmp_path):
    r0, r1 = _results()
    bare = RunResult(r0.config, {"test_error": 0.125}, {"step": np.array([0.0, 1.0])})
    store = ResultStore(tmp_path)
    assert store.done() == set()
    store.write([bare])
    assert store.done() == {r0.config.hash}
    assert store.row(r0.config.hash) == {"hash": r0.config.hash, **r0.config.to_dict(), "test_error": 0.125,
                                         "numerics_version": NV}
    assert store.without_coefficients([r0.config.hash, r1.config.hash]) == {r0.config.hash}
    store.write([r1])
    assert store.without_coefficients([r0.config.hash, r1.config.hash]) == {r0.config.hash}
    assert store.done() == {r0.config.hash, r1.config.hash}


def test_trajectory_keys_without_length_are_returned_whole(tmp_path):
    npz = _npz(hashes=np.array(["x", "y"]), plain=np.array([[1.0, 2.0], [3.0, 4.0]]),
               padded=np.array([[1.0, np.nan, np.nan], [3.0, 4.0, 5.0]]), padded__length=np.array([1, 3]))
    _chunk(tmp_path, "chunk-x", [_row("x", 0), _row("y", 0)], npz=npz)
    store = ResultStore(tmp_path)
    y = store.trajectory("y")
    assert sorted(y) == ["padded", "plain"]
    np.testing.assert_array_equal(y["plain"], [3.0, 4.0])
    np.testing.assert_array_equal(y["padded"], [3.0, 4.0, 5.0])
    x = store.trajectory("x")
    np.testing.assert_array_equal(x["plain"], [1.0, 2.0])
    np.testing.assert_array_equal(x["padded"], [1.0])


def test_add_rows_and_the_snapshot_a_store_reads(tmp_path):
    """A loaded store keeps its snapshot of the folder until told of rows without their chunk (``add_rows(rows)``):
    then its next ``trajectory`` re-reads the folder once (``corrupt`` and ``stale`` recomputed, not accumulated)."""
    cache = tmp_path / "cache"
    bad = _chunk(cache, "chunk-0", [_row("hX", 0)], npz_sha256="0" * 64)
    _chunk(cache, "chunk-1", [_row("hS", 1, OLD)])
    _chunk(cache, "chunk-2", [_row("hA", 2)])
    main = ResultStore(cache)
    assert main.done() == {"hA"} and main.corrupt == [bad] and main.stale == {"hS"}
    for suffix in (".json", ".npz"):
        (cache / f"chunk-1{suffix}").unlink()

    r0, r1 = _results()
    rows0 = ResultStore(cache).write([RunResult(r0.config, {"m": 1}, {"step": np.array([4.0, 5.0])})])
    with pytest.raises(KeyError):
        main.trajectory(r0.config.hash)  # not told yet: the snapshot
    assert main.row(r0.config.hash) is None
    main.add_rows(rows0)
    main.add_rows([_row("hA", 2)])  # hA told again, then its chunk vanishes
    for suffix in (".json", ".npz"):
        (cache / f"chunk-2{suffix}").unlink()
    assert main.row(r0.config.hash) == rows0[0] and main.row("hA") == _row("hA", 2)
    traj = main.trajectory(r0.config.hash)
    assert sorted(traj) == ["step"]
    np.testing.assert_array_equal(traj["step"], [4.0, 5.0])
    assert main.corrupt == [bad] and main.stale == set()
    with pytest.raises(KeyError) as info:
        main.trajectory("hA")
    assert info.value.args == ("no result for config hash hA",)
    assert main.row("hA") is None

    rows1 = ResultStore(cache).write([RunResult(r1.config, {"m": 2}, {"step": np.array([6.0])})])
    with pytest.raises(KeyError):
        main.trajectory(r1.config.hash)  # re-read once only
    main.add_rows(rows1, "chunk-nowhere")  # with a stem: recorded as held there, no re-read
    assert main.row(r1.config.hash) == rows1[0]
    with pytest.raises(FileNotFoundError):
        main.trajectory(r1.config.hash)

    other = ResultStore(cache)
    other.add_rows([{"hash": "zz", "x": 1}])  # loads, then records
    assert other.row("zz") == {"hash": "zz", "x": 1} and other.done() == {r0.config.hash, r1.config.hash}


# ---------------------------------------------------------------------------------------------------- csv
class _Reading(float):
    """A float type whose text is not the plain number (NaN must still be written ``nan``)."""

    def __str__(self):
        return f"reading({float(self)})"

    __repr__ = __str__


def test_write_csv_exact_text_and_read_csv_types(tmp_path):
    rows = [
        {"hash": "0042", "d": 100, "optimizer": "sam", "lr": 0.5, "shared_noise": True, "test_error": 0.1,
         "diverged": False, "train_loss": float("nan"), "numerics_version": "0123", "zz_note": "a\r\nb",
         "aa_extra": 3, "mixed": True},
        {"hash": "00ff", "d": 200, "optimizer": "gd", "lr": 1.0, "shared_noise": False, "test_error": _Reading("nan"),
         "diverged": True, "train_loss": 2.5, "numerics_version": "0123", "aa_extra": 4, "mixed": 1,
         "wall_s": np.float64("nan"), "diverged_step": None},
    ]
    path = tmp_path / "results.csv"
    write_csv(str(path), rows)
    columns = [*CSV_COLUMNS, "aa_extra", "mixed", "zz_note"]
    cells = [dict(hash="0042", d="100", optimizer="sam", lr="0.5", shared_noise="True", test_error="0.1",
                  diverged="False", train_loss="nan", numerics_version="0123", zz_note='"a\r\nb"', aa_extra="3",
                  mixed="True"),
             dict(hash="00ff", d="200", optimizer="gd", lr="1.0", shared_noise="False", test_error="nan",
                  diverged="True", train_loss="2.5", numerics_version="0123", aa_extra="4", mixed="1", wall_s="nan")]
    text = ",".join(columns) + "\r\n" + "".join(",".join(c.get(k, "") for k in columns) + "\r\n" for c in cells)
    assert path.read_bytes() == text.encode()
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]

    a, b = read_csv(path)
    assert list(a) == columns
    typed = {"hash", "d", "optimizer", "lr", "shared_noise", "test_error", "diverged", "train_loss",
             "numerics_version", "zz_note", "aa_extra", "mixed", "wall_s"}
    assert all(a[k] is None and b[k] is None for k in columns if k not in typed)
    assert {k: a[k] for k in typed - {"train_loss", "wall_s"}} == dict(
        hash="0042", d=100, optimizer="sam", lr=0.5, shared_noise=True, test_error=0.1, diverged=False,
        numerics_version="0123", zz_note="a\r\nb", aa_extra=3, mixed="True")
    assert {k: b[k] for k in typed - {"test_error", "wall_s"}} == dict(
        hash="00ff", d=200, optimizer="gd", lr=1.0, shared_noise=False, diverged=True, train_loss=2.5,
        numerics_version="0123", zz_note=None, aa_extra=4, mixed="1")
    assert np.isnan(a["train_loss"]) and np.isnan(b["test_error"]) and np.isnan(b["wall_s"]) and a["wall_s"] is None
    assert type(a["aa_extra"]) is int and type(a["d"]) is int and type(a["lr"]) is float
    assert a["diverged"] is False and b["diverged"] is True and a["shared_noise"] is True

    (tmp_path / "one.csv").write_text("hash,d,n_test,x\n7,5,,\n")
    assert read_csv(tmp_path / "one.csv") == [{"hash": "7", "d": 5, "n_test": None, "x": None}]
    (tmp_path / "empty.csv").write_text("hash,d\n")
    assert read_csv(tmp_path / "empty.csv") == []
    (tmp_path / "nothing.csv").write_text("")
    assert read_csv(tmp_path / "nothing.csv") == []


# ---------------------------------------------------------------------------------------------------- temporaries
def test_remove_stale_temporaries_removes_exactly_temporaries_and_orphan_npz(tmp_path):
    for name in (".chunk-a.npz.x1y2z3w4.tmp", ".results.csv.abcdefgh.tmp", "chunk-a.npz", "chunk-a.json",
                 "chunk-b.npz", "chunk-c.json", "other.tmp", "x.npz", "results.csv", "chunk-d.npz.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.tmp").mkdir()  # cannot be unlinked: skipped, no error
    remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".dir.tmp", "chunk-a.json", "chunk-a.npz", "chunk-c.json",
                                            "chunk-d.npz.json", "other.tmp", "results.csv", "x.npz"]
