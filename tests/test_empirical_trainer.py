"""Trainer, pretrain/retrain commands, checkpoints and their bad inputs, on a generated CIFAR-format fixture."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from empirical.__main__ import main
from empirical.config import TrainConfig, make_config
from empirical.trainer import CHECKPOINT, TrainingDiverged, train
from simulations.config import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_fixture(folder: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A learnable fake ``cifar-10-batches-py``: each class has its own colour, plus noise."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    colours = rng.integers(0, 256, size=(10, 3))

    def images(count):
        labels = np.repeat(np.arange(10), count)
        base = colours[labels][:, :, None, None] * np.ones((1, 1, 32, 32))
        x = np.clip(base + rng.normal(0, 40, size=base.shape), 0, 255).astype(np.uint8)
        order = rng.permutation(len(labels))
        return x[order].reshape(len(labels), 3072), labels[order].tolist()

    x, y = images(per_class * 5)
    for b in range(5):
        sl = slice(b * len(y) // 5, (b + 1) * len(y) // 5)
        with open(root / f"data_batch_{b + 1}", "wb") as fh:
            pickle.dump({b"data": x[sl], b"labels": y[sl]}, fh)
    tx, ty = images(per_class)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": tx, b"labels": ty}, fh)
    with open(root / "batches.meta", "wb") as fh:
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        pickle.dump({b"label_names": names}, fh)
    return root


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> str:
    return str(write_fixture(tmp_path_factory.mktemp("cifar")))


def tiny(root: str, **kw) -> TrainConfig:
    base = dict(data_root=root, width=8, epochs=3, batch_size=60, lr=0.05, forget_size=30, device="cpu",
                bf16=False, channels_last=False, warmup_epochs=0.5)
    return TrainConfig(**{**base, **kw})


def test_training_cuts_the_loss_and_writes_the_record(fixture_root, tmp_path):
    rec = train(tiny(fixture_root, epochs=4), tmp_path / "run", progress=False)
    assert rec["train_loss"][-1] < rec["train_loss"][0]
    assert rec["test_acc"] > 0.3  # 10 classes: chance is 0.1
    saved = json.loads((tmp_path / "run" / "record.json").read_text())
    for key in ("config", "seed", "device", "epochs", "epoch_seconds", "train_acc", "val_acc", "test_acc",
                "checkpoint"):
        assert key in saved
    assert len(saved["epoch_seconds"]) == 4 and Path(saved["checkpoint"]).exists()
    split = np.load(tmp_path / "run" / "split.npz")
    assert set(split["forget"]).isdisjoint(split["retain"])


@pytest.mark.parametrize("optimizer", ["sam", "asam"])
def test_sam_training_runs(fixture_root, tmp_path, optimizer):
    rec = train(tiny(fixture_root, optimizer=optimizer, epochs=2), tmp_path / optimizer, progress=False)
    # 2.31 -> 1.82 (SAM) and 2.38 -> 1.69 (ASAM) on this fixture: a step that does not descend fails
    assert np.isfinite(rec["train_loss"]).all() and rec["train_loss"][-1] < rec["train_loss"][0] - 0.25


def test_resume_equals_uninterrupted(fixture_root, tmp_path):
    cfg = tiny(fixture_root, optimizer="sam", epochs=3)
    train(cfg, tmp_path / "whole", progress=False)
    assert train(cfg, tmp_path / "parts", progress=False, max_epochs=1) == {"stopped_at_epoch": 1}
    train(cfg, tmp_path / "parts", progress=False)
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "parts" / CHECKPOINT, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_retrain_trains_on_the_retain_set_only(fixture_root, tmp_path, monkeypatch):
    """Spy on the training passes (the shuffled ones; evaluation does not shuffle): retraining passes over R, once
    an epoch, and never over F; pretraining over the whole training split R ∪ F."""
    from empirical.augment import DeviceData

    seen = []
    original = DeviceData.batches

    def spy(self, indices, batch_size, shuffle=False, **kw):
        if shuffle:
            seen.append(np.sort(indices.cpu().numpy()))
        return original(self, indices, batch_size, shuffle=shuffle, **kw)

    monkeypatch.setattr(DeviceData, "batches", spy)
    rec = train(tiny(fixture_root, epochs=2), tmp_path / "rt", stage="retrain", progress=False)
    split = np.load(tmp_path / "rt" / "split.npz")
    assert rec["stage"] == "retrain" and len(seen) == 2 and len(split["forget"]) == 30
    for idx in seen:
        assert np.array_equal(idx, np.sort(split["retain"])) and not np.isin(split["forget"], idx).any()
    seen.clear()
    train(tiny(fixture_root, epochs=1), tmp_path / "pre", progress=False)
    assert len(seen) == 1 and np.array_equal(seen[0], np.sort(split["train"]))


def test_command_line_smoke_preset_on_the_fixture(fixture_root, tmp_path, capsys):
    code = main(["pretrain", "--preset", "smoke", "--set", "epochs=1", "--set", "forget_size=20", "--data-root",
                 fixture_root, "--out", str(tmp_path / "cli")])
    assert code == 0 and (tmp_path / "cli" / "record.json").exists()
    assert "test_acc" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED / "cifar10-jpg.tar.xz").exists(), reason="shared CIFAR-10 JPEG archive not present")
def test_smoke_preset_on_the_real_jpeg_archive(tmp_path):
    rec = train(make_config("smoke", {"epochs": 1}), tmp_path / "jpeg", progress=False)
    assert rec["data_source"] and 0 <= rec["test_acc"] <= 1


# ---------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_clear_error(fixture_root, tmp_path, capsys):
    out = str(tmp_path / "bad")
    assert main(["pretrain", "--preset", "nope", "--out", out]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["pretrain", "--set", "arch=resnet7", "--data-root", fixture_root, "--out", out]) == 2
    assert "resnet7" in capsys.readouterr().err
    assert main(["pretrain", "--set", "bogus=1", "--out", out]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert main(["pretrain", "--data-root", str(tmp_path / "missing"), "--out", out]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main(["pretrain", "--set", "batch_size=100000", "--data-root", fixture_root, "--out", out]) == 2
    assert "batch_size" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["pretrain", "--set", "device=cuda", "--data-root", fixture_root, "--out", out]) == 2
        assert "CUDA" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        TrainConfig(lr=-1.0)


def test_corrupt_and_mismatched_checkpoints_are_refused(fixture_root, tmp_path):
    cfg = tiny(fixture_root, epochs=1)
    train(cfg, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="another run"):
        train(cfg.replace(lr=0.01), tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt"):
        train(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / CHECKPOINT).read_bytes() == b"not a checkpoint"  # nothing overwritten


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(fixture_root, tmp_path):
    cfg = tiny(fixture_root, epochs=3)
    train(cfg, tmp_path / "nan", progress=False, max_epochs=1)
    good = (tmp_path / "nan" / CHECKPOINT).read_bytes()
    # resume the same run but poison the weights so the second epoch's loss is NaN
    state = torch.load(tmp_path / "nan" / CHECKPOINT, weights_only=True)
    for v in state["model"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
            break
    torch.save(state, tmp_path / "nan" / CHECKPOINT)
    poisoned = (tmp_path / "nan" / CHECKPOINT).read_bytes()
    with pytest.raises(TrainingDiverged, match="step"):
        train(cfg, tmp_path / "nan", progress=False)
    assert (tmp_path / "nan" / CHECKPOINT).read_bytes() == poisoned != good  # the last checkpoint stays as it was


def test_checksummed_download_from_a_local_url(tmp_path):
    import hashlib
    import tarfile

    from empirical.data import DataError, load_cifar
    from empirical.download import download_cifar

    folder = write_fixture(tmp_path / "src", per_class=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="checksum"):
        download_cifar("cifar10", tmp_path / "bad", url=archive.as_uri(), md5="0" * 32)
    assert not (tmp_path / "bad" / "cifar-10-batches-py").exists()
    assert [p.name for p in (tmp_path / "bad").iterdir()] == []  # nothing half-written left behind
    got = download_cifar("cifar10", tmp_path / "good", url=archive.as_uri(), md5=md5)
    assert got == tmp_path / "good" / "cifar-10-batches-py"
    assert load_cifar("cifar10", tmp_path / "good").train_x.shape == (100, 32, 32, 3)


def test_gpu_check_script_isolates_failures_and_keeps_partial_results(fixture_root, tmp_path, capsys):
    """Each stage on its own: the generated fixture has no C-scores, so the forget sets fail — recorded, with the
    pretrained models' results kept; the full run on real data is tests/test_empirical_gpu_check.py."""
    from empirical.gpu_check import main as gpu_check

    out = tmp_path / "check"
    base = ["--smoke", "--data-root", fixture_root, "--bench-steps", "0", "--epochs", "1", "--scratch",
            str(tmp_path / "scratch"), "--out", str(out)]
    assert gpu_check(base) == 1
    result = json.loads((out / "gpu_check.json").read_text())
    assert set(result["runs"]) == {"pretrain_sgd", "pretrain_sam"} and set(result["errors"]) == {"splits"}
    assert "C-score" in result["errors"]["splits"] and 0 <= result["runs"]["pretrain_sam"]["test_acc"] <= 1
    assert result["runs"]["pretrain_sam"]["step_mode"] == "eager" and "precision" in result["stage_seconds"]
    assert "FAILED" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json"]  # checkpoints stay in the scratch folder
    if not torch.cuda.is_available():  # graphs forced on a CPU: each run fails on its own, the report still comes
        assert gpu_check(base[:-3] + [str(tmp_path / "s2"), "--out", str(tmp_path / "forced"), "--graphs", "on"]) == 1
        result = json.loads((tmp_path / "forced" / "gpu_check.json").read_text())
        assert {"pretrain_sgd", "pretrain_sam"} <= set(result["errors"]) and not result["runs"]
        assert all("needs a CUDA device" in result["errors"][k] for k in ("pretrain_sgd", "pretrain_sam"))
        assert "protocol" in result["skipped"]


def test_memorization_forget_set_reaches_the_run_and_its_split_file(fixture_root, tmp_path, capsys):
    from empirical.data import load_cifar, load_split

    labels = load_cifar("cifar10", fixture_root).train_y
    scores = np.random.default_rng(3).random(len(labels))
    np.savez(tmp_path / "mem.npz", scores=scores, labels=labels)
    code = main(["pretrain", "--preset", "smoke", "--set", "epochs=1", "--set", "forget_size=25", "--set",
                 "forget_kind=memorization", "--set", "forget_level=low", "--set",
                 f"memorization_scores={tmp_path / 'mem.npz'}", "--data-root", fixture_root, "--out",
                 str(tmp_path / "mem")])
    assert code == 0, capsys.readouterr().err
    split = load_split(tmp_path / "mem" / "split.npz")
    train = split["train"]
    assert np.array_equal(split["forget"], np.sort(train[np.argsort(scores[train], kind="stable")[:25]]))
    assert np.array_equal(split["forget_scores"], scores[split["forget"]])
    assert "low-memorization by memorization scores from" in split["description"]
    assert main(["pretrain", "--set", "forget_kind=memorization", "--set", "forget_level=top", "--data-root",
                 fixture_root, "--out", str(tmp_path / "bad")]) == 2
    assert "forget_level" in capsys.readouterr().err


def test_a_later_stage_reuses_the_split_file_exactly(fixture_root, tmp_path, capsys):
    from empirical.data import load_split, save_split

    first = train(tiny(fixture_root, epochs=1), tmp_path / "pre", progress=False)
    source = load_split(first["split"])
    # another forget seed and size: ignored, the indices come from the file
    cfg = tiny(fixture_root, epochs=1, forget_seed=9, forget_size=11, split_file=first["split"])
    rec = train(cfg, tmp_path / "re", stage="retrain", progress=False)
    again = load_split(rec["split"])
    for key in ("train", "val", "forget", "retain"):
        assert np.array_equal(again[key], source[key]), key
    assert again["seed"] == source["seed"] and f"[from {first['split']}]" in again["description"]
    # a split of another dataset size, a broken split, a missing file: one clear error each, nothing written
    n = len(source["train"]) + len(source["val"])
    save_split(tmp_path / "big.npz", train=np.arange(n + 5), val=np.zeros(0), forget=np.arange(3),
               retain=np.arange(3, n + 5), seed=0)
    for path, match in ((tmp_path / "big.npz", "another dataset"), (tmp_path / "none.npz", "cannot read")):
        with pytest.raises(ConfigError, match=match):
            train(cfg.replace(split_file=str(path)), tmp_path / "bad", stage="retrain", progress=False)
    np.savez(tmp_path / "overlap.npz", description="x", seed=0, train=source["train"], val=source["train"][:2],
             forget=source["forget"], retain=source["retain"])
    with pytest.raises(ConfigError, match="overlap"):
        train(cfg.replace(split_file=str(tmp_path / "overlap.npz")), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "split.npz").exists()
