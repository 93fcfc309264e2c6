"""CIFAR-10/100 as uint8 arrays, and the seeded subsets (train/val, forget/retain) every stage shares.

Described in ``docs/protocol.md`` (sections "Data and splits", "Forget sets"). Accepted layouts:

- ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) and ``cifar-100-python/``
  (``train``, ``test``, ``meta``): the standard python pickles, read natively;
- ``cifar10-jpg.tar.xz`` (``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``): decoded once with Pillow and cached
  as ``.npy``; the original training order is restored from ``cifar10-cscores.npz`` when it lies beside the archive;
- ``cifar100-cscore-extremes.npz`` (6,400 CIFAR-100 training images): no test set, so a seeded 20% per class is held
  out as the test set.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.errors import ConfigError
from simulations.provenance import REPO_ROOT

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()

JPEG_ARCHIVE = "cifar10-jpg.tar.xz"
CIFAR10_CSCORES = "cifar10-cscores.npz"
EXTREMES_FILE = "cifar100-cscore-extremes.npz"
EXTREMES_TEST_FRACTION, EXTREMES_TEST_SEED = 0.2, 0
DEFAULT_CACHE_DIR = REPO_ROOT / "cache" / "data"
PICKLE_LAYOUTS = {  # name: (standard folder, files that identify it, the fallback file in this project's data)
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "test_batch"), JPEG_ARCHIVE),
    "cifar100": ("cifar-100-python", ("train", "test", "meta"), EXTREMES_FILE),
}

LAYOUTS = ("accepted layouts: a 'cifar-10-batches-py' folder (data_batch_1..5, test_batch, batches.meta), "
           "a 'cifar-100-python' folder (train, test, meta), "
           f"'{JPEG_ARCHIVE}' (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg; cifar10), "
           f"or '{EXTREMES_FILE}' (keys x, y, train_idx; cifar100), each given directly or inside the folder 'root'; "
           "set root= or the environment variable SAM_UNLEARNING_DATA")


class DataError(ConfigError):
    """Missing or malformed data; the message names the expected layout."""


@dataclass
class CifarArrays:
    """One dataset in memory. Images are uint8 (N, 32, 32, 3) (HWC, as stored); labels int64.

    ``train_index[i]`` is the position of training image i in the original CIFAR training order (-1 if unknown),
    which aligns it with C-scores and published per-sample scores (docs/protocol.md#data-and-splits).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str
    train_index: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def digest(self) -> str:
        """sha256 (16 hex digits) of the dataset's content: its name, every image and label (train and test) and the
        training order; the data identity of every run folder made from it (a copy elsewhere has the same digest,
        other images or labels another). Computed once per object."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            import hashlib

            h = hashlib.sha256(self.name.encode() + b"\0")
            for a in (self.train_x, self.train_y, self.test_x, self.test_y, self.train_index):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a).cast("B"))
            cached = self.__dict__["_digest"] = h.hexdigest()[:16]
        return cached


# git-ignored: the data a device call carries (docs/protocol.md#data-files-and-the-gpu-machine)
REPO_DATA_DIR = REPO_ROOT / ".data"


def data_root_candidates() -> list[Path]:
    """Where data are looked for, in order: ``$SAM_UNLEARNING_DATA``, the shared data folder beside the repository
    (``../shared/data``), the git-ignored ``.data/`` inside the repository (what a GPU machine receives)."""
    env = os.environ.get("SAM_UNLEARNING_DATA")
    return [*([Path(env)] if env else []), REPO_ROOT.parent / "shared" / "data", REPO_DATA_DIR]


def default_data_root() -> Path:
    """The first existing folder of :func:`data_root_candidates` (``$SAM_UNLEARNING_DATA`` is taken as given, so a
    wrong one is reported, not skipped); the shared folder's path when none exists (for the error message)."""
    candidates = data_root_candidates()
    if os.environ.get("SAM_UNLEARNING_DATA"):
        return candidates[0]
    return next((c for c in candidates if c.exists()), candidates[0])


def load_cifar(name: str = "cifar10", root: str | Path | None = None, cache_dir: Path | None = None,
               limit_per_class: int | None = None) -> CifarArrays:
    """Load ``name`` ('cifar10' or 'cifar100') from ``root``, auto-detecting the layout (module docstring).

    ``limit_per_class`` (JPEG archive only, for tests; ignored by the other layouts) decodes only the first k files
    of each class folder.
    """
    if name not in ("cifar10", "cifar100"):
        raise DataError(f"name={name!r}: choose 'cifar10' or 'cifar100'")
    root = Path(root) if root is not None else default_data_root()
    if not root.exists():
        raise DataError(f"data root {str(root)!r} does not exist; {LAYOUTS}")
    pickle_dir, required, other = PICKLE_LAYOUTS[name]
    for folder in (root, root / pickle_dir):
        if all((folder / f).is_file() for f in required):
            return _load_cifar10_pickles(folder) if name == "cifar10" else _load_cifar100_pickles(folder)
    file = root if root.is_file() else root / other
    if file.is_file() and file.name.endswith(".tar.xz") and name == "cifar10":
        return _load_jpeg_archive(file, Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR, limit_per_class)
    if file.is_file() and file.name.endswith(".npz") and name == "cifar100":
        return _load_extremes(file)
    raise DataError(f"no {name} data found at {str(root)!r}; {LAYOUTS}")


# ------------------------------------------------------------------------------------------- standard pickles
def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise DataError(f"cannot read CIFAR pickle {str(path)!r} ({type(exc).__name__}: {exc}); expected a python "
                        f"pickle dict with b'data' (uint8 N x 3072) and labels; {LAYOUTS}") from None


def _pickle_arrays(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels int64 from one CIFAR pickle (rows are 1024 R, 1024 G, 1024 B)."""
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{str(path)!r} lacks b'data' or {label_key!r}; {LAYOUTS}")
    data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{str(path)!r}: b'data' has shape {data.shape} for {len(labels)} labels, expected "
                        f"(N, 3072); {LAYOUTS}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _label_names(path: Path, key: bytes, fallback: list[str]) -> list[str]:
    names = _unpickle(path).get(key) if path.is_file() else None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else list(fallback)


def _load_cifar10_pickles(folder: Path) -> CifarArrays:
    parts = [_pickle_arrays(folder / f"data_batch_{i}", b"labels") for i in range(1, 6)]
    train_x, train_y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test_x, test_y = _pickle_arrays(folder / "test_batch", b"labels")
    classes = _label_names(folder / "batches.meta", b"label_names", CIFAR10_CLASSES)
    return CifarArrays("cifar10", train_x, train_y, test_x, test_y, classes, f"cifar-10 python pickles at {folder}",
                       np.arange(len(train_y), dtype=np.int64))


def _load_cifar100_pickles(folder: Path) -> CifarArrays:
    train_x, train_y = _pickle_arrays(folder / "train", b"fine_labels")
    test_x, test_y = _pickle_arrays(folder / "test", b"fine_labels")
    classes = _label_names(folder / "meta", b"fine_label_names", CIFAR100_CLASSES)
    return CifarArrays("cifar100", train_x, train_y, test_x, test_y, classes,
                       f"cifar-100 python pickles (fine labels) at {folder}", np.arange(len(train_y), dtype=np.int64))


# ------------------------------------------------------------------------------------------------ JPEG archive
_CACHED = ("train_x", "train_y", "test_x", "test_y", "train_index")


def _load_jpeg_archive(archive: Path, cache_dir: Path, limit_per_class: int | None) -> CifarArrays:
    """CIFAR-10 from the JPEG archive, via a ``.npy`` cache keyed by the archive's (and C-score file's) size+mtime."""
    if limit_per_class is not None and limit_per_class < 1:
        raise DataError(f"limit_per_class={limit_per_class}: must be a positive integer or None")
    cscores = archive.parent / CIFAR10_CSCORES
    stamp = lambda p: f"{p.stat().st_size}-{p.stat().st_mtime_ns}" if p.is_file() else "none"
    limit = "all" if limit_per_class is None else f"first{limit_per_class}"
    folder = cache_dir / f"cifar10-jpg-{stamp(archive)}-cscores-{stamp(cscores)}-{limit}"
    done = folder / "done.json"
    if done.is_file():
        try:
            arrays = {k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in _CACHED}
            meta = json.loads(done.read_text())
            return CifarArrays("cifar10", classes=list(CIFAR10_CLASSES), source=meta["source"], **arrays)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    data = _decode_jpeg_archive(archive, cscores if cscores.is_file() else None, limit_per_class)
    folder.mkdir(parents=True, exist_ok=True)
    for k in _CACHED:
        buf = io.BytesIO()
        np.save(buf, getattr(data, k), allow_pickle=False)
        atomic_write_bytes(folder / f"{k}.npy", buf.getvalue())
    atomic_write_json(done, {"source": data.source, "archive": str(archive)})  # written last: marks the cache valid
    return data


def _archive_members(archive: Path, limit: int | None) -> tuple[dict, dict]:
    """Read the archive: ``counts[split][class]`` = number of JPEGs, ``blobs[split][class]`` = the bytes of the first
    ``limit`` (all if None) files of that class folder, ordered by file number (``split`` is 'train' or 'test')."""
    try:
        raw = lzma.open(archive).read()
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
        found: dict[str, dict[str, list[tuple[int, tarfile.TarInfo]]]] = {"train": {}, "test": {}}
        for m in tar.getmembers():
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 3 and parts[-3] in found and parts[-1].endswith(".jpg"):
                found[parts[-3]].setdefault(parts[-2], []).append((int(parts[-1][:-4]), m))
        missing = [f"{s}/{c}" for s in found for c in CIFAR10_CLASSES if not found[s].get(c)]
        if missing:
            raise DataError(f"{str(archive)!r} has no JPEGs in {', '.join(missing[:4])}; {LAYOUTS}")
        counts = {s: {c: len(files) for c, files in found[s].items()} for s in found}
        blobs = {s: {c: [tar.extractfile(m).read() for _, m in sorted(found[s][c], key=lambda t: t[0])[:limit]]
                     for c in CIFAR10_CLASSES} for s in found}
    except (OSError, lzma.LZMAError, tarfile.TarError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {str(archive)!r} ({type(exc).__name__}: {exc}); {LAYOUTS}") from None
    return counts, blobs


def _decode(blobs: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8) for b in blobs])


def _decode_jpeg_archive(archive: Path, cscores: Path | None, limit_per_class: int | None) -> CifarArrays:
    """Decode the archive; with ``cscores``, put training images back in the original CIFAR order
    (docs/protocol.md#data-and-splits).

    The k-th file (by number) of class c is the k-th training sample of class c in the original order, so its
    original index is the k-th position of c in the C-score file's ``labels``.
    """
    counts, blobs = _archive_members(archive, limit_per_class)
    labels = np.load(cscores)["labels"] if cscores is not None else None
    xs, ys, idx, test_xs, test_ys = [], [], [], [], []
    for c, cls in enumerate(CIFAR10_CLASSES):
        xs.append(_decode(blobs["train"][cls]))
        ys.append(np.full(len(xs[-1]), c, dtype=np.int64))
        test_xs.append(_decode(blobs["test"][cls]))
        test_ys.append(np.full(len(test_xs[-1]), c, dtype=np.int64))
        if labels is not None:
            positions = np.flatnonzero(labels == c)
            if counts["train"][cls] != len(positions):
                raise DataError(f"{str(archive)!r}: {counts['train'][cls]} training JPEGs of class {cls!r} but "
                                f"{len(positions)} in {str(cscores)!r}: the files do not match")
            idx.append(positions[:len(xs[-1])])
    train_x, train_y = np.concatenate(xs), np.concatenate(ys)
    limited = "" if limit_per_class is None else f"; first {limit_per_class} files per class only"
    if labels is not None:
        train_index = np.concatenate(idx)
        order = np.argsort(train_index, kind="stable")
        train_x, train_y, train_index = train_x[order], train_y[order], train_index[order]
        how = f"original training order restored from {cscores.name}"
    else:
        train_index = np.full(len(train_y), -1, dtype=np.int64)
        how = f"class-major training order ({CIFAR10_CSCORES} absent: original order unknown)"
    source = (f"cifar-10 JPEG (quality 75, 4:2:0; accuracies differ slightly from the lossless originals) from "
              f"{archive}; {how}; test set in class-major order (original test order unknown){limited}")
    return CifarArrays("cifar10", train_x, train_y, np.concatenate(test_xs), np.concatenate(test_ys),
                       list(CIFAR10_CLASSES), source, train_index.astype(np.int64))


# ----------------------------------------------------------------------------------------- CIFAR-100 extremes
def _load_extremes(path: Path) -> CifarArrays:
    """The 6,400-image CIFAR-100 extremes file; a seeded 20% per class becomes the test set (it has none)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y, train_idx = z["x"], z["y"].astype(np.int64), z["train_idx"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({type(exc).__name__}: {exc}); {LAYOUTS}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or not len(x) == len(y) == len(train_idx):
        raise DataError(f"{str(path)!r}: x has shape {x.shape} ({x.dtype}), expected uint8 (N, 32, 32, 3); {LAYOUTS}")
    keep, held = split_train_val(y, EXTREMES_TEST_SEED, EXTREMES_TEST_FRACTION)
    source = (f"cifar-100 C-score extremes (32 highest + 32 lowest C-score training images per class) from {path}; "
              f"NO official test set: a seeded (seed {EXTREMES_TEST_SEED}) {EXTREMES_TEST_FRACTION:.0%} per class "
              f"of these training images is used as the test set; biased by construction, not for paper accuracy")
    return CifarArrays("cifar100", x[keep], y[keep], x[held], y[held], list(CIFAR100_CLASSES), source, train_idx[keep])


# ----------------------------------------------------------------------------------------------------- subsets
def split_train_val(labels: np.ndarray, seed: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class hold-out (docs/protocol.md#data-and-splits: 50k → 45k train + 5k val):
    ``round(val_fraction * n_c)`` of each class goes to val. Returns sorted int64 index arrays ``(train_idx, val_idx)``
    into ``labels``."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction}: must lie in [0, 1)")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(labels == c))[:round(val_fraction * np.sum(labels == c))]
           for c in np.unique(labels)]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), val_idx).astype(np.int64), val_idx


def forget_retain_split(train_idx: np.ndarray, labels: np.ndarray, kind: str = "random", size: int = 3000,
                        seed: int = 0, cls: int | None = None, scores: np.ndarray | None = None,
                        level: str = "high") -> tuple[np.ndarray, np.ndarray]:
    """Split the training indices into forget set F and retain set R = train \\ F
    (docs/protocol.md#forget-sets, |F| = 3000).

    ``kind='random'``: a seeded sample of ``size`` training indices; ``kind='class'``: every training index of class
    ``cls`` (``size`` is ignored); ``kind='memorization'``: by the memorization score ``scores`` (one per training
    image, higher = more memorized, see :func:`memorization_scores`) — ``level`` 'high' takes the ``size`` highest,
    'low' the ``size`` lowest, 'mid' the ``size`` closest to 0.5 (stable sorts, ties by index). ``labels`` (and
    ``scores``) are arrays over the whole training set, indexed by ``train_idx``'s values. Returns sorted int64
    arrays ``(forget_idx, retain_idx)``.
    """
    train_idx, labels = np.asarray(train_idx, dtype=np.int64), np.asarray(labels)
    if kind in ("random", "memorization") and not 0 < size <= len(train_idx):
        raise DataError(f"forget size={size}: must lie in [1, {len(train_idx)}] (the number of training samples)")
    if kind == "memorization":
        if scores is None:
            raise DataError("kind='memorization' needs scores (see memorization_scores)")
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != labels.shape:
            raise DataError(f"scores has shape {scores.shape}, expected one per training image {labels.shape}")
        if level not in MEMORIZATION_LEVELS:
            raise DataError(f"level={level!r}: choose one of {', '.join(MEMORIZATION_LEVELS)}")
        s = scores[np.sort(train_idx)]
        if not np.isfinite(s).all():
            raise DataError("memorization scores of the training split contain NaN/inf")
        key = {"high": -s, "low": s, "mid": np.abs(s - 0.5)}[level]
        forget = np.sort(train_idx)[np.argsort(key, kind="stable")[:size]]
    elif kind == "random":
        if not 0 < size <= len(train_idx):
            raise DataError(f"forget size={size}: must lie in [1, {len(train_idx)}] (the number of training samples)")
        forget = np.random.default_rng(seed).choice(train_idx, size=size, replace=False)
    elif kind == "class":
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        if cls is None or not 0 <= cls < n_classes:
            raise DataError(f"cls={cls}: class-wise forgetting needs a class in [0, {n_classes - 1}]")
        forget = train_idx[labels[train_idx] == cls]
        if len(forget) == 0:
            raise DataError(f"cls={cls}: no training sample has this class")
    else:
        raise DataError(f"kind={kind!r}: choose 'random', 'class' or 'memorization'")
    forget = np.sort(forget).astype(np.int64)
    return forget, np.setdiff1d(train_idx, forget).astype(np.int64)


MEMORIZATION_LEVELS = ("high", "mid", "low")
CSCORE_FILES = {"cifar10": CIFAR10_CSCORES, "cifar100": "cifar100-cscores.npz"}


def memorization_scores(arrays: CifarArrays, source: str | Path | None = None,
                        root: str | Path | None = None) -> tuple[np.ndarray, str]:
    """A memorization score per training image of ``arrays`` (aligned with ``arrays.train_y``; higher = more
    memorized) and a sentence saying what it is.

    ``source`` None or 'cscore': the proxy ``1 − C-score`` from ``cifar10-cscores.npz`` / ``cifar100-cscores.npz``
    in ``root`` (a folder, or the folder of a data file; default: the shared data folder). The C-score (Jiang et
    al., ICML 2021) is not the Feldman & Zhang memorization score the paper uses: the description says "proxy".
    Otherwise a user file indexed by the original CIFAR training order: ``.npy`` (float, one per training image) or
    ``.npz`` with ``scores`` (and optionally ``labels``, checked against the data). Scores are read as given:
    higher = more memorized."""
    if arrays.train_index.size and (arrays.train_index < 0).any():
        raise DataError(f"the training order of {arrays.source} is unknown (no {CIFAR10_CSCORES} beside the JPEG "
                        "archive?), so per-sample scores cannot be aligned with its images")
    labels = None
    if source in (None, "", "cscore"):
        folder = Path(root) if root else default_data_root()
        folder = folder.parent if folder.is_file() else folder
        path = folder / CSCORE_FILES[arrays.name]
        if not path.is_file():
            raise DataError(f"no C-score file {path.name!r} in {str(folder)!r}; give a memorization score file "
                            "(.npy, or .npz with 'scores') instead")
        with np.load(path, allow_pickle=False) as z:
            raw, labels = 1.0 - z["scores"].astype(np.float64), z["labels"]
        description = (f"proxy memorization = 1 - C-score (Jiang et al. 2021) from {path.name}; not the Feldman & "
                       "Zhang score of the paper")
    else:
        path = Path(source)
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    raw = z["scores"].astype(np.float64)
                    labels = z["labels"] if "labels" in z.files else None
            else:
                raw = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot read memorization scores {str(path)!r} ({type(exc).__name__}: {exc}); expected "
                            ".npy (float, one per training image in the original order) or .npz with 'scores'") \
                from None
        description = f"memorization scores from {path}"
    if raw.ndim != 1 or (arrays.train_index.size and arrays.train_index.max() >= len(raw)):
        raise DataError(f"memorization scores have shape {raw.shape}: expected one per image of the original "
                        f"training set (indices up to {int(arrays.train_index.max(initial=-1))})")
    if labels is not None and not np.array_equal(np.asarray(labels)[arrays.train_index], arrays.train_y):
        raise DataError(f"the labels stored with the memorization scores ({path.name}) do not match the training "
                        f"labels of {arrays.source}: the scores belong to another dataset or order")
    return raw[arrays.train_index], description


SPLIT_ARRAYS = ("train", "val", "forget", "retain")


def save_split(path: str | Path, *, description: str = "", **arrays_and_seeds) -> Path:
    """Write the subsets every later stage shares as one npz (atomic write).

    Required keywords: index arrays ``train``, ``val``, ``forget``, ``retain`` and the integer ``seed``; any further
    keyword is stored too (an integer such as ``forget_seed``, an index array, or a float array such as
    ``forget_scores``). Checked first: F ∩ R = ∅, F ∪ R = train, val ∩ train = ∅.
    """
    missing = [k for k in (*SPLIT_ARRAYS, "seed") if k not in arrays_and_seeds]
    if missing:
        raise DataError(f"save_split needs {', '.join(missing)} (index arrays {', '.join(SPLIT_ARRAYS)} and seed)")
    arrays_and_seeds = dict(arrays_and_seeds)
    arrays_and_seeds.pop("indices_sha256", None)  # recomputed below
    dataset = arrays_and_seeds.pop("dataset", None)
    out = {k: np.asarray(v, dtype=np.float64 if np.asarray(v).dtype.kind == "f" and k not in SPLIT_ARRAYS
                         else np.int64) for k, v in arrays_and_seeds.items()}
    check_split(out, out["n_train"].item() if "n_train" in out else None)
    identity = {"indices_sha256": np.str_(indices_digest(out))}
    if dataset is not None:
        identity["dataset"] = np.str_(dataset)
    buf = io.BytesIO()
    np.savez(buf, description=np.str_(description), **identity, **out)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def indices_digest(split: dict) -> str:
    """sha256 of the four index arrays (int64, in order): stored in ``split.npz`` and checked by every reader."""
    import hashlib

    digest = hashlib.sha256()
    for key in SPLIT_ARRAYS:
        digest.update(key.encode() + np.ascontiguousarray(split[key], dtype=np.int64).tobytes())
    return digest.hexdigest()


def check_split(split: dict, n_train: int | None = None, name: str = "split",
                dataset: str | None = None) -> None:
    """Check the index sets of a split: F ∩ R = ∅, F ∪ R = train, train ∩ val = ∅, and with ``n_train`` (the size of
    the training set it is used with) every index in range. A split that records its data (``dataset``,
    ``n_train``: every split written since they exist) must be used with that very data."""
    if dataset is not None and split.get("dataset") not in (None, dataset):
        raise DataError(f"{name} belongs to {split['dataset']}, but this run uses {dataset}: use a split of "
                        f"{dataset} (or drop split_file)")
    if n_train is not None and split.get("n_train") not in (None, n_train):
        raise DataError(f"{name} was made for a training set of {split['n_train']} images, this one has {n_train}: "
                        "the split belongs to another data limit (limit_per_class) or data folder")
    for key in SPLIT_ARRAYS if n_train is not None else ():
        idx = split[key]
        if idx.size and (idx.min() < 0 or idx.max() >= n_train):
            raise DataError(f"{name}: {key} indices run to {int(idx.max())}, but this training set has {n_train} "
                            "images: the split belongs to another dataset or data limit")
    forget, retain, train = split["forget"], split["retain"], split["train"]
    if np.intersect1d(forget, retain).size or not np.array_equal(np.union1d(forget, retain), np.unique(train)):
        raise DataError(f"{name}: forget and retain must be disjoint and together equal the training indices")
    if np.intersect1d(train, split["val"]).size:
        raise DataError(f"{name}: train and val indices overlap")


def load_split(path: str | Path) -> dict:
    """Read a split written by :func:`save_split`: index arrays (int64), integer seeds (int), ``description`` (str)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            split = {k: (str(z[k]) if z[k].dtype.kind == "U" else int(z[k]) if z[k].ndim == 0 else z[k])
                     for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read split file {str(path)!r} ({type(exc).__name__}: {exc}); expected the npz "
                        "written by save_split") from None
    missing = [k for k in (*SPLIT_ARRAYS, "seed", "description") if k not in split]
    if missing:
        raise DataError(f"split file {str(path)!r} lacks {', '.join(missing)}; expected the npz written by save_split")
    if "indices_sha256" in split and split["indices_sha256"] != indices_digest(split):
        raise DataError(f"split file {str(path)!r} is corrupt (its indices do not match their checksum); recreate it")
    return split
