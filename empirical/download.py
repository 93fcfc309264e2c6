"""Checksummed download of the standard CIFAR python archives, for users with internet (never used by tests or CI
against the network: the tests download from a local ``file://`` URL).

    python -m empirical download --dataset cifar10 --dest ~/data     # then --data-root ~/data
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .data import DataError

# the archives' publisher (Krizhevsky, 2009) and their published MD5 checksums
SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "cifar-100-python"),
}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_cifar(name: str, dest: str | Path, url: str | None = None, md5: str | None = None) -> Path:
    """Download, verify and unpack ``name`` into ``dest/<standard folder>``; returns that folder.

    An existing folder is kept as it is. A checksum mismatch or a broken archive raises :class:`DataError` and leaves
    nothing behind (the archive is unpacked in a temporary folder and moved into place last)."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    default_url, default_md5, folder = SOURCES[name]
    dest = Path(dest)
    target = dest / folder
    if target.is_dir():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(url or default_url) as response, open(archive, "wb") as fh:
                shutil.copyfileobj(response, fh)
        except OSError as exc:
            raise DataError(f"could not download {name} from {url or default_url} ({exc}); download it by hand and "
                            f"pass its folder with --data-root") from None
        got = md5sum(archive)
        if got != (md5 or default_md5):
            raise DataError(f"checksum mismatch for {name}: got md5 {got}, expected {md5 or default_md5}; the download "
                            f"is corrupt or not the official archive (nothing was kept)")
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"the {name} archive could not be unpacked ({exc})") from None
        found = next(unpacked.rglob(folder), None)
        if found is None or not found.is_dir():
            raise DataError(f"the {name} archive holds no {folder!r} folder")
        found.rename(target)
    return target
