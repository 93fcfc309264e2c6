"""A newcomer can see the configuration: every field documented, --print-config runs nothing, --version, and an
unknown key gets a suggestion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_empirical_trainer import fixture_root  # noqa: F401 - the shared generated CIFAR fixture

from simulations.__main__ import main
from simulations.config import FIELD_NAMES, SimConfig
from simulations.fields import FIELD_HELP, suggest


def test_every_config_field_has_a_meaning():
    assert set(FIELD_HELP) == set(FIELD_NAMES)
    assert all(len(text) > 10 for text in FIELD_HELP.values())


def test_fields_lists_name_type_default_and_meaning(capsys):
    assert main(["fields"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(FIELD_NAMES) + 1
    line = next(row for row in out if row.startswith("sigma_0 "))
    assert "float" in line and repr(SimConfig().sigma_0) in line and FIELD_HELP["sigma_0"] in line


def test_set_help_lists_the_fields(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in ("signal_strength", "sam_steps", "rho_rule"))


def test_print_config_resolves_overrides_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["run", "--preset", "smoke", "--set", "d=123", "--print-config", "--out", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["d"] == 123 and shown["hash"] == SimConfig(**shown["config"]).hash
    assert main(["sweep", "--preset", "smoke", "--grid", "d=100,200,300", "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["grid"]["d"] == [100, 200, 300]
    assert shown["runs"] == math.prod(len(v) for v in shown["grid"].values()) and shown["runs"] % 3 == 0
    assert not out.exists()


def test_version_names_the_code_and_the_numerics(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert "numerics" in capsys.readouterr().out


def test_unknown_key_gets_a_suggestion(capsys):
    assert suggest("signal_strenght", FIELD_NAMES) == " (did you mean 'signal_strength'?)"
    assert suggest("zzzz", FIELD_NAMES) == ""
    assert main(["run", "--preset", "smoke", "--set", "lerning_rate=1", "--print-config"]) == 2
    assert main(["sweep", "--preset", "smoke", "--grid", "sigma0=0.1,0.2", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'sigma_0'" in err


def test_run_without_out_is_one_line(capsys):
    assert main(["run", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


# ---------------------------------------------------------------------- the other command lines: theory, empirical


def _exit_code(call) -> int:
    with pytest.raises(SystemExit) as stop:
        call()
    return stop.value.code


def test_every_command_line_prints_the_same_version(capsys):
    from empirical.__main__ import main as empirical_main
    from figures.__main__ import main as figures_main
    from simulations.__main__ import version_text
    from theory.__main__ import main as theory_main

    for entry in (empirical_main, theory_main, figures_main):
        assert _exit_code(lambda entry=entry: entry(["--version"])) == 0
        assert capsys.readouterr().out.strip() == version_text()


def test_every_empirical_field_has_a_meaning():
    from empirical.config import FIELD_TYPES
    from empirical.fields import TRAIN_FIELD_HELP, UNLEARN_FIELD_HELP
    from empirical.unlearn import ALL_FIELDS

    assert set(TRAIN_FIELD_HELP) == set(FIELD_TYPES)
    assert set(UNLEARN_FIELD_HELP) == set(ALL_FIELDS)
    assert all(len(text) > 10 for text in (*TRAIN_FIELD_HELP.values(), *UNLEARN_FIELD_HELP.values()))


def test_empirical_fields_lists_name_type_default_and_meaning(capsys):
    from empirical.__main__ import main as empirical_main
    from empirical.config import FIELD_TYPES, TrainConfig
    from empirical.fields import TRAIN_FIELD_HELP, UNLEARN_FIELD_HELP
    from empirical.unlearn import ALL_FIELDS

    assert empirical_main(["fields"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + len(FIELD_TYPES) + 1 + 2 + len(ALL_FIELDS)  # two titled tables (title, header, rows)
    line = next(row for row in out if row.startswith("forget_level "))
    assert " str " in line and repr(TrainConfig().forget_level) in line and TRAIN_FIELD_HELP["forget_level"] in line
    line = next(row for row in out if row.startswith("alpha "))  # a method's own setting names its methods
    assert " float " in line and " 0.99 " in line and UNLEARN_FIELD_HELP["alpha"] in line
    assert line.endswith("[neggrad, sharp_minmax]")
    line = next(row for row in out if row.startswith("lr ") and "-1.0" in row)  # the unlearning placeholder
    assert "method's default" in line


def test_empirical_set_help_lists_the_fields(capsys):
    from empirical.__main__ import main as empirical_main

    for verb, names in (("pretrain", ("forget_size", "memorization_scores", "warmup_epochs")),
                        ("unlearn", ("mask_fraction", "forget_bn", "scrub_beta")),
                        ("protocol", ("forget_level", "forget_rho"))):
        assert _exit_code(lambda verb=verb: empirical_main([verb, "--help"])) == 0
        out = capsys.readouterr().out
        assert all(f"\n{name} " in out for name in names), verb


def test_presets_verbs_list_every_preset(capsys):
    from empirical.__main__ import main as empirical_main
    from empirical.config import PRESETS as TRAIN_PRESETS
    from empirical.protocol import UNLEARN_PRESETS
    from theory.__main__ import main as theory_main
    from theory.validation import PRESETS as VALIDATION_PRESETS

    assert empirical_main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {name} " in out for name in TRAIN_PRESETS)
    assert str(TRAIN_PRESETS["cpu"]) in out and str(UNLEARN_PRESETS["cpu"]) in out
    assert theory_main(["presets"]) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    assert [b.split()[0] for b in blocks] == [*VALIDATION_PRESETS, "tiny"]
    smoke = blocks[0].splitlines()
    assert f"  {'ds':14s} {VALIDATION_PRESETS['smoke'].ds}" in smoke
    assert f"  {'lemma_d':14s} {VALIDATION_PRESETS['smoke'].lemma_d}" in smoke


def test_empirical_print_config_resolves_and_writes_nothing(tmp_path, capsys):
    from empirical.__main__ import main as empirical_main
    from empirical.config import make_config
    from empirical.methods import get_method
    from empirical.protocol import UNLEARN_PRESETS

    never = tmp_path / "never"
    for verb in ("pretrain", "retrain"):
        assert empirical_main([verb, "--preset", "cpu", "--set", "lr=0.2", "--print-config", "--out", str(never)]) == 0
        shown = json.loads(capsys.readouterr().out)
        cfg = make_config("cpu", {"lr": 0.2})
        assert shown == {"stage": verb, "preset": "cpu", "hash": cfg.hash, "config": cfg.to_dict()}
    # unlearn: the placeholders lr < 0 and epochs = 0 are shown as the method's defaults; the source is not read
    assert empirical_main(["unlearn", "--from", str(tmp_path / "no-such-run"), "--method", "rl", "--set",
                           "optimizer=sam", "--print-config", "--out", str(never)]) == 0
    shown = json.loads(capsys.readouterr().out)["config"]
    assert (shown["method"], shown["optimizer"]) == ("rl", "sam")
    assert (shown["lr"], shown["epochs"]) == (get_method("rl").lr, get_method("rl").epochs) and shown["lr"] > 0
    # protocol: every pretraining and retraining config, the unlearning config per method, the stages in order
    assert empirical_main(["protocol", "--preset", "cpu", "--pretrain", "sgd,sam", "--forget", "high,low",
                           "--methods", "neggrad,rl", "--unlearn-optimizers", "sgd,sam", "--unlearn-set",
                           "neggrad.alpha=0.9", "--print-config", "--out", str(never)]) == 0
    shown = json.loads(capsys.readouterr().out)
    # the cpu preset's SAM pretraining runs PRETRAIN_PRESETS' epochs; SGD and the retrains the training preset's
    assert shown["pretrain"]["sam"]["config"] == make_config("cpu", {"optimizer": "sam", "epochs": 18}).to_dict()
    assert shown["pretrain"]["sgd"]["config"] == make_config("cpu", {"optimizer": "sgd"}).to_dict()
    assert shown["retrain"]["low"]["config"]["epochs"] == make_config("cpu").epochs
    assert shown["retrain"]["low"]["config"]["split_file"] == str(never / "splits" / "low.npz")
    neggrad = shown["unlearn"]["neggrad"]
    assert neggrad["alpha"] == 0.9 and neggrad["lr"] == get_method("neggrad").lr
    assert neggrad["epochs"] == UNLEARN_PRESETS["cpu"]["epochs"] and "alpha" not in shown["unlearn"]["rl"]
    stages = shown["stages"]
    assert len(stages) == 2 + 1 + 2 + 2 * 2 * 2 * 2 + 1
    assert [s["stage"] for s in stages[:5]] == ["pretrain", "pretrain", "splits", "retrain", "retrain"]
    assert stages[5] == {"stage": "unlearn", "pretrain": "sgd", "forget": "high", "method": "neggrad",
                         "optimizer": "sgd", "what": stages[5]["what"]} and stages[-1]["stage"] == "summary"
    assert not never.exists()
    assert empirical_main(["pretrain", "--preset", "cpu"]) == 2  # without --print-config, --out is needed
    assert "--out" in capsys.readouterr().err


def test_empirical_unknown_keys_and_verbs_get_a_suggestion(capsys):
    from empirical.__main__ import main as empirical_main
    from theory.__main__ import main as theory_main

    assert empirical_main(["pretrain", "--set", "epoch=3", "--print-config"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert empirical_main(["unlearn", "--from", "x", "--set", "alpah=0.5", "--print-config"]) == 2
    assert "did you mean 'alpha'" in capsys.readouterr().err
    assert empirical_main(["protocol", "--unlearn-set", "neggrad.alpah=0.5", "--print-config"]) == 2
    assert "did you mean 'alpha'" in capsys.readouterr().err
    assert empirical_main(["pretrain", "--preset", "quik", "--print-config"]) == 2
    assert "did you mean 'quick'" in capsys.readouterr().err
    assert _exit_code(lambda: empirical_main(["protocl"])) == 2
    assert "did you mean 'protocol'" in capsys.readouterr().err
    assert _exit_code(lambda: theory_main(["presetz"])) == 2
    assert "did you mean 'presets'" in capsys.readouterr().err
    assert _exit_code(lambda: main(["sweeep"])) == 2
    assert "did you mean 'sweep'" in capsys.readouterr().err


# ---------------------------------------------------------------------- what a run folder records


def test_run_records_hold_the_command_line(tmp_path, capsys):
    out = tmp_path / "one"
    argv = ["run", "--preset", "smoke", "--set", "n_test=200", "--set", "steps=20", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["provenance"]["command"] == ["python", "-m", "simulations", *argv]
    import os

    from simulations.provenance import COMMAND_ENV

    assert COMMAND_ENV not in os.environ  # the command is recorded only while its main runs


def test_unlearn_record_holds_the_command_and_resolved_lr_and_epochs(tmp_path, fixture_root, capsys):  # noqa: F811
    import hashlib

    from empirical.__main__ import main as empirical_main
    from empirical.methods import get_method
    from empirical.unlearn import UnlearnConfig

    pre = tmp_path / "pre"
    argv = ["pretrain", "--preset", "smoke", "--set", "epochs=1", "--set", "forget_size=20", "--data-root",
            fixture_root, "--out", str(pre)]
    assert empirical_main(argv) == 0
    record = json.loads((pre / "record.json").read_text())
    assert record["provenance"]["command"] == ["python", "-m", "empirical", *argv]
    argv = ["unlearn", "--from", str(pre), "--method", "neggrad", "--set", "epochs=1", "--set", "batch_size=32",
            "--set", "device=cpu", "--set", "bf16=false", "--set", "channels_last=false", "--out", str(tmp_path / "u")]
    assert empirical_main(argv) == 0
    record = json.loads((tmp_path / "u" / "record.json").read_text())
    assert record["provenance"]["command"] == ["python", "-m", "empirical", *argv]
    assert record["config"]["lr"] == get_method("neggrad").lr == record["lr"] and record["config"]["epochs"] == 1
    assert record["config"]["alpha"] == 0.99 and len(record["loss"]) == 1
    # the folder's identity still hashes the configuration as given (lr -1, the placeholder): old folders keep theirs
    given = UnlearnConfig(method="neggrad", epochs=1, batch_size=32, device="cpu", bf16=False, channels_last=False)
    # (a field added later, steps_per_epoch, counts only when set: the hash of the fields before it)
    before = {k: v for k, v in given.to_dict().items() if k != "steps_per_epoch"}
    digest = hashlib.sha256(repr(sorted(before.items())).encode()).hexdigest()[:16]
    identity = json.loads((tmp_path / "u" / "run.json").read_text())["identity"]
    assert given.lr == -1.0 and record["config_hash"] == identity["config"] == digest


# ---------------------------------------------------------------------- long work is not silent


def test_landscape_shows_a_progress_bar_over_the_grid_points(capsys):
    from test_empirical_landscape import fake_data, tiny_model

    from empirical.landscape import landscape

    model, data = tiny_model(), fake_data(16)
    quiet = landscape(model, {"forget": (data, np.arange(8))}, seed=0, grid=3, progress=False)
    assert capsys.readouterr().err == ""
    shown = landscape(model, {"forget": (data, np.arange(8)), "test": (data, None)}, seed=0, grid=3, progress=True)
    err = capsys.readouterr().err
    assert "landscape forget (3x3)" in err and "landscape test (3x3)" in err and "9/9" in err
    assert np.array_equal(quiet["forget"]["loss"], shown["forget"]["loss"])


def test_protocol_says_which_stage_of_how_many(tmp_path, monkeypatch, capsys):
    from empirical import protocol

    done = []
    for stage in ("pretrain", "splits", "retrain", "unlearn", "summary"):
        monkeypatch.setattr(protocol.Plan, stage, lambda self, *args, _s=stage: done.append((_s, args)) or {})
    protocol.run_protocol(tmp_path / "p", "smoke", "sgd,sam", "high", "neggrad", "sam", progress=None)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(done) == 2 + 1 + 1 + 2 + 1
    assert lines[0] == "protocol stage 1/7: pretrain, pretraining optimizer sgd -> pretrain_sgd/"
    assert lines[5].startswith("protocol stage 6/7: unlearn + evaluate: pretraining optimizer sam, unlearning "
                               "optimizer sam, method neggrad, forget set high")
    assert done[5] == ("unlearn", ("sam", "high", "neggrad", "sam"))
    protocol.run_protocol(tmp_path / "p", "smoke", "sgd,sam", "high", "neggrad", "sam", progress=False)
    assert capsys.readouterr().err == ""


def test_evaluate_screen_names_its_units():
    from empirical.evaluate import UNITS, summary_lines

    side = {"accuracy": {"retain": 99.5, "forget": 80.25, "test": 90.0}, "mia_efficacy": {"confidence": 0.125},
            "entanglement": {"e_var": 1.5, "e_wp": 0.25}}
    lines = summary_lines({"unlearned": side, "retrained": side, "tow": 0.5, "tow_mia": 0.25, "avg_gap": 3.5,
                           "tow_signed_authors_code": 0.75, "units": UNITS})
    assert "RA %" in lines[0] and "MIA %" in lines[0]
    assert lines[1].split()[1:5] == ["99.50", "80.25", "90.00", "12.50"]  # MIA efficacy in percent, as accuracies
    assert "ToW x100 50.00" in lines[-1] and "ToW-MIA x100 25.00" in lines[-1] and "avg gap 3.50 pp" in lines[-1]
    assert UNITS["mia_efficacy"].startswith("fraction") and UNITS["accuracy"].startswith("percent")
