"""CIFAR data layer (docs/protocol.md#data-and-splits): loaders on fake pickles and the real shared data, seeded splits,
batched crop/flip and device batches, bad-input errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical import data as data_module
from empirical.augment import DeviceData, random_crop_flip
from empirical.data import (
    CIFAR10_CLASSES,
    DataError,
    forget_retain_split,
    load_cifar,
    load_split,
    memorization_scores,
    save_split,
    split_train_val,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _rows(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(folder: Path, per_batch: int = 2, seed: int = 0) -> tuple[Path, np.ndarray, list, np.ndarray, list]:
    """A tiny ``cifar-10-batches-py``: random rows (N, 3072), labels as python lists, as the real files store them."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rows, labels = _rows(rng, 5 * per_batch), rng.integers(0, 10, 5 * per_batch).tolist()
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        _dump(root / f"data_batch_{b + 1}", {b"batch_label": b"x", b"data": rows[sl], b"labels": labels[sl]})
    test_rows, test_labels = _rows(rng, 3), [9, 0, 4]
    _dump(root / "test_batch", {b"data": test_rows, b"labels": test_labels})
    _dump(root / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    return root, rows, labels, test_rows, test_labels


def test_cifar10_pickles_load_in_hwc_layout(tmp_path):
    root, rows, labels, test_rows, test_labels = write_cifar10(tmp_path)
    for where in (root, tmp_path):  # the folder itself or the folder holding it
        d = load_cifar("cifar10", where)
        assert d.train_x.shape == (10, 32, 32, 3) and d.train_x.dtype == np.uint8
        assert d.test_x.shape == (3, 32, 32, 3)
        assert d.train_y.dtype == np.int64 and d.train_y.tolist() == labels and d.test_y.tolist() == test_labels
        # row layout: 1024 red, 1024 green, 1024 blue values, each row-major over (y, x)
        i, y, x = 7, 5, 30
        assert [d.train_x[i, y, x, c] for c in range(3)] == [rows[i, c * 1024 + y * 32 + x] for c in range(3)]
        assert np.array_equal(d.test_x[2, :, :, 1], test_rows[2, 1024:2048].reshape(32, 32))
        assert d.classes == CIFAR10_CLASSES and d.train_index.tolist() == list(range(10))


def test_default_root_comes_from_the_environment(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    monkeypatch.setenv("SAM_UNLEARNING_DATA", str(tmp_path))
    assert len(load_cifar("cifar10").train_y) == 10


def test_cifar100_pickles_use_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rows = _rows(rng, 4)
    _dump(root / "train", {b"data": rows, b"fine_labels": [3, 99, 0, 42], b"coarse_labels": [0, 1, 2, 3]})
    _dump(root / "test", {b"data": _rows(rng, 2), b"fine_labels": [5, 6], b"coarse_labels": [0, 0]})
    names = [f"class{i}".encode() for i in range(100)]
    _dump(root / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    d = load_cifar("cifar100", tmp_path)
    assert d.name == "cifar100" and d.train_y.tolist() == [3, 99, 0, 42] and d.test_y.tolist() == [5, 6]
    assert np.array_equal(d.train_x[1, :, :, 2], rows[1, 2048:].reshape(32, 32))
    assert d.classes[42] == "class42" and len(d.classes) == 100


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"shared data {path} absent (the real CIFAR files live in ../shared/data beside the repo)")
    return path


def test_jpeg_slice_restores_original_order_and_is_cached(tmp_path, monkeypatch):
    archive = _shared("cifar10-jpg.tar.xz")
    labels = np.load(_shared("cifar10-cscores.npz"))["labels"]
    k = 3
    d = load_cifar("cifar10", archive, cache_dir=tmp_path, limit_per_class=k)
    assert d.train_x.shape == (10 * k, 32, 32, 3) and d.test_x.shape == (10 * k, 32, 32, 3)
    assert np.array_equal(labels[d.train_index], d.train_y)  # labels at the original positions match
    assert np.all(np.diff(d.train_index) > 0)  # back in original order
    for c in range(10):  # the k-th file of class c is the k-th training sample of class c
        assert np.array_equal(d.train_index[d.train_y == c], np.flatnonzero(labels == c)[:k])
    assert 40 < d.train_x.mean() < 200 and d.train_x.std() > 20  # real pictures, not blank decodes
    assert "original training order restored" in d.source and "JPEG" in d.source

    def no_decode(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "_decode_jpeg_archive", no_decode)
    again = load_cifar("cifar10", SHARED, cache_dir=tmp_path, limit_per_class=k)
    for field in ("train_x", "train_y", "test_x", "test_y", "train_index"):
        assert np.array_equal(getattr(again, field), getattr(d, field))
    assert again.source == d.source


def test_cifar100_extremes_file_loads_with_a_held_out_test_set():
    path = _shared("cifar100-cscore-extremes.npz")
    d = load_cifar("cifar100", path)
    assert len(d.train_x) + len(d.test_x) == 6400 and d.train_x.shape[1:] == (32, 32, 3)
    assert np.bincount(d.test_y, minlength=100).tolist() == [13] * 100  # 20% of 64 per class
    assert "test set" in d.source and "20%" in d.source and len(d.classes) == 100
    if (SHARED / "cifar100-cscores.npz").is_file():
        labels = np.load(SHARED / "cifar100-cscores.npz")["labels"]
        assert np.array_equal(labels[d.train_index], d.train_y)


def test_split_train_val_is_per_class_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [40, 50, 60, 70, 80])[np.random.default_rng(0).permutation(300)]
    train, val = split_train_val(labels, seed=3)
    assert np.bincount(labels[val]).tolist() == [4, 5, 6, 7, 8]
    assert not np.intersect1d(train, val).size and np.array_equal(np.union1d(train, val), np.arange(300))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0) and train.dtype == np.int64
    assert np.array_equal(split_train_val(labels, seed=3)[1], val)
    assert not np.array_equal(split_train_val(labels, seed=4)[1], val)


def test_forget_retain_random_and_class():
    labels = np.arange(200) % 4
    train, _ = split_train_val(labels, seed=0)
    forget, retain = forget_retain_split(train, labels, "random", size=30, seed=1)
    assert len(forget) == 30 and np.isin(forget, train).all()
    assert not np.intersect1d(forget, retain).size and np.array_equal(np.union1d(forget, retain), train)
    assert np.array_equal(forget_retain_split(train, labels, "random", size=30, seed=1)[0], forget)
    assert not np.array_equal(forget_retain_split(train, labels, "random", size=30, seed=2)[0], forget)
    forget, retain = forget_retain_split(train, labels, "class", cls=2)
    assert np.array_equal(forget, train[labels[train] == 2]) and (labels[retain] != 2).all()
    with pytest.raises(DataError, match="forget size"):
        forget_retain_split(train, labels, "random", size=len(train) + 1)
    with pytest.raises(DataError, match="cls=4"):
        forget_retain_split(train, labels, "class", cls=4)
    with pytest.raises(DataError, match="kind"):
        forget_retain_split(train, labels, "memorisation")


def test_forget_sets_by_memorization_level():
    labels = np.arange(40) % 4
    scores = np.linspace(0.0, 1.0, 40)[np.random.default_rng(0).permutation(40)]
    scores[[3, 17, 21]] = 0.5  # ties: broken by index
    train = np.setdiff1d(np.arange(40), [0, 5, 9, 12])  # val removed: never in F
    order = train[np.argsort(scores[train], kind="stable")]
    high, retain = forget_retain_split(train, labels, "memorization", size=6, scores=scores, level="high")
    assert np.array_equal(high, np.sort(train[np.argsort(-scores[train], kind="stable")][:6]))
    assert set(high) == set(order[-6:]) and np.array_equal(np.union1d(high, retain), train)
    low, _ = forget_retain_split(train, labels, "memorization", size=6, scores=scores, level="low")
    assert set(low) == set(order[:6]) and scores[low].max() < scores[high].min()
    mid, _ = forget_retain_split(train, labels, "memorization", size=2, scores=scores, level="mid")
    assert mid.tolist() == [3, 17]  # three scores of exactly 0.5: the two lowest indices
    mid5, _ = forget_retain_split(train, labels, "memorization", size=5, scores=scores, level="mid")
    closest = np.sort(np.abs(scores[train] - 0.5))[:5]
    assert np.allclose(np.sort(np.abs(scores[mid5] - 0.5)), closest)
    for bad, match in ((dict(scores=None), "needs scores"), (dict(scores=scores[:-1]), "shape"),
                       (dict(scores=scores, level="top"), "level"), (dict(scores=scores, size=0), "forget size")):
        kw = {"size": 6, **bad}
        with pytest.raises(DataError, match=match):
            forget_retain_split(train, labels, "memorization", **kw)
    nan = scores.copy()
    nan[train[0]] = np.nan
    with pytest.raises(DataError, match="NaN"):
        forget_retain_split(train, labels, "memorization", size=6, scores=nan)


def test_memorization_scores_from_a_user_file_are_aligned_and_checked(tmp_path):
    write_cifar10(tmp_path, per_batch=4)
    d = load_cifar("cifar10", tmp_path)
    raw = np.random.default_rng(1).random(20)
    np.save(tmp_path / "mem.npy", raw)
    scores, what = memorization_scores(d, tmp_path / "mem.npy")
    assert np.array_equal(scores, raw) and "mem.npy" in what  # pickles are in the original order
    np.savez(tmp_path / "mem.npz", scores=raw, labels=d.train_y)
    assert np.array_equal(memorization_scores(d, tmp_path / "mem.npz")[0], raw)
    np.savez(tmp_path / "other.npz", scores=raw, labels=(d.train_y + 1) % 10)
    with pytest.raises(DataError, match="do not match"):
        memorization_scores(d, tmp_path / "other.npz")
    np.save(tmp_path / "short.npy", raw[:5])
    with pytest.raises(DataError, match="one per image"):
        memorization_scores(d, tmp_path / "short.npy")
    with pytest.raises(DataError, match="cannot read"):
        memorization_scores(d, tmp_path / "missing.npy")
    with pytest.raises(DataError, match="C-score file"):
        memorization_scores(d, None, root=tmp_path)  # no C-score file beside these pickles
    # a reordered subset (as the JPEG archive gives): scores follow train_index, not the row order
    sub = data_module.CifarArrays("cifar10", d.train_x[[4, 1]], d.train_y[[4, 1]], d.test_x, d.test_y, d.classes,
                                  "subset", np.array([4, 1]))
    assert np.array_equal(memorization_scores(sub, tmp_path / "mem.npy")[0], raw[[4, 1]])
    unknown = data_module.CifarArrays("cifar10", d.train_x, d.train_y, d.test_x, d.test_y, d.classes, "jpeg",
                                      np.full(20, -1))
    with pytest.raises(DataError, match="training order"):
        memorization_scores(unknown, tmp_path / "mem.npy")


def test_cscore_proxy_on_the_real_jpeg_slice(tmp_path):
    archive = _shared("cifar10-jpg.tar.xz")
    cscores = np.load(_shared("cifar10-cscores.npz"))["scores"]
    d = load_cifar("cifar10", archive, cache_dir=tmp_path, limit_per_class=20)
    scores, what = memorization_scores(d, root=archive)
    assert np.allclose(scores, 1 - cscores[d.train_index]) and "proxy" in what and "C-score" in what
    train, _ = split_train_val(d.train_y, seed=2)
    high, _ = forget_retain_split(train, d.train_y, "memorization", size=15, scores=scores, level="high")
    low, _ = forget_retain_split(train, d.train_y, "memorization", size=15, scores=scores, level="low")
    # high memorization = the lowest C-scores of the training split
    c = cscores[d.train_index]
    assert c[high].max() <= np.sort(c[train])[14] and c[low].min() >= np.sort(c[train])[-15]


def test_split_file_round_trip(tmp_path):
    labels = np.arange(100) % 10
    train, val = split_train_val(labels, seed=5)
    forget, retain = forget_retain_split(train, labels, size=9, seed=6)
    path = save_split(tmp_path / "sub" / "split.npz", train=train, val=val, forget=forget, retain=retain, seed=5,
                      forget_seed=6, description="toy split")
    back = load_split(path)
    assert load_split(save_split(tmp_path / "f.npz", train=train, val=val, forget=forget, retain=retain, seed=5,
                                 forget_scores=np.linspace(0, 1, 9)))["forget_scores"].tolist() == \
        np.linspace(0, 1, 9).tolist()  # float arrays stay float
    for key, value in (("train", train), ("val", val), ("forget", forget), ("retain", retain)):
        assert np.array_equal(back[key], value) and back[key].dtype == np.int64
    assert back["seed"] == 5 and back["forget_seed"] == 6 and back["description"] == "toy split"
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]  # no temporary file left behind
    with pytest.raises(DataError, match="disjoint"):
        save_split(tmp_path / "bad.npz", train=train, val=val, forget=forget, retain=train, seed=5)
    with pytest.raises(DataError, match="seed"):
        save_split(tmp_path / "bad.npz", train=train, val=val, forget=forget, retain=retain)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="save_split"):
        load_split(tmp_path / "junk.npz")


def _images(b=6, seed=0):
    # values 1..255 only, so padding zeros are recognisable
    return torch.randint(1, 256, (b, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_crop_flip_identity_flip_and_shift():
    x = _images()
    zero, no = torch.zeros(6, 2, dtype=torch.long), torch.zeros(6, dtype=torch.bool)
    assert torch.equal(random_crop_flip(x, shifts=zero, flips=no), x)
    assert torch.equal(random_crop_flip(x, shifts=zero, flips=~no), torch.flip(x, dims=[-1]))
    xf = x.float() / 255
    out = random_crop_flip(xf, shifts=torch.tensor([[2, -3]] * 6), flips=no)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out[:, :, 2:, :29], xf[:, :, :30, 3:])  # content moved down 2, left 3
    assert (out[:, :, :2] == 0).all() and (out[:, :, :, 29:] == 0).all()
    shift = torch.tensor([[0, 2]] * 6)  # crop first, then flip (torchvision's RandomCrop → RandomHorizontalFlip)
    assert torch.equal(random_crop_flip(x, shifts=shift, flips=~no),
                       torch.flip(random_crop_flip(x, shifts=shift, flips=no), dims=[-1]))
    with pytest.raises(ValueError, match="shifts"):
        random_crop_flip(x, shifts=torch.full((6, 2), 5), flips=no)


def test_random_crop_flip_draws_valid_transforms_deterministically():
    x = _images(16)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, random_crop_flip(x, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(out, random_crop_flip(x, generator=torch.Generator().manual_seed(1)))
    seen = set()
    for i in range(16):  # each output is exactly one allowed (shift, flip) of its input
        matches = [(dy, dx, f) for dy in range(-4, 5) for dx in range(-4, 5) for f in (False, True)
                   if torch.equal(out[i], random_crop_flip(x[i:i + 1], shifts=torch.tensor([[dy, dx]]),
                                                           flips=torch.tensor([f]))[0])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 8  # random, not one fixed transform


def test_device_batches_cover_each_index_once_and_are_seeded():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 50)
    data = DeviceData(images, labels)
    idx = np.arange(3, 46)  # 43 samples

    def epoch(seed, **kw):
        return list(data.batches(idx, 10, shuffle=True, generator=torch.Generator().manual_seed(seed), **kw))

    batches = epoch(0)
    assert [len(y) for _, y in batches] == [10, 10, 10, 10, 3]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert x.shape == (43, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    order = [np.flatnonzero((images.transpose(0, 3, 1, 2) == np.round(xi.numpy() * 255)).all(axis=(1, 2, 3)))[0]
             for xi in x]  # which stored image each row is: checks the HWC -> CHW copy too
    assert sorted(order) == idx.tolist() and order != idx.tolist()
    assert y.tolist() == labels[order].tolist()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(0)))
    assert not torch.equal(batches[0][0], epoch(1)[0][0])
    assert [len(y) for _, y in epoch(0, drop_last=True)] == [10] * 4
    augmented = epoch(0, augment=True)
    assert augmented[0][0].shape == (10, 3, 32, 32) and not torch.equal(augmented[0][0], batches[0][0])
    plain = list(data.batches(None, 64))
    assert len(plain) == 1 and torch.equal(plain[0][1], torch.as_tensor(labels))


def test_bad_inputs_name_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar("cifar10", tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data_batch_1.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar("cifar10", tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load_cifar("cifar100", tmp_path)
    root, *_ = write_cifar10(tmp_path / "trunc")
    blob = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="data_batch_3.*cifar-10-batches-py"):
        load_cifar("cifar10", root)
    (tmp_path / "cifar10-jpg.tar.xz").write_bytes(b"not xz")
    with pytest.raises(DataError, match="cifar10-jpg.tar.xz.*train/<class>"):
        load_cifar("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="cifar10"):
        load_cifar("imagenet", tmp_path)
