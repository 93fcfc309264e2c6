"""The run-folder contract of every command that writes (``simulations``, ``theory validate``, ``empirical``,
``figures``): nothing lost, nothing silently wrong.

    with RunFolder(out, "unlearn", identity, sources=[source], force=args.force, outputs=("record.json", ...)) as run:
        ...every check that can refuse...        # a refusal here leaves the folder exactly as it was
        run.begin()                              # from here on the folder is this run's: DIR/run.json is written
        ...writes (atomic)...

* **One writer.** ``DIR/.lock`` is created exclusively and holds the writer's pid, host and command; a second
  writer is refused with who holds it. A lock left by a process of this host that no longer exists is taken over.
* **Identity.** ``DIR/run.json`` records the kind of run and its identity (configuration hash, source, data, the
  numerics' code version, ...). A folder holding another kind of run is refused; one holding the same kind with
  another identity is refused with the fix named (``--force`` replaces it, removing its stale outputs, or a new
  ``--out``), never silently reused or overwritten. Folders written before this contract (no ``run.json``) are
  recognised by their files, so another kind of run is refused there too.
* **Checks before writes.** Nothing is written before :meth:`RunFolder.begin`; a refusal before it removes the lock
  and every folder this run created, so not even an empty folder is left behind.
* ``--out`` equal to a source folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .errors import ConfigError

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
_HELD: dict[Path, int] = {}  # folders locked by this process (re-entrant: a nested claim of one folder)


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise ConfigError naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to output folder {str(path)!r} ({exc.strerror}); choose another --out") from None
    return path


def read_identity(folder: Path) -> dict | None:
    """The ``run.json`` of ``folder`` (None when there is none); an unreadable one is refused."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "kind" not in data or not isinstance(data.get("identity", {}), dict):
            raise ValueError
        return data
    except (OSError, ValueError):
        raise ConfigError(f"{path} is unreadable or not a run record; if the folder is yours delete that file, "
                          "else choose another --out") from None


def legacy_kind(folder: Path) -> str | None:
    """The kind of run a folder written before ``run.json`` existed holds, recognised by its files."""
    folder = Path(folder)
    record = folder / "record.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            if data.get("stage") in ("pretrain", "retrain"):
                return data["stage"]
            if "method" in data:
                return "unlearn"
            if "models" in data and "scores" in data:
                return "memorization"
    for name, kind in (("results.csv", "sweep"), ("manifest.json", "sweep"), ("result.json", "run"),
                       ("summary.json", "protocol"), ("validation.csv", "validation"), ("scores.npz", "memorization"),
                       ("checkpoint.pt", "pretrain or retrain"), ("model.pt", "unlearn")):
        if (folder / name).exists():
            return kind
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_differences(old: dict, new: dict) -> str:
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    parts = []
    for k in keys[:4]:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = [s for s in dict.fromkeys([*b, *a]) if a.get(s) != b.get(s)]
            parts.append(f"{k}: " + ", ".join(f"{s} {a.get(s)!r} -> {b.get(s)!r}" for s in sub[:4]))
        else:
            parts.append(f"{k} {_short(a)} -> {_short(b)}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class RunFolder:
    """Claim ``path`` for one run of ``kind`` with ``identity`` (module docstring). A context manager.

    ``sources``: folders this run reads (``--out`` may not be one of them). ``force``: a folder of the same kind
    with another identity is taken over; its ``outputs`` (file names) are removed at :meth:`begin`. ``on_mismatch``
    ``"replace"`` takes such a folder over without ``force`` (managed caches: the figures' and the validation's
    sweep folders); ``compare`` names the identity keys whose difference refuses (default: all).
    ``marker=False`` locks the folder without recording an identity (a folder of figures)."""

    def __init__(self, path: Path, kind: str, identity: dict | None = None, *, sources: tuple | list = (),
                 force: bool = False, outputs: tuple | list = (), on_mismatch: str = "refuse",
                 compare: tuple | None = None, marker: bool = True, fix: str = "add --force to replace it"):
        self.path = Path(path)
        self.kind = kind
        self.identity = dict(identity or {})
        self.sources = [Path(s) for s in sources if s]
        self.force = force
        self.outputs = tuple(outputs)
        self.on_mismatch = on_mismatch
        self.compare = compare
        self.marker = marker
        self.fix = fix
        self.previous: dict | None = None  # the identity found in the folder
        self.replacing = False  # the folder holds the same kind of run with another identity, taken over
        self._created: list[Path] = []
        self._locked = False
        self._begun = False

    # ------------------------------------------------------------------ claim
    def __enter__(self) -> RunFolder:
        self._check_before_creating()
        self._create()
        try:
            self._lock()
        except BaseException:
            self._remove_created()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._unlock()
        if exc_type is not None and not self._begun:
            self._remove_created()

    def _check_before_creating(self) -> None:
        out = self.path
        for source in self.sources:
            if source.exists() and out.exists() and out.resolve() == source.resolve():
                raise ConfigError(f"--out {out} is the source folder of this run; a run never writes into what it "
                                  "reads: choose another --out")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
        if not out.is_dir() or not self.marker:
            return
        found = read_identity(out)
        if found is None:
            kind = legacy_kind(out)
            if kind is not None and self.kind not in kind.split(" or "):
                raise ConfigError(f"--out {out} holds a {kind} run, not a {self.kind} run; choose another --out")
            return
        if found["kind"] != self.kind:
            raise ConfigError(f"--out {out} holds a {found['kind']} run, not a {self.kind} run; choose another --out")
        self.previous = found.get("identity", {})
        keys = self.compare if self.compare is not None else tuple(dict.fromkeys([*self.identity, *self.previous]))
        old = {k: self.previous.get(k) for k in keys}
        new = {k: self.identity.get(k) for k in keys}
        if old != new:
            if not (self.force or self.on_mismatch == "replace"):
                raise ConfigError(f"--out {out} holds another run ({self.kind}, other settings: "
                                  f"{describe_differences(old, new)}): {self.fix}, or choose a new --out")
            self.replacing = True

    def _create(self) -> None:
        missing = []
        folder = self.path
        while not folder.exists():
            missing.append(folder)
            if folder.parent == folder:
                break
            folder = folder.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self._remove_created()
            raise ConfigError(f"cannot write to output folder {str(self.path)!r} ({exc.strerror}); choose another "
                              "--out") from None

    def _lock(self) -> None:
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key] += 1
            self._locked = True
            return
        lock = self.path / LOCK_FILE
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
                "kind": self.kind, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder.get("host") == info["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    try:  # the writer of this host is gone: its lock is stale
                        os.unlink(lock)
                    except FileNotFoundError:
                        pass
                    continue
                if not holder:  # being written this instant, or empty: let its writer finish
                    time.sleep(0.05)
                    holder = _read_lock(lock) or {"pid": "?", "host": "?", "command": "?"}
                raise ConfigError(
                    f"--out {self.path} is in use by pid {holder.get('pid')} on {holder.get('host')} since "
                    f"{holder.get('since', '?')} ({holder.get('command', '?')!s:.120}); wait for it to finish or "
                    f"choose another --out (if that process is gone, delete {lock})") from None
            except OSError as exc:
                raise ConfigError(f"cannot lock output folder {str(self.path)!r} ({exc.strerror}); choose another "
                                  "--out") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            _HELD[key] = 1
            self._locked = True
            return
        raise ConfigError(f"cannot lock output folder {str(self.path)!r}; choose another --out")

    def _unlock(self) -> None:
        if not self._locked:
            return
        self._locked = False
        key = self.path.resolve()
        _HELD[key] -= 1
        if _HELD[key] == 0:
            del _HELD[key]
            try:
                os.unlink(self.path / LOCK_FILE)
            except FileNotFoundError:
                pass

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                leftovers = [p for p in folder.iterdir() if p.name != LOCK_FILE]
                if not leftovers:
                    (folder / LOCK_FILE).unlink(missing_ok=True)
                    folder.rmdir()
            except OSError:
                pass
        self._created = []

    # ------------------------------------------------------------------ writing
    def begin(self) -> None:
        """Every check has passed: remove the stale outputs of a replaced run and record this run's identity."""
        if self._begun:
            return
        if self.replacing:
            for name in self.outputs:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        if self.marker and (self.previous != self.identity or not (self.path / RUN_FILE).is_file()):
            atomic_write_json(self.path / RUN_FILE, {"kind": self.kind, "identity": self.identity})
        self._begun = True


def _read_lock(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
