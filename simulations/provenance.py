"""What every result records about how it was made: code version, library versions, device.

The atomic writes that used to live here are in :mod:`simulations.atomic` (re-exported for old imports)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes, atomic_write_json  # noqa: F401 - re-exported: their old home
from .atomic import json_default as _json_default  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """``git describe`` of the checkout (with ``-dirty``), or the package version outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "sam-unlearning " + version("sam-unlearning")
    except Exception:  # noqa: BLE001 - not installed as a package
        return "unknown"


NUMERICS_MODULES = ("model", "backends", "optim", "engine", "data", "unlearning", "config")


def source_fingerprint(folder: Path, modules: tuple[str, ...]) -> str:
    """A 12-hex-digit hash of ``folder/<module>.py`` for each module, as parsed, without docstrings: an edit that
    can change a number changes it, a comment, docstring or formatting edit does not."""
    import ast
    import hashlib

    digest = hashlib.sha256()
    for name in modules:
        tree = ast.parse((Path(folder) / f"{name}.py").read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        digest.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()[:12]


def numerics_version() -> str:
    """The fingerprint (:func:`source_fingerprint`) of the simulator's numerical code (``simulations/{model,backends,
    optim,engine,data,unlearning,config}.py``). Stored with every cached result; a result of other numerics is never
    reused. Computed once per process (a worker computes it when it first writes)."""
    global _NUMERICS
    if _NUMERICS is None:
        _NUMERICS = source_fingerprint(Path(__file__).parent, NUMERICS_MODULES)
    return _NUMERICS


# the empirical pipeline's modules whose code can change a number (training, unlearning, metrics, data, splits)
EMPIRICAL_NUMERICS_MODULES = ("augment", "config", "data", "evaluate", "landscape", "memorization", "methods",
                              "metrics", "models", "sam", "steps", "trainer", "unlearn")


def empirical_numerics_version() -> str:
    """The fingerprint of the empirical pipeline's numerical code (:data:`EMPIRICAL_NUMERICS_MODULES` of
    ``empirical/``): part of every empirical run folder's identity, so a stage made by other code is never reused."""
    global _EMPIRICAL_NUMERICS
    if _EMPIRICAL_NUMERICS is None:
        _EMPIRICAL_NUMERICS = source_fingerprint(REPO_ROOT / "empirical", EMPIRICAL_NUMERICS_MODULES)
    return _EMPIRICAL_NUMERICS


_EMPIRICAL_NUMERICS: str | None = None
_NUMERICS: str | None = None


def device_name(device: str = "cpu") -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


COMMAND_ENV = "SAM_UNLEARNING_COMMAND"  # the command, for the subprocesses it starts (pool workers, submitit jobs)


def command_line() -> list[str]:
    """The command line that made a result, as a list of words: the one a package's ``main`` is running
    (:func:`recorded_command`; also seen by the processes it starts), else this process's ``sys.argv``."""
    text = os.environ.get(COMMAND_ENV)
    if text:
        try:
            words = json.loads(text)
            if isinstance(words, list):
                return [str(w) for w in words]
        except ValueError:
            pass
    return list(sys.argv)


@contextlib.contextmanager
def recorded_command(package: str, argv: list[str] | None):
    """While the block runs, :func:`command_line` is ``python -m <package> <argv>`` (``argv`` None: this process's
    arguments), in this process and in those it starts."""
    before = os.environ.get(COMMAND_ENV)
    os.environ[COMMAND_ENV] = json.dumps(["python", "-m", package, *(sys.argv[1:] if argv is None else argv)])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(COMMAND_ENV, None)
        else:
            os.environ[COMMAND_ENV] = before


def provenance(device: str = "cpu") -> dict[str, Any]:
    return {"code_version": code_version(), "numerics_version": numerics_version(), "libraries": library_versions(),
            "device": device_name(device), "platform": platform.platform(), "command": command_line()}


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise ConfigError naming the folder (kept here for
    old imports; it lives in :mod:`simulations.runfolder`)."""
    from .runfolder import ensure_writable_dir as ensure

    return ensure(path)
