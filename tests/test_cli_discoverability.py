"""A newcomer can see the configuration: every field documented, --print-config runs nothing, --version, and an
unknown key gets a suggestion."""

from __future__ import annotations

import json
import math

import pytest

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
