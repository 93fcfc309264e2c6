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
        metrics = json.loads((folder / "metrics.json").read_text())
        assert row["tow"] == metrics["tow"] and row["tow_mia"] == metrics["tow_mia"] and 0 <= row["tow"] < 1
        acc = metrics["unlearned"]["accuracy"]
        assert (row["retain"], row["forget_acc"], row["test"]) == (acc["retain"], acc["forget"], acc["test"])
        assert metrics["retrain"].endswith(f"retrain_{row['forget']}")  # scored against its level's retrain
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


def test_protocol_stages_as_job_arrays_give_the_in_process_summary(settings, tmp_path):
    """The protocol as submitit job arrays (empirical/cluster.py): ``debug`` gives the in-process protocol's rows;
    ``local`` (subprocesses) then redoes a removed unlearning run and gives the same rows again."""
    import shutil

    from empirical.cluster import run_on_cluster, waves
    from empirical.protocol import make_plan

    train, unlearn, _ = settings
    reference = run_protocol(tmp_path / "inprocess", "smoke", "sgd", "high,low", "neggrad", "sam", train, unlearn,
                             progress=False)
    plan = make_plan(tmp_path / "debug", "smoke", "sgd", "high,low", "neggrad", "sam", train, unlearn,
                     progress=False)
    assert [len(w) for w in waves(plan)] == [1, 1, 2 + 2, 2, 1]
    with plan.folder():
        summary = run_on_cluster(plan, "debug", tmp_path / "submitit", workers=2)
    assert summary["rows"] == reference["rows"] and summary["missing"] == []
    shutil.rmtree(tmp_path / "debug" / "unlearn" / "sgd_low_neggrad_sam")
    (tmp_path / "debug" / "summary.json").unlink()
    with plan.folder():
        summary = run_on_cluster(plan, "local", tmp_path / "submitit-local", workers=2, threads=1)
    assert summary["rows"] == reference["rows"]
    assert (tmp_path / "debug" / "unlearn" / "sgd_low_neggrad_sam" / "metrics.json").is_file()
    with pytest.raises(ConfigError, match="--cluster"):
        run_on_cluster(plan, "kubernetes", tmp_path / "x")


def test_report_writes_the_paper_shaped_table_and_figures(settings, tmp_path, capsys):
    train, unlearn, _ = settings
    run_protocol(tmp_path / "p", "smoke", "sgd,sam", "high,low", "neggrad", "sgd,sam", train, unlearn,
                 progress=False)
    assert main(["report", "--protocol", str(tmp_path / "p"), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "| SGD | neggrad | SAM |" in md and "ToW F_low" in md and "AVG E_Var (authors' units)" in md
    report = json.loads((tmp_path / "r" / "summary.json").read_text())
    rows = [r for r in report["rows"] if (r["pretrain"], r["optimizer"]) == ("sam", "sgd")]
    avg = 100 * np.mean([r["tow"] for r in rows])
    assert "| SAM | neggrad | SGD | " in md and f"{avg:.2f}" in md  # AVG ToW computed from the rows
    assert {c["verdict"].split(" ")[0] for c in report["claims"]} <= {"supports", "contradicts", "cannot", "not"}
    underfit = any(m["test_acc"] < 75 for n, m in report["models"].items() if n.startswith("pretrain_"))
    for c in report["claims"]:  # the claims about pretraining optimizers are gated on the models' accuracy
        about_pretraining = "pretrain" in c["claim"].lower()
        assert c["verdict"].startswith("not measured") == (underfit and about_pretraining), c
    assert (tmp_path / "r" / "empirical_avg_tow.png").is_file() and (tmp_path / "r" / "summary.csv").is_file()
    from figures.__main__ import main as figures_main

    assert figures_main(["--only", "empirical", "--protocol", str(tmp_path / "r"), "--out",
                         str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "empirical_tow_by_forget_set.png").is_file()


def test_report_claims_are_paired_comparisons_that_can_come_out_either_way():
    """Each claim compares runs equal in every other factor; its verdict follows the sign of the bootstrap interval
    of the paired mean: all pairs +1 → supports, all −1 → contradicts, ±1 alternating → cannot decide."""
    from empirical.report import bootstrap_ci, claims, paired_differences

    def rows(delta):  # SAM-pretrained ToW = SGD-pretrained ToW + delta(cell index), in ToW fractions
        out, i = [], 0
        for forget in ("low", "high"):
            for method in ("neggrad", "sharp_minmax"):
                for opt in ("sgd", "sam"):
                    base = {"forget": forget, "method": method, "optimizer": opt, "tow_mia": 0.5, "mia": 0.5,
                            "e_var": 1.0}
                    out.append({**base, "pretrain": "sgd", "tow": 0.80})
                    out.append({**base, "pretrain": "sam", "tow": 0.80 + delta(i) / 100})
                    i += 1
        return out

    up = rows(lambda i: 1.0)
    d = paired_differences(up, "tow", "pretrain", "sam", "sgd")
    np.testing.assert_allclose(d, 0.01)  # 8 pairs, each matched on forget set, method and unlearning optimizer
    assert len(d) == 8
    first = {c["claim"]: c for c in claims({"rows": up})}
    pre = first["SAM as pretraining optimizer raises ToW"]
    assert pre["verdict"] == "supports" and pre["pairs"] == 8 and abs(pre["difference"] - 1.0) < 1e-9
    down = {c["claim"]: c for c in claims({"rows": rows(lambda i: -1.0)})}
    assert down["SAM as pretraining optimizer raises ToW"]["verdict"] == "contradicts"
    mixed = {c["claim"]: c for c in claims({"rows": rows(lambda i: (-1.0) ** i)})}
    assert mixed["SAM as pretraining optimizer raises ToW"]["verdict"] == "cannot decide"
    # the unlearning optimizer is a different factor: its pairs here are all equal, so it cannot decide either way
    assert first["SAM as unlearning optimizer raises ToW"]["verdict"] == "cannot decide"
    # entanglement: lower E_Var with SAM supports; the sign is the claim's, not the raw difference's
    lower = [dict(r, e_var=0.9) if r["pretrain"] == "sam" else r for r in up]
    lower_claims = {c["claim"]: c for c in claims({"rows": lower})}
    assert lower_claims["lower entanglement (E_Var) with SAM-pretrained models"]["verdict"] == "supports"
    assert np.isnan(bootstrap_ci(np.array([1.0, 2.0]))[0])  # too few pairs: no interval
    # premise: pretraining optimizers compare only when both pretrained models reached the target accuracy
    models = {"pretrain_sgd": {"test_acc": 76.0}, "pretrain_sam": {"test_acc": 73.0}}
    gated = {c["claim"]: c for c in claims({"rows": up, "models": models})}
    assert gated["SAM as pretraining optimizer raises ToW"]["verdict"].startswith("not measured: premise not met (SAM")
    assert gated["SAM as unlearning optimizer raises ToW"]["verdict"] == "cannot decide"  # not a pretraining claim
    models["pretrain_sam"]["test_acc"] = 75.5
    met = {c["claim"]: c for c in claims({"rows": up, "models": models})}
    assert met["SAM as pretraining optimizer raises ToW"]["verdict"] == "supports"
