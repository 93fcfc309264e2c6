"""Exact behaviour of ``simulations/runfolder.py`` and ``simulations/provenance.py``, pinned for mutation testing.

Run folders: the writable-folder probe (its arguments and its one-line error), ``read_identity`` (absent, valid,
unreadable), ``legacy_kind`` (each recognised record and file, their precedence), ``_alive`` (signal 0, a dead pid, a
pid of another user), ``describe_differences``/``_short`` (order, the 4-item limit, nested dicts, the 60-character
limit), and ``RunFolder``: its defaults, every refusal of ``_check_before_creating`` with its exact message, the
folders ``_create`` makes and removes, the lock's file (flags, mode, content), re-entrant claims, stale/live/empty
locks, the three take-over attempts, ``_unlock``, ``_remove_created`` and ``begin`` (stale outputs, run.json rewritten
only when the identity changed).

Provenance: ``code_version`` (the git call, the package-version and "unknown" fallbacks), ``source_fingerprint``
(docstrings dropped, other expressions kept, computed from its definition), the cached fingerprints, ``device_name``,
``library_versions``, ``command_line``, ``provenance`` and the re-exported ``ensure_writable_dir``.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import simulations.provenance as prov
import simulations.runfolder as rf
from simulations.errors import ConfigError
from simulations.runfolder import LOCK_FILE, RunFolder

DEAD_PID = 4194305  # above the largest pid Linux can hand out (2**22): os.kill answers ESRCH


def _raises(message: str):
    return pytest.raises(ConfigError, match="^" + re.escape(message) + "$")


def _write_run(folder: Path, record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record))


def _record_mkstemp(monkeypatch):
    calls = []
    real = tempfile.mkstemp

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", fake)
    return calls


# ---------------------------------------------------------------------------------------------- ensure_writable_dir
def test_ensure_writable_dir_creates_nested_probes_and_names_the_folder(tmp_path, monkeypatch):
    calls = _record_mkstemp(monkeypatch)
    target = tmp_path / "a" / "b" / "c"
    got = rf.ensure_writable_dir(str(target))  # a string: returned as a Path
    assert isinstance(got, Path) and got == target and target.is_dir()
    assert calls == [((), {"dir": target, "prefix": ".write-probe-"})]
    assert list(target.iterdir()) == []  # the probe is gone
    (target / "keep").write_text("x")
    assert rf.ensure_writable_dir(target) == target  # an existing folder is fine (exist_ok)
    assert [p.name for p in target.iterdir()] == ["keep"]
    assert len(calls) == 2 and calls[1][1] == {"dir": target, "prefix": ".write-probe-"}
    # the re-exported one of provenance is the same
    other = tmp_path / "p" / "q"
    assert prov.ensure_writable_dir(str(other)) == other and other.is_dir()


def test_ensure_writable_dir_refuses_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("a file")
    bad = tmp_path / "f" / "sub"
    with _raises(f"cannot write to output folder {str(bad)!r} (Not a directory); choose another --out"):
        rf.ensure_writable_dir(bad)

    def denied(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with _raises(f"cannot write to output folder {str(tmp_path)!r} (Permission denied); choose another --out"):
        rf.ensure_writable_dir(tmp_path)
    with _raises(f"cannot write to output folder {str(tmp_path)!r} (Permission denied); choose another --out"):
        prov.ensure_writable_dir(tmp_path)


# ---------------------------------------------------------------------------------------------- read_identity
def test_read_identity(tmp_path):
    assert rf.read_identity(tmp_path) is None  # no run.json
    (tmp_path / "run.json").mkdir()
    assert rf.read_identity(tmp_path) is None  # not a file
    (tmp_path / "run.json").rmdir()
    record = {"kind": "sweep", "identity": {"a": 1}}
    _write_run(tmp_path, record)
    assert rf.read_identity(str(tmp_path)) == record
    _write_run(tmp_path, {"kind": None})
    assert rf.read_identity(tmp_path) == {"kind": None}
    path = tmp_path / "run.json"
    message = (f"{path} is unreadable or not a run record; if the folder is yours delete that file, else choose "
               "another --out")
    # an identity that is not a dict is refused here, not left to crash the folder's comparison later
    for text in ('{"identity": {}}', '["kind"]', '"kind"', "{", "null", '{"kind": "sweep", "identity": null}',
                 '{"kind": "sweep", "identity": [1]}'):
        path.write_text(text)
        with _raises(message):
            rf.read_identity(tmp_path)
    path.write_bytes(b"\xff\xfe{")
    with _raises(message):
        rf.read_identity(tmp_path)


# ---------------------------------------------------------------------------------------------- legacy_kind
def test_legacy_kind_from_the_record(tmp_path):
    cases = [({"stage": "pretrain"}, "pretrain"), ({"stage": "retrain"}, "retrain"),
             ({"stage": "pretrain", "method": "x", "models": 1, "scores": 1}, "pretrain"),
             ({"stage": "other", "method": "x"}, "unlearn"), ({"method": None}, "unlearn"),
             ({"method": 1, "models": 1, "scores": 1}, "unlearn"),
             ({"models": 1, "scores": 2}, "memorization"), ({"models": 1}, None), ({"scores": 1}, None),
             ({"stage": "other"}, None), ({}, None), (["method"], None), ("method", None)]
    for i, (record, kind) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "record.json").write_text(json.dumps(record))
        assert rf.legacy_kind(str(folder)) == kind, record
    # an unreadable record falls back on the files
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "record.json").write_text("{")
    assert rf.legacy_kind(folder) is None
    (folder / "model.pt").write_text("")
    assert rf.legacy_kind(folder) == "unlearn"
    # a record that names nothing falls back on the files too
    (folder / "record.json").write_text(json.dumps({"other": 1}))
    assert rf.legacy_kind(folder) == "unlearn"
    # the record comes first
    (folder / "record.json").write_text(json.dumps({"stage": "retrain"}))
    assert rf.legacy_kind(folder) == "retrain"


def test_legacy_kind_from_the_files(tmp_path):
    expected = {"results.csv": "sweep", "manifest.json": "sweep", "result.json": "run", "summary.json": "protocol",
                "validation.csv": "validation", "scores.npz": "memorization", "checkpoint.pt": "pretrain or retrain",
                "model.pt": "unlearn"}
    for name, kind in expected.items():
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_text("")
        assert rf.legacy_kind(folder) == kind, name
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "other.txt").write_text("")
    assert rf.legacy_kind(empty) is None
    assert rf.legacy_kind(tmp_path / "missing") is None
    both = tmp_path / "both"
    both.mkdir()
    (both / "model.pt").write_text("")
    (both / "results.csv").write_text("")
    assert rf.legacy_kind(both) == "sweep"  # the first name of the list


# ---------------------------------------------------------------------------------------------- _alive, _read_lock
def test_alive(monkeypatch):
    sent = []

    def kill(pid, sig):
        sent.append((pid, sig))
        if pid == 1:
            raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    assert rf._alive(1) is True  # a process of another user
    assert rf._alive(77) is True
    assert sent == [(1, 0), (77, 0)]  # signal 0: only asks
    monkeypatch.undo()
    assert rf._alive(os.getpid()) is True
    assert rf._alive(DEAD_PID) is False


def test_read_lock(tmp_path):
    lock = tmp_path / ".lock"
    assert rf._read_lock(lock) == {}
    lock.write_text(json.dumps({"pid": 3, "host": "h"}))
    assert rf._read_lock(lock) == {"pid": 3, "host": "h"}
    lock.write_text("[1, 2]")
    assert rf._read_lock(lock) == {}
    lock.write_text("{")
    assert rf._read_lock(lock) == {}


# ---------------------------------------------------------------------------------------------- messages
def test_describe_differences_and_short():
    old = {"a": 1, "b": {"x": 1, "y": 2, "z": 0}, "c": "s"}
    new = {"a": 2, "b": {"x": 1, "y": 3, "w": 4}, "c": "s", "d": [1]}
    assert rf.describe_differences(old, new) == "a 1 -> 2; b: y 2 -> 3, w None -> 4, z 0 -> None; d null -> [1]"
    five_old = {f"k{i}": i for i in range(5)}
    five_new = {f"k{i}": i + 10 for i in range(5)}
    assert rf.describe_differences(five_old, five_new) == "k0 0 -> 10; k1 1 -> 11; k2 2 -> 12; k3 3 -> 13"
    nested = rf.describe_differences({"n": {s: 0 for s in "pqrst"}}, {"n": {s: 1 for s in "pqrst"}})
    assert nested == "n: p 0 -> 1, q 0 -> 1, r 0 -> 1, s 0 -> 1"
    assert rf.describe_differences({"n": {"s": "u"}}, {"n": {"s": "v"}}) == "n: s 'u' -> 'v'"
    assert rf.describe_differences({"a": {"x": 1}}, {"a": 5}) == 'a {"x": 1} -> 5'
    assert rf.describe_differences({"a": 5}, {"a": {"x": 1}}) == 'a 5 -> {"x": 1}'
    assert rf.describe_differences({"a": 1}, {"a": 1}) == ""
    assert rf.describe_differences({"old": 1}, {"new": 2}) == "new null -> 2; old 1 -> null"
    # _short: JSON, anything else as its str, at most 60 characters
    assert rf._short("s") == '"s"' and rf._short(None) == "null"
    assert rf._short(Path("/x/y")) == '"/x/y"'
    assert rf._short("a" * 58) == '"' + "a" * 58 + '"'  # 60 characters: kept
    assert rf._short("a" * 59) == '"' + "a" * 56 + "..."  # 61: cut to 57 and "..."
    assert len(rf._short("b" * 500)) == 60


# ---------------------------------------------------------------------------------------------- RunFolder: claim
def test_defaults_and_a_new_nested_folder(tmp_path, monkeypatch):
    calls = _record_mkstemp(monkeypatch)
    target = tmp_path / "a" / "b" / "c"
    folder = RunFolder(str(target), "sweep")
    assert folder.path == target and isinstance(folder.path, Path) and folder.kind == "sweep"
    assert folder.identity == {} and folder.sources == [] and folder.force is False and folder.outputs == ()
    assert folder.on_mismatch == "refuse" and folder.compare is None and folder.marker is True
    assert folder.fix == "add --force to replace it" and folder.previous is None and folder.replacing is False
    assert folder._created == [] and folder._locked is False and folder._begun is False
    identity = {"a": 1}
    other = RunFolder(target, "x", identity, sources=["", None, str(tmp_path)], outputs=["o"])
    assert other.identity == identity and other.identity is not identity
    assert other.sources == [tmp_path] and other.outputs == ("o",)
    with folder as entered:
        assert entered is folder
        assert folder._created == [tmp_path / "a", tmp_path / "a" / "b", target]
        assert calls == [((), {"dir": target, "prefix": ".write-probe-"})]
        assert sorted(p.name for p in target.iterdir()) == [LOCK_FILE]
        assert folder._locked is True and rf._HELD[target.resolve()] == 1
    # a normal exit without begin keeps the (empty) folder, unlocked
    assert target.is_dir() and list(target.iterdir()) == []
    assert target.resolve() not in rf._HELD and folder._locked is False
    folder._unlock()  # once unlocked, a second unlock does nothing
    assert target.resolve() not in rf._HELD


def test_a_refusal_removes_what_it_created_and_a_failure_after_begin_does_not(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError, match="^boom$"):
        with RunFolder(target, "sweep", {"a": 1}):
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError, match="^boom$"):
        with RunFolder(target, "sweep", {"a": 1}) as folder:
            folder.begin()
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["run.json"]
    assert json.loads((target / "run.json").read_text()) == {"kind": "sweep", "identity": {"a": 1}}
    # an existing folder is never removed, even on a refusal
    with pytest.raises(RuntimeError, match="^boom$"):
        with RunFolder(tmp_path / "a", "sweep"):
            raise RuntimeError("boom")
    assert target.is_dir()


def test_the_source_folder_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "x").mkdir()
    message = (f"--out {src} is the source folder of this run; a run never writes into what it reads: choose "
               "another --out")
    with _raises(message):
        RunFolder(src, "unlearn", sources=[str(tmp_path / "x" / ".." / "src")]).__enter__()
    assert not (src / LOCK_FILE).exists()
    # an existing source that is another folder is fine, and so is a source that does not exist yet
    with RunFolder(tmp_path / "out", "unlearn", sources=[src, tmp_path / "nowhere"]):
        pass
    assert (tmp_path / "out").is_dir()
    with RunFolder(tmp_path / "new", "unlearn", sources=[tmp_path / "new"]):
        pass
    assert (tmp_path / "new").is_dir()


def test_a_file_and_other_kinds_are_refused(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with _raises(f"--out {afile} is a file, not a folder; choose another --out"):
        RunFolder(afile, "sweep").__enter__()
    run = tmp_path / "run"
    _write_run(run, {"kind": "unlearn", "identity": {}})
    with _raises(f"--out {run} holds a unlearn run, not a sweep run; choose another --out"):
        RunFolder(run, "sweep").__enter__()
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    # marker=False: the folder is locked without any identity check and no run.json is written
    with RunFolder(run, "sweep", {"a": 1}, marker=False) as folder:
        folder.begin()
    assert json.loads((run / "run.json").read_text()) == {"kind": "unlearn", "identity": {}}
    plain = tmp_path / "plain"
    with RunFolder(plain, "figures", {"a": 1}, marker=False) as folder:
        folder.begin()
        assert folder._begun is True
    assert list(plain.iterdir()) == []


def test_legacy_folders(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.csv").write_text("")
    with _raises(f"--out {sweep} holds a sweep run, not a unlearn run; choose another --out"):
        RunFolder(sweep, "unlearn").__enter__()
    with RunFolder(sweep, "sweep") as folder:
        folder.begin()
    assert json.loads((sweep / "run.json").read_text()) == {"kind": "sweep", "identity": {}}
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "checkpoint.pt").write_text("")
    for kind in ("pretrain", "retrain"):
        with RunFolder(ckpt, kind):
            pass
    for kind in ("unlearn", "or", "pretrain or retrain"):
        with _raises(f"--out {ckpt} holds a pretrain or retrain run, not a {kind} run; choose another --out"):
            RunFolder(ckpt, kind).__enter__()
    empty = tmp_path / "empty"
    empty.mkdir()
    with RunFolder(empty, "anything"):
        pass


def test_another_identity(tmp_path):
    out = tmp_path / "out"
    _write_run(out, {"kind": "sweep", "identity": {"c": 3, "a": 1}})
    with _raises(f"--out {out} holds another run (sweep, other settings: a 1 -> 2; b null -> 1; c 3 -> null): "
                 "add --force to replace it, or choose a new --out"):
        RunFolder(out, "sweep", {"a": 2, "b": 1}).__enter__()
    with _raises(f"--out {out} holds another run (sweep, other settings: a 1 -> 2): use X, or choose a new --out"):
        RunFolder(out, "sweep", {"a": 2, "c": 3}, fix="use X").__enter__()
    with _raises(f"--out {out} holds another run (sweep, other settings: c 3 -> 4): add --force to replace it, or "
                 "choose a new --out"):
        RunFolder(out, "sweep", {"a": 9, "c": 4}, compare=("c",)).__enter__()
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]  # nothing written by the refusals
    # compare: only the named keys refuse; the identity is still recorded
    with RunFolder(out, "sweep", {"a": 9, "c": 3}, compare=("c",)) as folder:
        assert folder.previous == {"c": 3, "a": 1} and folder.replacing is False
        folder.begin()
    assert json.loads((out / "run.json").read_text()) == {"kind": "sweep", "identity": {"a": 9, "c": 3}}
    with RunFolder(out, "sweep", {"z": 0}, compare=()) as folder:
        assert folder.replacing is False
    # force and on_mismatch="replace" take it over
    with RunFolder(out, "sweep", {"a": 1}, force=True) as folder:
        assert folder.replacing is True and folder.previous == {"a": 9, "c": 3}
    with RunFolder(out, "sweep", {"a": 1}, on_mismatch="replace") as folder:
        assert folder.replacing is True
    with _raises(f"--out {out} holds another run (sweep, other settings: a 9 -> 1; c 3 -> null): add --force to "
                 "replace it, or choose a new --out"):
        RunFolder(out, "sweep", {"a": 1}, on_mismatch="refuse").__enter__()
    # the same identity: neither replaced nor rewritten
    same = tmp_path / "same"
    _write_run(same, {"kind": "sweep", "identity": {"a": 1}})
    before = (same / "run.json").stat().st_ino
    with RunFolder(same, "sweep", {"a": 1}, outputs=("run.json",)) as folder:
        assert folder.replacing is False and folder.previous == {"a": 1}
        folder.begin()
    assert (same / "run.json").stat().st_ino == before


def test_a_record_without_identity(tmp_path):
    out = tmp_path / "out"
    _write_run(out, {"kind": "sweep"})
    with RunFolder(out, "sweep", {}) as folder:
        assert folder.previous == {} and folder.replacing is False
        folder.begin()
    assert json.loads((out / "run.json").read_text()) == {"kind": "sweep"}  # not rewritten: the same identity
    with _raises(f"--out {out} holds another run (sweep, other settings: a null -> 1): add --force to replace it, "
                 "or choose a new --out"):
        RunFolder(out, "sweep", {"a": 1}).__enter__()


def test_failures_to_create(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    bad = tmp_path / "f" / "a" / "b"
    with _raises(f"cannot write to output folder {str(bad)!r} (Not a directory); choose another --out"):
        RunFolder(bad, "sweep").__enter__()

    def denied(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    target = tmp_path / "n" / "m"
    folder = RunFolder(target, "sweep")
    with _raises(f"cannot write to output folder {str(target)!r} (Permission denied); choose another --out"):
        folder.__enter__()
    assert not (tmp_path / "n").exists() and folder._created == [] and folder._locked is False


# ---------------------------------------------------------------------------------------------- RunFolder: lock
def test_the_lock_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["p", "y" * 400])
    opened = []
    real_open = os.open

    def record(path, flags, *args, **kwargs):
        if Path(path).name == LOCK_FILE:
            opened.append((flags, *args))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", record)
    target = tmp_path / "x"
    with RunFolder(target, "unlearn", {"a": 1}):
        info = json.loads((target / LOCK_FILE).read_text())
        mode = (target / LOCK_FILE).stat().st_mode & 0o777
    assert opened == [(os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)]
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o644 & ~umask
    assert list(info) == ["pid", "host", "command", "kind", "since"]
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["kind"] == "unlearn"
    assert info["command"] == "p " + "y" * 298
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", info["since"])
    assert not (target / LOCK_FILE).exists()


def test_nested_claims_of_one_folder(tmp_path):
    target = tmp_path / "x"
    key = target.resolve()
    with RunFolder(target, "sweep") as outer:
        content = (target / LOCK_FILE).read_text()
        with RunFolder(target, "sweep") as inner:
            assert rf._HELD[key] == 2 and inner._locked is True
            assert (target / LOCK_FILE).read_text() == content
        assert rf._HELD[key] == 1 and (target / LOCK_FILE).read_text() == content
        assert outer._locked is True
    assert key not in rf._HELD and not (target / LOCK_FILE).exists()
    # a lock removed by someone else meanwhile: the exit still succeeds
    with RunFolder(target, "sweep"):
        (target / LOCK_FILE).unlink()
    assert key not in rf._HELD


def test_a_held_lock_is_refused_with_its_holder(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    lock = out / LOCK_FILE
    host = socket.gethostname()
    holders = [
        ({"pid": os.getpid(), "host": host, "since": "2020-01-01 00:00:00", "command": "c" * 200},
         f"pid {os.getpid()} on {host} since 2020-01-01 00:00:00 ({'c' * 120})"),
        ({"pid": DEAD_PID, "host": "elsewhere.invalid"}, f"pid {DEAD_PID} on elsewhere.invalid since ? (?)"),
        ({"pid": str(DEAD_PID), "host": host}, f"pid {DEAD_PID} on {host} since ? (?)"),
    ]
    for holder, who in holders:
        lock.write_text(json.dumps(holder))
        with _raises(f"--out {out} is in use by {who}; wait for it to finish or choose another --out (if that process "
                     f"is gone, delete {lock})"):
            RunFolder(out, "sweep").__enter__()
        assert json.loads(lock.read_text()) == holder
        assert out.resolve() not in rf._HELD
    lock.write_text("")  # empty: being written, or its writer died before writing
    with _raises(f"--out {out} is in use by pid ? on ? since ? (?); wait for it to finish or choose another --out "
                 f"(if that process is gone, delete {lock})"):
        RunFolder(out, "sweep").__enter__()
    assert out.is_dir()


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname()}))
    with RunFolder(out, "sweep") as folder:
        info = json.loads((out / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["kind"] == "sweep"
        folder.begin()
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_three_attempts_then_a_refusal(tmp_path, monkeypatch):
    out = tmp_path / "x"
    out.mkdir()
    lock = out / LOCK_FILE
    lock.write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname()}))
    tries = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if Path(path).name == LOCK_FILE:  # another process recreates the stale lock each time
            tries.append(path)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with _raises(f"cannot lock output folder {str(out)!r}; choose another --out"):
        RunFolder(out, "sweep").__enter__()
    assert len(tries) == 3 and lock.exists()


def test_a_lock_that_cannot_be_written(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if Path(path).name == LOCK_FILE:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    target = tmp_path / "n" / "m"
    with _raises(f"cannot lock output folder {str(target)!r} (Read-only file system); choose another --out"):
        RunFolder(target, "sweep").__enter__()
    assert not (tmp_path / "n").exists()  # the folders it made are removed again
    assert target.resolve() not in rf._HELD


def test_remove_created(tmp_path):
    a = tmp_path / "a"
    c = a / "b" / "c"
    c.mkdir(parents=True)
    (a / "keep.txt").write_text("")
    (a / LOCK_FILE).write_text("")
    (a / "b" / LOCK_FILE).write_text("")
    folder = RunFolder(c, "sweep")
    folder._created = [a, a / "b", c]
    folder._remove_created()
    assert folder._created == []
    assert sorted(p.name for p in a.iterdir()) == [LOCK_FILE, "keep.txt"]  # kept, with its lock
    folder._remove_created()  # nothing left to do
    assert a.is_dir()


# ---------------------------------------------------------------------------------------------- RunFolder: begin
def test_begin_replaces_the_stale_outputs(tmp_path):
    out = tmp_path / "out"
    _write_run(out, {"kind": "sweep", "identity": {"a": 1}})
    (out / "record.json").write_text("{}")
    (out / "dir").mkdir()
    (out / "dir" / "inner.txt").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "dangling").symlink_to(tmp_path / "nowhere")
    (out / "keep.txt").write_text("")
    outputs = ("record.json", "dir", "link", "dangling", "missing")
    # the same identity: nothing is removed
    with RunFolder(out, "sweep", {"a": 1}, outputs=outputs) as folder:
        folder.begin()
    assert sorted(p.name for p in out.iterdir()) == ["dangling", "dir", "keep.txt", "link", "record.json",
                                                     "run.json"]
    with RunFolder(out, "sweep", {"a": 2}, force=True, outputs=outputs) as folder:
        assert (out / "record.json").exists()  # nothing removed before begin
        folder.begin()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "keep.txt", "run.json"]
        assert json.loads((out / "run.json").read_text()) == {"kind": "sweep", "identity": {"a": 2}}
        (out / "run.json").unlink()
        folder.begin()  # a second begin does nothing
        assert not (out / "run.json").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["data.txt"]  # a link's target is never touched


def test_begin_writes_the_identity_of_a_new_folder(tmp_path):
    out = tmp_path / "new"
    with RunFolder(out, "pretrain", {"b": [1, 2], "a": "x"}) as folder:
        assert not (out / "run.json").exists()
        folder.begin()
        assert folder._begun is True
    assert json.loads((out / "run.json").read_text()) == {"kind": "pretrain", "identity": {"b": [1, 2], "a": "x"}}


# ---------------------------------------------------------------------------------------------- provenance
def test_code_version(monkeypatch):
    calls = []
    answers = []

    def run(args, **kwargs):
        calls.append((args, kwargs))
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return subprocess.CompletedProcess(args, answer[0], answer[1], "")

    asked = []

    def version(name):
        asked.append(name)
        if name == "sam-unlearning" and not asked_fail:
            return "1.2.3"
        raise importlib.metadata.PackageNotFoundError(name)

    asked_fail = False
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(importlib.metadata, "version", version)
    answers.append((0, " v1-3-gabc-dirty \n"))
    assert prov.code_version() == "v1-3-gabc-dirty"
    assert calls == [(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                      {"cwd": prov.REPO_ROOT, "capture_output": True, "text": True, "timeout": 5})]
    assert asked == []
    for answer in [(1, "v1\n"), (0, " \n"), (128, ""), OSError(errno.ENOENT, "no git"),
                   subprocess.TimeoutExpired("git", 5)]:
        answers.append(answer)
        assert prov.code_version() == "sam-unlearning 1.2.3"
    assert asked == ["sam-unlearning"] * 5
    asked_fail = True
    answers.append((1, ""))
    assert prov.code_version() == "unknown"


def _hand_fingerprint(items: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, source in items:
        digest.update(name.encode() + b"\0" + ast.dump(ast.parse(source)).encode() + b"\0")
    return digest.hexdigest()[:12]


def test_source_fingerprint(tmp_path):
    with_docs = ('"""Module doc."""\n'
                 "import os\n"
                 "f = lambda x: x\n"
                 "def g():\n    'only a docstring'\n"
                 "def h(x):\n    \"\"\"Doc.\"\"\"\n    42\n    return x * 2\n"
                 "class C:\n    'class doc'\n    def m(self):\n        'm doc'\n        return 1\n"
                 "if os:\n    'a string first in a block'\n    y = 1\n")
    stripped = ("import os\n"
                "f = lambda x: x\n"
                "def g():\n    pass\n"
                "def h(x):\n    42\n    return x * 2\n"
                "class C:\n    def m(self):\n        return 1\n"
                "if os:\n    y = 1\n")
    (tmp_path / "m.py").write_text(with_docs)
    (tmp_path / "n.py").write_text("x = 1\n")
    got = prov.source_fingerprint(str(tmp_path), ("m",))
    assert got == _hand_fingerprint([("m", stripped)]) and len(got) == 12
    assert prov.source_fingerprint(tmp_path, ("m", "n")) == _hand_fingerprint([("m", stripped), ("n", "x = 1\n")])
    assert prov.source_fingerprint(tmp_path, ("n",)) == _hand_fingerprint([("n", "x = 1\n")])
    # a number-like first expression is code, not a docstring
    (tmp_path / "k.py").write_text("def h(x):\n    42\n    return x\n")
    assert prov.source_fingerprint(tmp_path, ("k",)) != _hand_fingerprint([("k", "def h(x):\n    return x\n")])


def test_the_fingerprints_are_computed_once(monkeypatch):
    asked = []
    monkeypatch.setattr(prov, "source_fingerprint", lambda folder, modules: asked.append((folder, modules)) or "fp")
    monkeypatch.setattr(prov, "_NUMERICS", None)
    monkeypatch.setattr(prov, "_EMPIRICAL_NUMERICS", None)
    assert prov.numerics_version() == "fp" and prov.numerics_version() == "fp"
    assert prov._NUMERICS == "fp"
    here = Path(prov.__file__)
    assert asked == [(here.parent, ("model", "backends", "optim", "engine", "data", "unlearning", "config"))]
    asked.clear()
    assert prov.empirical_numerics_version() == "fp" and prov.empirical_numerics_version() == "fp"
    assert prov._EMPIRICAL_NUMERICS == "fp"
    assert asked == [(here.resolve().parent.parent / "empirical",
                      ("augment", "config", "data", "evaluate", "landscape", "memorization", "methods", "metrics",
                       "models", "sam", "steps", "trainer", "unlearn"))]
    monkeypatch.setattr(prov, "_NUMERICS", "cached")
    monkeypatch.setattr(prov, "_EMPIRICAL_NUMERICS", "cached2")
    assert prov.numerics_version() == "cached" and prov.empirical_numerics_version() == "cached2"
    assert len(asked) == 1


def test_device_name(monkeypatch):
    import platform

    gpus = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev: gpus.append(dev) or "Fake GPU")
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "mach64")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    cpuinfo = ["processor\t: 0\nmodel name\t: Fancy: CPU @ 3GHz \nmodel name\t: Second\n"]
    real_read = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):
        if str(self) == "/proc/cpuinfo":
            if isinstance(cpuinfo[0], BaseException):
                raise cpuinfo[0]
            return cpuinfo[0]
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    assert prov.device_name("cuda:1") == "Fake GPU"
    assert prov.device_name(torch.device("cuda:0")) == "Fake GPU"
    assert gpus == [torch.device("cuda:1"), torch.device("cuda:0")]
    cpu = "Fancy: CPU @ 3GHz (7 logical cores, torch threads 3)"
    assert prov.device_name() == cpu and prov.device_name("cpu") == cpu
    cpuinfo[0] = "processor\t: 0\n"
    assert prov.device_name("cpu") == "mach64 (7 logical cores, torch threads 3)"
    cpuinfo[0] = OSError(errno.ENOENT, "no /proc")
    assert prov.device_name("cpu") == "mach64 (7 logical cores, torch threads 3)"
    monkeypatch.setattr(platform, "processor", lambda: "proc")
    assert prov.device_name("cpu") == "proc (7 logical cores, torch threads 3)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prov.device_name("cuda") == "proc (7 logical cores, torch threads 3)"
    assert len(gpus) == 2


def test_library_versions_command_line_and_provenance(monkeypatch):
    import platform

    import numpy

    assert prov.library_versions() == {"python": platform.python_version(), "torch": torch.__version__,
                                       "numpy": numpy.__version__}
    monkeypatch.setattr(sys, "argv", ["prog", "a", "b"])
    monkeypatch.delenv("SAM_UNLEARNING_COMMAND", raising=False)
    assert prov.command_line() == ["prog", "a", "b"]
    for text in ("", "{", '{"a": 1}', '"word"', "3"):
        monkeypatch.setenv("SAM_UNLEARNING_COMMAND", text)
        assert prov.command_line() == ["prog", "a", "b"], text
    monkeypatch.setenv("SAM_UNLEARNING_COMMAND", json.dumps(["python", "-m", "x", 1, None]))
    assert prov.command_line() == ["python", "-m", "x", "1", "None"]
    monkeypatch.setenv("SAM_UNLEARNING_COMMAND", "[]")
    assert prov.command_line() == []
    got = prov.command_line()
    got.append("z")
    assert prov.command_line() == []
    monkeypatch.delenv("SAM_UNLEARNING_COMMAND")
    words = prov.command_line()
    assert words == sys.argv and words is not sys.argv

    devices = []
    monkeypatch.setattr(prov, "code_version", lambda: "cv")
    monkeypatch.setattr(prov, "numerics_version", lambda: "nv")
    monkeypatch.setattr(prov, "library_versions", lambda: {"lib": "1"})
    monkeypatch.setattr(prov, "device_name", lambda device: devices.append(device) or f"dev {device}")
    monkeypatch.setattr(prov, "command_line", lambda: ["cmd"])
    monkeypatch.setattr(platform, "platform", lambda: "plat")
    assert prov.provenance() == {"code_version": "cv", "numerics_version": "nv", "libraries": {"lib": "1"},
                                 "device": "dev cpu", "platform": "plat", "command": ["cmd"]}
    assert prov.provenance("cuda:2")["device"] == "dev cuda:2"
    assert devices == ["cpu", "cuda:2"]
