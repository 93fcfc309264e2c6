"""The unlearning-method registry (docs/protocol.md#unlearning-methods; item 3 of the departures): each method's result
equals the one recorded before the methods became a registry; L1-sparse's own weight (sign and size of its term, checked
by hand); the protocol's scoped settings; the authors' masking against ours; the precision rule; E_Var in both units."""

# ruff: noqa: F811 - the imported fixtures are parameters of the tests below
from __future__ import annotations

import json

import pytest
import torch
from test_empirical_trainer import fixture_root, tiny  # noqa: F401 - the shared generated CIFAR fixture
from test_empirical_unlearn import pretrained, quick  # noqa: F401 - the shared smoke model and unlearning config

from empirical.methods import METHODS
from empirical.metrics import e_var_authors_units
from empirical.sam import SAM
from empirical.steps import steps_in_bf16
from empirical.unlearn import UnlearnConfig, resolve_scoped, scoped_overrides, unlearn
from simulations.errors import ConfigError


def fingerprint(out) -> tuple[float, float]:
    state = torch.load(out / "model.pt", weights_only=True)["model"]
    values = [v.double() for v in state.values() if v.is_floating_point()]
    return float(sum(v.sum() for v in values)), float(sum(v.abs().sum() for v in values))


# Recorded with the if-chain implementation (before the registry) on this fixture, one torch thread: the loss per
# epoch and the sum and absolute sum of every float tensor of the final state dict. (The L1 case used
# alpha=0.001 then: L1-sparse read NegGrad's alpha as its weight.)
BEFORE = {
    "ft": (dict(method="ft"), [1.2531650066375732], 1298.504473075635, 11339.652978141881),
    "ga": (dict(method="ga"), [-1.385212779045105], 1275.5195422159254, 11283.376736379758),
    "rl_exclude_true": (dict(method="rl", rl_exclude_true=True), [1.4948257207870483], 1296.2740411583832,
                        11341.280862172562),
    "neggrad_sam": (dict(method="neggrad", optimizer="sam"), [1.294098138809204], 1313.2533702918108,
                    11371.63205963962),
    "l1_sparse": (dict(method="l1_sparse", l1_weight=0.001), [7.0958991050720215], 1296.4710048729671,
                  11269.294504080419),
    "scrub": (dict(method="scrub", epochs=2, scrub_msteps=1), [0.8976156711578369, 0.7666550278663635],
              1313.9194939105435, 11422.278494615884),
    "salun": (dict(method="salun", mask_fraction=0.2), [1.5145224332809448], 1299.6601523849208,
              11337.16227357502),
    "sharp_minmax_asam": (dict(method="sharp_minmax", optimizer="asam", rho=0.5, forget_rho=1.0, mask_fraction=0.2),
                          [1.3114356994628906], 1325.4296696499987, 11370.29991035632),
}


@pytest.mark.parametrize("case", BEFORE)
def test_each_method_gives_the_result_recorded_before_the_registry(pretrained, tmp_path, case):
    settings, loss, total, absolute = BEFORE[case]
    rec = unlearn(quick(**settings), pretrained, tmp_path / case, progress=False)
    assert rec["loss"] == pytest.approx(loss, rel=1e-6)
    assert fingerprint(tmp_path / case) == pytest.approx((total, absolute), rel=1e-7)


def test_every_registered_method_has_its_defaults():
    assert set(METHODS) == {"ft", "ga", "rl", "neggrad", "l1_sparse", "scrub", "salun", "sharp_minmax"}
    assert (UnlearnConfig(method="l1_sparse").l1_weight, UnlearnConfig(method="neggrad").alpha) == (5e-4, 0.99)
    assert (UnlearnConfig(method="rl").learning_rate, UnlearnConfig(method="rl").num_epochs) == (0.1, 10)
    assert UnlearnConfig(method="sharp_minmax").mask_mode == "paper"
    # a setting the method does not have is refused: NegGrad's alpha no longer lands on L1-sparse
    with pytest.raises(ConfigError, match="alpha: not a setting of l1_sparse"):
        UnlearnConfig(method="l1_sparse", alpha=0.99)
    with pytest.raises(ConfigError, match="mask_mode"):
        UnlearnConfig(method="salun", mask_mode="official")
    with pytest.raises(ConfigError, match="method="):
        UnlearnConfig(method="fisher")


def test_l1_sparse_adds_its_own_weight_times_the_sign_of_the_weights(pretrained, tmp_path):
    """One full-batch step, no momentum, no decay: L1-sparse − fine-tuning = −lr · γ₀ · sign(θ₀) entry by entry (the
    schedule γ_t = γ₀ (1 − t/T) is γ₀ at the first step)."""
    from empirical.data import load_split

    retain = len(load_split(pretrained / "split.npz")["retain"])
    common = dict(batch_size=retain, momentum=0.0, weight_decay=0.0, lr=0.05)
    unlearn(quick(method="l1_sparse", l1_weight=0.01, **common), pretrained, tmp_path / "l1", progress=False)
    unlearn(quick(method="ft", **common), pretrained, tmp_path / "ft", progress=False)
    before = torch.load(pretrained / "checkpoint.pt", weights_only=True)["model"]
    l1 = torch.load(tmp_path / "l1" / "model.pt", weights_only=True)["model"]
    ft = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)["model"]
    from empirical.models import build_model

    names = [n for n, _ in build_model("resnet18", 10, 8, "cifar10").named_parameters()]
    for name in names:
        expected = -0.05 * 0.01 * torch.sign(before[name])
        assert torch.allclose(l1[name] - ft[name], expected, atol=2e-6), name


def test_l1_sparse_with_its_defaults_does_not_collapse(pretrained, tmp_path):
    rec = unlearn(quick(method="l1_sparse", lr=-1.0, epochs=3), pretrained, tmp_path / "l1", progress=False)
    assert rec["config"]["l1_weight"] == 5e-4 and max(rec["loss"]) < 10
    assert rec["accuracy"]["test"] > 20 and rec["accuracy"]["test"] >= rec["source_accuracy"]["test"] - 15


def test_protocol_settings_are_scoped_per_method():
    parsed = scoped_overrides(["neggrad.alpha=0.9", "alpha=0.95", "lr=0.02", "mask_mode=authors"])
    assert parsed == {"neggrad.alpha": 0.9, "alpha": 0.95, "lr": 0.02, "mask_mode": "authors"}
    per = resolve_scoped(parsed, ["neggrad", "sharp_minmax", "rl", "l1_sparse"])
    assert per["neggrad"] == {"alpha": 0.9, "lr": 0.02}  # the scoped value wins for its method
    assert per["sharp_minmax"] == {"alpha": 0.95, "lr": 0.02, "mask_mode": "authors"}
    assert per["rl"] == {"lr": 0.02} and per["l1_sparse"] == {"lr": 0.02}  # no alpha where there is none
    for bad, match in ((["mask_fraction=0.1"], "none of the chosen methods"),
                       (["salun.mask_fraction=0.1"], "not among the chosen")):
        with pytest.raises(ConfigError, match=match):
            resolve_scoped(scoped_overrides(bad), ["rl", "neggrad"])
    with pytest.raises(ConfigError, match="unknown option"):
        scoped_overrides(["neggrad.l1_weight=0.1"])


def _quadratic_sam(freeze: bool, rho: float, sign: str = "max"):
    """One SAM step (λ = 1, lr 1, weight decay 0.1) on L = ½ Σ a w², the mask keeping entries 0 and 1."""
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5, 2.0]))
    opt = SAM([w], torch.optim.SGD, rho=rho, sign=sign, lr=1.0, momentum=0.0, weight_decay=0.1)
    opt.set_mask([torch.tensor([True, True, False, False])], freeze=freeze)
    start = w.detach().clone()

    def closure():
        loss = 0.5 * (a * w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    g = a * start
    perturbed = a * (start + rho * g / g.norm())
    return start, g, perturbed, w.detach()


def test_authors_masking_multiplies_only_the_perturbed_gradient():
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    start, g, perturbed, after = _quadratic_sam(freeze=False, rho=0.5)
    # g_final = g − (M g' − g) = 2g − M g'; every entry decays (both hand-computed)
    assert torch.allclose(after, start - (2 * g - mask * perturbed + 0.1 * start), atol=1e-6)
    assert not torch.equal(after[2:], start[2:])  # outside W_F the max step still moves the weights: 2 g
    start, g, perturbed, after = _quadratic_sam(freeze=True, rho=0.5)
    assert torch.equal(after[2:], start[2:])  # ours: frozen, no step and no decay
    assert torch.allclose(after[:2], (start - (2 * g - perturbed + 0.1 * start))[:2], atol=1e-6)
    start, g, _, after = _quadratic_sam(freeze=False, rho=0.0)  # SGD, authors: the gradient times M, decay on all
    assert torch.allclose(after, start - (mask * g + 0.1 * start), atol=1e-6)


def test_salun_authors_mode_lets_decay_move_masked_out_weights(pretrained, tmp_path):
    from empirical.models import build_model

    names = [n for n, _ in build_model("resnet18", 10, 8, "cifar10").named_parameters()]
    before = torch.load(pretrained / "checkpoint.pt", weights_only=True)["model"]
    moved = {}
    for mode in ("paper", "authors"):
        unlearn(quick(method="salun", mask_fraction=0.2, weight_decay=5e-3, mask_mode=mode), pretrained,
                tmp_path / mode, progress=False)
        masks = torch.load(tmp_path / mode / "mask.pt", weights_only=True)
        assert masks["mode"] == mode
        after = torch.load(tmp_path / mode / "model.pt", weights_only=True)["model"]
        moved[mode] = sum(int((after[n][~m] != before[n][~m]).sum()) for n, m in zip(names, masks["masks"]))
    assert moved["paper"] == 0 and moved["authors"] > 0


def test_sam_steps_compute_in_fp32_unless_asked():
    assert steps_in_bf16(True, "sgd") and not steps_in_bf16(True, "sam") and not steps_in_bf16(True, "asam")
    assert steps_in_bf16(True, "sam", sam_bf16=True) and not steps_in_bf16(False, "sam", sam_bf16=True)
    from empirical.config import TrainConfig, make_config

    # the new field leaves the hash of every earlier configuration as it was (the cpu preset's hash as recorded by
    # a run made before the field existed, when the preset's SAM radius was 0.1); changing it changes the hash
    assert TrainConfig().hash == TrainConfig(sam_bf16=False).hash != TrainConfig(sam_bf16=True).hash
    assert make_config("cpu", {"rho": 0.1}).hash == "76a70a20058606d4" != make_config("cpu").hash


def test_sam_correction_cosine_is_one_against_itself_and_below_one_in_bf16():
    from empirical.bench import sam_correction_cosine

    cos = sam_correction_cosine(torch.device("cpu"), rho=0.02, width=4, batch_size=16)
    assert -1.0 <= cos < 0.999


def test_e_var_in_the_authors_units():
    assert e_var_authors_units(650.0) == 0.5 and e_var_authors_units(5000.0) == 1.0
    assert e_var_authors_units(13.0) == pytest.approx(0.01) and e_var_authors_units(-1.0) == 0.0


def test_unlearn_command_line_refuses_a_setting_of_another_method(pretrained, tmp_path, capsys):
    from empirical.__main__ import main

    out = tmp_path / "l1"
    assert main(["unlearn", "--from", str(pretrained), "--method", "l1_sparse", "--set", "alpha=0.99",
                 "--set", "device=cpu", "--out", str(out)]) == 2
    assert "not a setting of l1_sparse" in capsys.readouterr().err and not out.exists()
    json.dumps(UnlearnConfig(method="l1_sparse").to_dict())  # records stay JSON
