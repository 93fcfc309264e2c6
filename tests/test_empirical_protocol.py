"""The whole empirical protocol on the generated fixture: layout, forget sets, summary, resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_empirical_trainer import fixture_root  # noqa: F401 - the shared generated CIFAR fixture

from empirical import unlearn as unlearn_module
from empirical.__main__ import main
from empirical.data import load_cifar, load_split
from empirical.protocol import run_protocol
from simulations.config import ConfigError


@pytest.fixture()
def settings(fixture_root, tmp_path):  # noqa: F811
    labels = load_cifar("cifar10", fixture_root).train_y
    scores = np.random.default_rng(0).random(len(labels))
    np.savez(tmp_path / "mem.npz", scores=scores, labels=labels)
    train = dict(data_root=fixture_root, width=8, epochs=1, batch_size=60, lr=0.05, forget_size=30, device="cpu",
                 bf16=False, channels_last=False, memorization_scores=str(tmp_path / "mem.npz"))
    unlearn = dict(epochs=1, batch_size=64, lr=0.02, bf16=False, channels_last=False)
    return train, unlearn, scores


def test_protocol_runs_every_combination_and_resumes(settings, tmp_path, monkeypatch):
    train, unlearn, scores = settings
    out = tmp_path / "protocol"
    summary = run_protocol(out, "smoke", "sgd", "high,low", "neggrad", "sgd,sam", train, unlearn, progress=False)
    assert len(summary["rows"]) == 4 and len(summary["averages"]) == 2
    for row in summary["rows"]:
        folder = out / "unlearn" / f"{row['pretrain']}_{row['forget']}_{row['method']}_{row['optimizer']}"
        assert (folder / "metrics.json").is_file() and 0 <= row["tow"] <= 1
    avg = [a for a in summary["averages"] if a["optimizer"] == "sam"][0]
    expected = np.mean([r["tow"] for r in summary["rows"] if r["optimizer"] == "sam"])
    assert avg["avg_tow"] == pytest.approx(expected) and avg["forget_sets"] == ["high", "low"]
    base = load_split(out / "pretrain_sgd" / "split.npz")
    high, low = load_split(out / "splits" / "high.npz"), load_split(out / "splits" / "low.npz")
    for s in (high, low):
        assert np.array_equal(s["train"], base["train"]) and np.array_equal(s["val"], base["val"])
        assert np.array_equal(np.union1d(s["forget"], s["retain"]), base["train"]) and len(s["forget"]) == 30
    assert scores[high["forget"]].min() > scores[low["forget"]].max()
    # each unlearning run and its retrain used the forget set of their level
    rec = json.loads((out / "unlearn" / "sgd_low_neggrad_sam" / "record.json").read_text())
    assert rec["forget_id"] == unlearn_module.forget_id(low["forget"])
    assert np.array_equal(load_split(out / "retrain_low" / "split.npz")["forget"], low["forget"])
    assert (out / "summary.csv").read_text().count("\n") == 5
    # rerun: nothing is trained again; a new method runs only its own runs
    calls = []
    original = unlearn_module.unlearn
    monkeypatch.setattr(unlearn_module, "unlearn", lambda cfg, *a, **k: calls.append(cfg.method) or original(
        cfg, *a, **k))
    again = run_protocol(out, "smoke", "sgd", "high,low", "neggrad", "sgd,sam", train, unlearn, progress=False)
    assert calls == [] and again["rows"] == summary["rows"]
    run_protocol(out, "smoke", "sgd", "high,low", "neggrad,ft", "sgd", train, unlearn, progress=False)
    assert calls == ["ft", "ft"]


def test_protocol_bad_input_fails_before_training(settings, tmp_path, capsys):
    train, unlearn, _ = settings
    for kwargs, match in ((dict(methods="neggrad,fisher"), "fisher"), (dict(forget="top"), "top"),
                          (dict(unlearn_overrides={"method": "ga"}), "chosen by the protocol"),
                          (dict(unlearn_overrides={"alpha": 3.0}), "alpha")):
        args = dict(train_overrides=train, unlearn_overrides=unlearn, progress=False) | kwargs
        with pytest.raises(ConfigError, match=match):
            run_protocol(tmp_path / "bad", "smoke", **args)
        assert not (tmp_path / "bad").exists()
    assert main(["protocol", "--methods", "nope", "--out", str(tmp_path / "cli")]) == 2
    assert "nope" in capsys.readouterr().err
