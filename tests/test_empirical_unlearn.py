"""Unlearning methods (docs/protocol.md#unlearning-methods) on a tiny pretrained model: identities between methods,
masks, records, the command line and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_empirical_trainer import fixture_root, tiny  # noqa: F401 - the shared generated CIFAR fixture

from empirical.__main__ import main
from empirical.augment import DeviceData
from empirical.data import load_split
from empirical.models import build_model
from empirical.trainer import train
from empirical.unlearn import (
    METHODS,
    UnlearnConfig,
    forget_id,
    load_source,
    random_labels,
    saliency_mask,
    unlearn,
)
from simulations.config import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pretrained(fixture_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("pre")
    train(tiny(fixture_root, epochs=2, forget_size=60), out, progress=False)
    return out


def quick(**kw) -> UnlearnConfig:
    base = dict(device="cpu", bf16=False, channels_last=False, batch_size=64, epochs=1, lr=0.02)
    return UnlearnConfig(**{**base, **kw})


def params_of(out) -> dict:
    return torch.load(out / "model.pt", weights_only=True)["model"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_writes_its_record(pretrained, tmp_path, method):
    rec = unlearn(quick(method=method, optimizer="sam" if method == "neggrad" else "sgd"), pretrained,
                  tmp_path / method, progress=False)
    saved = json.loads((tmp_path / method / "record.json").read_text())
    assert saved["method"] == method and saved["epochs"] == 1 and len(saved["loss"]) == 1
    assert set(saved["accuracy"]) == {"retain", "forget", "test", "val"}
    assert all(0 <= v <= 100 for v in saved["accuracy"].values())
    split = load_split(pretrained / "split.npz")
    assert saved["forget_id"] == forget_id(split["forget"]) and saved["forget_size"] == len(split["forget"])
    assert (tmp_path / method / "model.pt").exists() and np.isfinite(rec["loss"]).all()
    assert (tmp_path / method / "mask.pt").exists() == (method in ("salun", "sharp_minmax"))
    before = torch.load(pretrained / "checkpoint.pt", weights_only=True)["model"]
    after = params_of(tmp_path / method)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # something was learned or unlearned
    # the recorded accuracies are those of the saved model on R, F, test and val (percent), the source's those of
    # the pretrained record; only gradient ascent records a negative loss (−CE on F)
    from empirical.trainer import accuracy, load_record

    model, train_cfg, prepared, _ = load_source(pretrained, quick(), CPU)
    model.load_state_dict(after)
    sets = {"retain": (prepared.data, prepared.retain_idx), "forget": (prepared.data, prepared.forget_idx),
            "test": (prepared.test, torch.arange(len(prepared.test))), "val": (prepared.data, prepared.val_idx)}
    for k, (data, idx) in sets.items():
        assert saved["accuracy"][k] == pytest.approx(100 * accuracy(model, data, idx, CPU, train_cfg), abs=1e-9), k
    source = load_record(pretrained)
    assert saved["source_accuracy"] == {k: pytest.approx(100 * source[f"{k}_acc"]) for k in sets}
    assert (saved["loss"][0] < 0) == (method == "ga")


def test_neggrad_with_alpha_one_is_fine_tuning(pretrained, tmp_path):
    # α = 1: the forget term has weight 0; with BN in eval mode for forget passes it changes nothing at all
    a = unlearn(quick(method="neggrad", alpha=1.0, forget_bn="eval", epochs=2), pretrained, tmp_path / "ng",
                progress=False)
    b = unlearn(quick(method="ft", epochs=2), pretrained, tmp_path / "ft", progress=False)
    pa, pb = params_of(tmp_path / "ng"), params_of(tmp_path / "ft")
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    assert a["loss"] == b["loss"]
    # with BN in train mode, the forget batches move the running statistics: no longer the same model
    unlearn(quick(method="neggrad", alpha=1.0, epochs=2), pretrained, tmp_path / "ng_train", progress=False)
    pc = params_of(tmp_path / "ng_train")
    assert any(not torch.equal(pc[k], pb[k]) for k in pc if "running" in k)


def test_scrub_reduces_to_fine_tuning_and_its_max_step_moves_away_from_the_teacher(pretrained, tmp_path):
    unlearn(quick(method="scrub", scrub_msteps=0, scrub_beta=0.0, scrub_gamma=1.0, epochs=2), pretrained,
            tmp_path / "scrub", progress=False)
    unlearn(quick(method="ft", epochs=2), pretrained, tmp_path / "ft", progress=False)
    pa, pb = params_of(tmp_path / "scrub"), params_of(tmp_path / "ft")
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    # one epoch of max-steps only (γ = β = 0 in the min-step: nothing but weight decay there): the student's KL to
    # the teacher on F grows from 0
    rec = unlearn(quick(method="scrub", scrub_msteps=1, scrub_beta=0.0, scrub_gamma=0.0, weight_decay=0.0, lr=0.05),
                  pretrained, tmp_path / "max", progress=False)
    model, _, prepared, _ = load_source(pretrained, quick(), CPU)
    x = next(prepared.data.batches(prepared.forget_idx, 1000))[0]
    with torch.no_grad():
        teacher_probs = torch.softmax(model.eval()(x) / 4, 1)
        model.load_state_dict(params_of(tmp_path / "max"))
        kl = torch.nn.functional.kl_div(torch.log_softmax(model.eval()(x) / 4, 1), teacher_probs,
                                        reduction="batchmean")
    assert float(kl) > 1e-3 and rec["loss"][0] < 0  # the max-step minimises −KL


def test_salun_with_the_full_mask_is_random_labelling(pretrained, tmp_path):
    unlearn(quick(method="salun", mask_fraction=1.0), pretrained, tmp_path / "salun", progress=False)
    unlearn(quick(method="rl"), pretrained, tmp_path / "rl", progress=False)
    pa, pb = params_of(tmp_path / "salun"), params_of(tmp_path / "rl")
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_salun_leaves_unmasked_weights_untouched(pretrained, tmp_path):
    unlearn(quick(method="salun", mask_fraction=0.2, weight_decay=5e-3), pretrained, tmp_path / "s", progress=False)
    masks = torch.load(tmp_path / "s" / "mask.pt", weights_only=True)["masks"]
    before = torch.load(pretrained / "checkpoint.pt", weights_only=True)["model"]
    model = build_model("resnet18", 10, 8, "cifar10")
    names = [n for n, _ in model.named_parameters()]
    after = params_of(tmp_path / "s")
    moved = 0
    for name, mask in zip(names, masks):
        assert torch.equal(after[name][~mask], before[name][~mask]), name  # frozen: no step, no decay
        moved += int((after[name][mask] != before[name][mask]).sum())
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == round(0.2 * total) and moved > 0


def test_sharp_minmax_splits_the_weights_between_its_two_optimizers(pretrained, tmp_path, monkeypatch):
    from empirical import unlearn as module

    seen = []
    original = module._optimizer

    def spy(cfg, model, rho, sign="min"):
        opt = original(cfg, model, rho, sign)
        seen.append((opt, rho, sign))
        return opt

    monkeypatch.setattr(module, "_optimizer", spy)
    unlearn(quick(method="sharp_minmax", optimizer="asam", rho=0.5, forget_rho=1.0, mask_fraction=0.1), pretrained,
            tmp_path / "smm", progress=False)
    (retain_opt, rho_r, sign_r), (forget_opt, rho_f, sign_f) = seen
    assert (rho_r, sign_r, rho_f, sign_f) == (0.5, "min", 1.0, "max")
    assert retain_opt.param_groups[0]["adaptive"] and forget_opt.param_groups[0]["adaptive"]
    masks = torch.load(tmp_path / "smm" / "mask.pt", weights_only=True)["masks"]
    params = [p for g in retain_opt.param_groups for p in g["params"]]
    for p, m in zip(params, masks):
        frozen_r, frozen_f = retain_opt._frozen[p].cpu(), forget_opt._frozen[p].cpu()
        assert torch.equal(frozen_r, m) and torch.equal(frozen_f, ~m)  # W_R = ¬M for the min part, W_F = M


def test_saliency_mask_takes_the_largest_gradients():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4, "cifar10")
    rng = np.random.default_rng(0)
    data = DeviceData(rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 24))
    idx = torch.arange(24)
    model.train()
    masks, grads = saliency_mask(model, data, idx, 0.1, "largest", batch_size=8, device=CPU, bf16=False)
    assert model.training
    g = torch.cat([x.abs().reshape(-1) for x in grads])
    m = torch.cat([x.reshape(-1) for x in masks])
    assert int(m.sum()) == round(0.1 * m.numel()) and g[m].min() >= g[~m].max()
    small, _ = saliency_mask(model, data, idx, 0.1, "smallest", batch_size=8, device=CPU, bf16=False)
    s = torch.cat([x.reshape(-1) for x in small])
    assert g[s].max() <= g[~s].min()
    # G is the summed gradient of −CE over the forget batches, in eval mode
    model.eval()
    ref = torch.autograd.grad(sum(-torch.nn.functional.cross_entropy(model(x), y) for x, y in
                                  data.batches(idx, 8)), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, ref))


def test_random_labels_redraw_only_the_forget_set():
    labels = torch.arange(200) % 10
    idx = torch.arange(0, 200, 4)
    gen = torch.Generator().manual_seed(0)
    a = random_labels(labels, idx, 10, gen)
    rest = torch.ones(200, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(a[rest], labels[rest]) and (a[idx] == labels[idx]).any()  # uniform: the true label may come
    b = random_labels(labels, idx, 10, gen, exclude_true=True)
    assert (b[idx] != labels[idx]).all() and torch.equal(b[rest], labels[rest])
    assert not torch.equal(random_labels(labels, idx, 10, gen), a)  # a fresh draw each epoch


def test_unlearning_command_line_and_bad_input(pretrained, tmp_path, capsys):
    code = main(["unlearn", "--from", str(pretrained), "--method", "ga", "--set", "epochs=1", "--set", "device=cpu",
                 "--set", "bf16=false", "--out", str(tmp_path / "cli")])
    assert code == 0 and "forget" in capsys.readouterr().out
    for argv, match in ((["--method", "fisher"], "method"), (["--set", "mask_fraction=0"], "mask_fraction"),
                        (["--set", "alpha=1.5"], "alpha"), (["--set", "batch_size=100000"], "batch_size")):
        out = tmp_path / "bad"
        assert main(["unlearn", "--from", str(pretrained), "--set", "device=cpu", *argv, "--out", str(out)]) == 2
        assert match in capsys.readouterr().err
        assert not (out / "record.json").exists()
    assert main(["unlearn", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "record.json is missing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not exist"):
        load_source(pretrained, quick(data_root=str(tmp_path / "missing")), CPU)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pretrained, broken)
    (broken / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot load the model"):
        unlearn(quick(method="ft"), broken, tmp_path / "b2", progress=False)
    assert not (tmp_path / "b2" / "record.json").exists()


def test_evaluation_against_the_retrained_model(fixture_root, pretrained, tmp_path, capsys):  # noqa: F811
    from empirical.evaluate import evaluate

    retrain = tmp_path / "retrain"
    train(tiny(fixture_root, epochs=2, split_file=str(pretrained / "split.npz")), retrain, stage="retrain",
          progress=False)
    rec = unlearn(quick(method="ga", lr=0.01), pretrained, tmp_path / "ga", progress=False)
    kw = dict(device="cpu", wp_points=50, mia_features=("confidence", "entropy"))
    result = evaluate(tmp_path / "ga", retrain, tmp_path / "metrics.json", landscape_grid=3, **kw)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["tow"] == result["tow"] and 0 <= result["tow"] <= 1 and result["method"] == "ga"
    ours = result["unlearned"]
    for k in ("retain", "forget", "test"):  # the same model, the same eval-mode accuracies as the unlearn record
        assert ours["accuracy"][k] == pytest.approx(rec["accuracy"][k])
    # the reference is the retrained model (its own record's accuracies); ToW, its signed variant, ToW-MIA and the
    # avg gap by hand from the two sets of accuracies and MIA efficacies
    a, ref = ours["accuracy"], result["retrained"]["accuracy"]
    rt_record = json.loads((retrain / "record.json").read_text())
    assert all(ref[k] == pytest.approx(100 * rt_record[f"{k}_acc"]) for k in ("retain", "forget", "test"))
    d = {k: a[k] - ref[k] for k in ("retain", "forget", "test")}
    assert result["tow"] == pytest.approx(np.prod([1 - abs(v) / 100 for v in d.values()])) and result["tow"] < 1
    assert result["tow_signed_authors_code"] == pytest.approx(
        (1 + d["retain"] / 100) * (1 - d["forget"] / 100) * (1 + d["test"] / 100))
    mia, mia_rt = ours["mia_efficacy"]["confidence"], result["retrained"]["mia_efficacy"]["confidence"]
    assert result["tow_mia"] == pytest.approx(
        (1 - abs(d["retain"]) / 100) * (1 - abs(mia - mia_rt)) * (1 - abs(d["test"]) / 100))
    assert result["avg_gap"] == pytest.approx(np.mean([abs(v) for v in d.values()] + [100 * abs(mia - mia_rt)]))
    assert set(ours["mia_efficacy"]) == {"confidence", "entropy"} and 0 <= ours["mia_efficacy"]["confidence"] <= 1
    assert {"e_var", "e_wp", "e_var_classwise", "e_wp_classwise"} <= set(ours["entanglement"])
    assert np.array(ours["landscape"]["forget"]["loss"]).shape == (3, 3)
    # the retrained model against itself: perfect scores
    same = evaluate(retrain, retrain, None, **kw)
    assert same["tow"] == 1.0 and same["tow_mia"] == 1.0 and same["avg_gap"] == 0.0
    # a retrain on another forget set is refused
    other = tmp_path / "other"
    train(tiny(fixture_root, epochs=1, forget_size=20), other, stage="retrain", progress=False)
    assert main(["evaluate", "--run", str(tmp_path / "ga"), "--retrain", str(other), "--device", "cpu",
                 "--out", str(tmp_path / "m2.json")]) == 2
    assert "different forget sets" in capsys.readouterr().err and not (tmp_path / "m2.json").exists()
    assert main(["evaluate", "--run", str(tmp_path / "ga"), "--retrain", str(retrain), "--device", "cpu",
                 "--wp-points", "50", "--mia-features", "confidence"]) == 0
    assert "ToW" in capsys.readouterr().out and (tmp_path / "ga" / "metrics.json").exists()
