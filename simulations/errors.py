"""The errors every package of the project raises for bad input and failed writes.

One rule for all four command lines: an error of these kinds is printed as one line (``error: ...``) and the
command exits with status 2. The message names the field, file or folder and the fix.
"""

from __future__ import annotations

import errno
import os


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the field and the fix."""


class OutputError(ConfigError):
    """A file or folder could not be written (disk full, read-only, ...); nothing already there was changed."""


def output_error(path: os.PathLike | str, exc: OSError) -> OutputError:
    """One line naming ``path`` and the OS's reason, with the fix for the usual causes."""
    reason = exc.strerror or type(exc).__name__
    fix = {errno.ENOSPC: "free disk space or choose another --out",
           errno.EDQUOT: "free disk space (quota) or choose another --out",
           errno.EROFS: "the file system is read-only; choose another --out",
           errno.EACCES: "no permission; choose another --out",
           errno.EPERM: "no permission; choose another --out"}.get(exc.errno, "choose another --out")
    return OutputError(f"cannot write {str(path)!r} ({reason}): {fix}; files already there are unchanged")
