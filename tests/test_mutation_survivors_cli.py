"""Exact behaviour of the simulator's command line that the mutation runs of docs/testing.md need pinned:
``simulations/__main__.py`` (the parser's every option, default, type and help text; ``run`` and ``sweep`` with the
engine and the sweep faked, so the exact arguments they pass, the exact files and lines they write, and the memory
budget's boundary are visible; ``presets``, ``fields``, ``--version`` and the three error branches of ``main``),
``simulations/arguments.py`` (every numeric type on both sides of its bound, the one-line parser error with its
"did you mean", ``VersionAction``), ``simulations/fields.py`` (the table's exact layout, ``suggest``) and
``simulations/errors.py`` (``output_error``'s exact message for each errno).

Expected values are written out by hand from the definitions; the code under test is never called twice to
produce its own expectation.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import simulations.__main__ as cli
from simulations import arguments
from simulations.arguments import (OneLineParser, VersionAction, _choice_hint, _number, fraction_open,
                                   non_negative_float, non_negative_int, positive_float, positive_int)
from simulations.config import FIELD_TYPES, PRESETS, SimConfig
from simulations.errors import ConfigError, OutputError, output_error
from simulations.fields import FIELD_HELP, describe_fields, suggest

VERSION = "sam-unlearning CODE-1 (numerics NUMV-1)"
SMOKE_BASE = dict(n=20, d=400, m=10, steps=200, lr=0.5, rho=0.3, n_test=2000, forget_size=2,
                  unlearn_method="neggrad", unlearn_steps=50, unlearn_lr=0.5, alpha=0.5)


@pytest.fixture(autouse=True)
def _fixed_versions(monkeypatch):
    """No ``git describe`` or source fingerprint per parser: fixed code and numerics versions."""
    import simulations.provenance as prov

    monkeypatch.setattr(prov, "code_version", lambda: "CODE-1")
    monkeypatch.setattr(prov, "numerics_version", lambda: "NUMV-1")


# ---------------------------------------------------------------------- errors.py


def test_output_error_names_the_path_the_reason_and_the_fix_per_errno():
    fixes = {errno.ENOSPC: "free disk space or choose another --out",
             errno.EDQUOT: "free disk space (quota) or choose another --out",
             errno.EROFS: "the file system is read-only; choose another --out",
             errno.EACCES: "no permission; choose another --out",
             errno.EPERM: "no permission; choose another --out",
             errno.ENOENT: "choose another --out"}
    for code, fix in fixes.items():
        err = output_error(Path("/a/b.json"), OSError(code, "REASON"))
        assert type(err) is OutputError and isinstance(err, ConfigError)
        assert str(err) == f"cannot write '/a/b.json' (REASON): {fix}; files already there are unchanged"
    # no strerror: the exception's type names the reason; no errno: the general fix
    assert str(output_error("rel/x", OSError("plain text"))) == \
        "cannot write 'rel/x' (OSError): choose another --out; files already there are unchanged"
    assert str(output_error("y", PermissionError())) == \
        "cannot write 'y' (PermissionError): choose another --out; files already there are unchanged"


# ---------------------------------------------------------------------- fields.py


def test_describe_fields_exact_layout():
    defaults = {"ab": 1, "longer_name": 0.5, "flag": True, "s": "x"}
    types = {"ab": int, "longer_name": float, "flag": bool, "s": str}
    text = describe_fields(defaults, types, {"ab": "first", "longer_name": "second meaning"})
    assert text.split("\n") == [
        "field" + " " * 6 + "  " + "type " + "  " + " " * 15 + "default" + "  meaning",
        "ab" + " " * 9 + "  " + "int  " + "  " + " " * 21 + "1" + "  first",
        "longer_name" + "  " + "float" + "  " + " " * 19 + "0.5" + "  second meaning",
        "flag" + " " * 7 + "  " + "bool " + "  " + " " * 18 + "True" + "  ",
        "s" + " " * 10 + "  " + "str  " + "  " + " " * 19 + "'x'" + "  ",
    ]
    # help_text defaults to FIELD_HELP; a name shorter than 'field' does not shorten the header
    assert describe_fields({"n": 10}, {"n": int}) == (
        "field  type   " + " " * 15 + "default  meaning\n"
        "n  int    " + " " * 20 + "10  number of training samples")


def test_fields_table_is_every_simconfig_field():
    defaults = SimConfig().to_dict()
    width = max(len(k) for k in defaults)
    assert width == 17  # patch_aggregation, unlearn_optimizer
    lines = cli._fields_table().split("\n")
    assert lines[0] == "field" + " " * 12 + "  type " + "  " + " " * 15 + "default  meaning"
    assert lines[1] == "backend" + " " * 10 + "  str  " + "  " + " " * 16 + "'gram'  " + FIELD_HELP["backend"]
    assert len(lines) == len(defaults) + 1
    for line, (name, value) in zip(lines[1:], defaults.items()):
        assert line == (name.ljust(17) + "  " + FIELD_TYPES[name].__name__.ljust(5) + "  " + repr(value).rjust(22)
                        + "  " + FIELD_HELP[name])


def test_suggest_closest_name_or_nothing():
    assert suggest("sweeep", ["run", "sweep", "presets"]) == " (did you mean 'sweep'?)"
    assert suggest("presetz", iter(["run", "sweep", "presets"])) == " (did you mean 'presets'?)"
    assert suggest("abcd", ["abcx", "abxx"]) == " (did you mean 'abcx'?)"  # ratio 0.75, the best of two
    assert suggest("abcdefghij", ["abcdefxxxx"]) == " (did you mean 'abcdefxxxx'?)"  # ratio 0.6: the cutoff
    assert suggest("abcdefghij", ["abcdexxxxx"]) == ""  # ratio 0.5, below the cutoff
    assert suggest("qq", []) == ""


# ---------------------------------------------------------------------- arguments.py


def _refusal(parse, text):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    assert caught.value.__cause__ is None
    if " is not " in str(caught.value):  # raised from the ValueError of float()/int(), without it
        assert caught.value.__suppress_context__
    return str(caught.value)


def test_number_types_both_sides_of_each_bound():
    pos_int = _number(int, 1, True, "a positive integer")
    assert pos_int.__name__ == "a positive integer"
    assert pos_int("1") == 1 and type(pos_int("1")) is int and pos_int("7") == 7
    assert _refusal(pos_int, "0") == "'0': must be a positive integer"
    assert _refusal(pos_int, "-3") == "'-3': must be a positive integer"
    assert _refusal(pos_int, "1.5") == "'1.5' is not an integer"
    assert _refusal(pos_int, "x") == "'x' is not an integer"
    excl_int = _number(int, 1, False, "above one")
    assert excl_int("2") == 2
    assert _refusal(excl_int, "1") == "'1': must be above one"

    nonneg_int = _number(int, 0, True, "an integer >= 0")
    assert nonneg_int("0") == 0 and type(nonneg_int("0")) is int
    assert _refusal(nonneg_int, "-1") == "'-1': must be an integer >= 0"

    pos_float = _number(float, 0.0, False, "a positive number")
    assert pos_float.__name__ == "a positive number"
    assert pos_float("2.5") == 2.5 and type(pos_float("3")) is float and pos_float("1e-300") == 1e-300
    assert _refusal(pos_float, "0") == "'0': must be a positive number"
    assert _refusal(pos_float, "-0.5") == "'-0.5': must be a positive number"
    assert _refusal(pos_float, "abc") == "'abc' is not a number"
    for text in ("inf", "-inf", "nan"):
        assert _refusal(pos_float, text) == f"'{text}': must be a finite number"

    nonneg_float = _number(float, 0.0, True, "a number >= 0")
    assert nonneg_float("0") == 0.0 and type(nonneg_float("0")) is float and nonneg_float("0.25") == 0.25
    assert _refusal(nonneg_float, "-1e-300") == "'-1e-300': must be a number >= 0"
    low_float = _number(float, 2.0, True, "at least two")
    assert low_float("2") == 2.0
    assert _refusal(low_float, "1.5") == "'1.5': must be at least two"


def test_module_level_number_types():
    assert (positive_int.__name__, non_negative_int.__name__, positive_float.__name__, non_negative_float.__name__) \
        == ("a positive integer", "an integer >= 0", "a positive number", "a number >= 0")
    assert positive_int("1") == 1 and non_negative_int("0") == 0 and positive_float("0.5") == 0.5
    assert non_negative_float("0") == 0.0
    assert _refusal(positive_int, "0") == "'0': must be a positive integer"
    assert _refusal(positive_float, "0") == "'0': must be a positive number"


def test_fraction_open_is_strictly_between_0_and_1():
    assert fraction_open("0.5") == 0.5 and fraction_open("1e-9") == 1e-9 and fraction_open("0.999999") == 0.999999
    assert type(fraction_open("0.5")) is float
    for text in ("0", "1", "1.5", "-0.1", "2"):
        assert _refusal(fraction_open, text) == f"'{text}': must be a number in (0, 1)"
    assert _refusal(fraction_open, "nan") == "'nan': must be a finite number"
    assert _refusal(fraction_open, "x") == "'x' is not a number"


def test_one_line_parser_error_with_and_without_a_suggestion(capsys):
    parser = OneLineParser(prog="prog")
    parser.add_argument("verb", choices=["alpha", "beta"])
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["alpah"])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: prog: argument verb: invalid choice: 'alpah' (choose from 'alpha', 'beta') "
                   "(did you mean 'alpha'?) (see prog --help)\n")
    with pytest.raises(SystemExit) as stop:
        parser.error("boom")
    assert stop.value.code == 2
    assert capsys.readouterr() == ("", "error: prog: boom (see prog --help)\n")


def test_choice_hint():
    msg = "argument command: invalid choice: 'sweeep' (choose from 'run', 'sweep', 'presets', 'fields')"
    assert _choice_hint(msg) == " (did you mean 'sweep'?)"
    assert _choice_hint("invalid choice: 'zzzzzz' (choose from 'run', 'sweep')") == ""
    # only the quotes are stripped from a choice (a name may begin or end with any other character)
    assert _choice_hint("invalid choice: 'XrelX' (choose from 'XreluX', 'tanh')") == " (did you mean 'XreluX'?)"
    # some 3.12/3.13 releases print the choices without quotes: the hint must not disappear there
    assert _choice_hint("argument command: invalid choice: 'sweeep' (choose from run, sweep, presets)") == \
        " (did you mean 'sweep'?)"
    assert _choice_hint("the following arguments are required: command") == ""


def test_version_action(capsys, monkeypatch):
    action = VersionAction(["--version"])
    assert action.option_strings == ["--version"]
    assert action.dest == argparse.SUPPRESS and action.default == argparse.SUPPRESS and action.nargs == 0
    assert action.help == "print the code version and the numerics version, then exit"
    parser = argparse.ArgumentParser(prog="p")
    added = parser.add_argument("--version", action=VersionAction)
    assert added.dest == "version" and added.nargs == 0
    assert vars(parser.parse_args([])) == {}
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr() == (VERSION + "\n", "")
    monkeypatch.setattr(cli, "version_text", lambda: "V-TEXT")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--version", "extra"])  # nargs 0: exits before the extra word is read
    assert stop.value.code == 0
    assert capsys.readouterr().out == "V-TEXT\n"


# ---------------------------------------------------------------------- __main__.py: the parser


def test_version_text_and_version_flag(capsys):
    assert cli.version_text() == VERSION
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr() == (VERSION + "\n", "")


def _options(parser):
    return {a.option_strings[0]: (a.dest, a.default, a.type, a.choices, a.help, a.metavar, type(a).__name__)
            for a in parser._actions if a.option_strings and a.option_strings[0] != "-h"}


COMMON = {
    "--preset": ("preset", "smoke", None, None, "one of smoke, quick, paper, kou2023 (default smoke)", None,
                 "_StoreAction"),
    "--set": ("set", [], None, None,
              "override a config field (the fields, their defaults and meanings are listed below)", "KEY=VALUE",
              "_AppendAction"),
    "--out": ("out", None, Path, None, "output folder (required unless --print-config)", None, "_StoreAction"),
    "--print-config": ("print_config", False, None, None,
                       "print the resolved configuration (and grid) and exit; nothing is run or written", None,
                       "_StoreTrueAction"),
    "--device": ("device", "cpu", None, None, "cpu (default) or cuda", None, "_StoreAction"),
    "--max-memory-gb": ("max_memory_gb", None, positive_float, None, "memory budget (default: half of free)", None,
                        "_StoreAction"),
    "--force": ("force", False, None, None,
                "take over an --out folder that holds a run of other settings (its results are replaced)", None,
                "_StoreTrueAction"),
}
SWEEP_ONLY = {
    "--grid": ("grid", [], None, None, "a grid axis; replaces the preset's axis of the same key",
               "KEY=V1,V2|KEY=START:STOP:STEP",
               "_AppendAction"),
    "--no-preset-grid": ("no_preset_grid", False, None, None, "ignore the preset's own grid axes", None,
                         "_StoreTrueAction"),
    "--executor": ("executor", "inprocess", None, ["inprocess", "pool", "submitit"], None, None, "_StoreAction"),
    "--workers": ("workers", 2, positive_int, None, "processes for --executor pool", None, "_StoreAction"),
    "--cluster": ("cluster", None, None, None, "submitit cluster: slurm (default), local or debug", None,
                  "_StoreAction"),
    "--slurm-partition": ("slurm_partition", None, None, None, None, None, "_StoreAction"),
    "--timeout-min": ("timeout_min", 60, positive_int, None, "per job, for submitit", None, "_StoreAction"),
    "--chunk-runs": ("chunk_runs", 2000, positive_int, None, "runs per work unit / cache chunk", None,
                     "_StoreAction"),
    "--save-coefficients": ("save_coefficients", False, None, None,
                            "store full kappa/zeta trajectories per run (large), not only their summaries", None,
                            "_StoreTrueAction"),
}


def test_parser_options_defaults_types_and_help():
    parser = cli.build_parser()
    assert parser.prog == "python -m simulations" and parser.description == cli.__doc__
    assert parser.formatter_class is argparse.RawDescriptionHelpFormatter and type(parser) is OneLineParser
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1 and subs[0].dest == "command" and subs[0].required is True
    sub = subs[0]
    assert [(c.dest, c.help) for c in sub._choices_actions] == [
        ("run", "one configuration → DIR/result.json and DIR/trajectory.npz"),
        ("sweep", "a grid of configurations → DIR/results.csv (cached, resumable)"),
        ("presets", "list the presets"),
        ("fields", "list every config field with its type, default and meaning")]
    version = _options(parser)["--version"]
    assert version[0] == "version" and version[-1] == "_VersionAction"
    run, sweep = sub.choices["run"], sub.choices["sweep"]
    assert _options(run) == COMMON
    options = _options(sweep)
    choices = options["--executor"]
    assert list(choices[3]) == ["inprocess", "pool", "submitit"]
    options["--executor"] = choices[:3] + (list(choices[3]),) + choices[4:]
    assert options == {**COMMON, **SWEEP_ONLY}
    table = cli._fields_table()
    for p in (run, sweep):
        assert p.epilog == "config fields (--set KEY=VALUE):\n" + table
        assert p.formatter_class is argparse.RawDescriptionHelpFormatter
    assert _options(sub.choices["presets"]) == {} and _options(sub.choices["fields"]) == {}
    # the types are applied and refuse bad values
    args = parser.parse_args(["sweep", "--max-memory-gb", "2", "--workers", "3", "--timeout-min", "4",
                              "--chunk-runs", "5", "--out", "o", "--set", "a=1", "--set", "b=2", "--grid", "c=1"])
    assert (args.max_memory_gb, args.workers, args.timeout_min, args.chunk_runs, args.out) == (2.0, 3, 4, 5, Path("o"))
    assert args.set == ["a=1", "b=2"] and args.grid == ["c=1"] and args.command == "sweep"
    assert vars(parser.parse_args(["presets"])) == {"command": "presets"}


@pytest.mark.parametrize("argv,message", [
    (["sweep", "--workers", "0"], "argument --workers: '0': must be a positive integer"),
    (["sweep", "--executor", "pools"], "argument --executor: invalid choice: 'pools' (choose from 'inprocess', "
                                       "'pool', 'submitit') (did you mean 'pool'?)"),
    (["run", "--max-memory-gb", "0"], "argument --max-memory-gb: '0': must be a positive number"),
    ([], "the following arguments are required: command"),
    (["sweeep"], "argument command: invalid choice: 'sweeep' (choose from 'run', 'sweep', 'presets', 'fields') "
                 "(did you mean 'sweep'?)"),
])
def test_parser_refusals_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    prog = "python -m simulations" + (f" {argv[0]}" if argv[1:] else "")
    assert capsys.readouterr() == ("", f"error: {prog}: {message} (see {prog} --help)\n")


# ---------------------------------------------------------------------- __main__.py: fields, presets, errors


def test_fields_command_prints_the_table(capsys):
    assert cli.main(["fields"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out == cli._fields_table() + "\n"
    assert out.startswith("field" + " " * 12 + "  type ")


def test_presets_command_exact_lines(monkeypatch, capsys):
    fake = {"x": SimpleNamespace(name="ab", description="desc one", base={"n": 3},
                                 grid={"six": [1, 2, 3, 4, 5, 6], "seven": [1, 2, 3, 4, 5, 6, 9],
                                       "pair": [("gd", "gd")]}),
            "y": SimpleNamespace(name="longname9", description="two", base={}, grid={})}
    monkeypatch.setattr(cli, "PRESETS", fake)
    assert cli.main(["presets"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.split("\n") == [
        "ab       desc one",
        "         base {'n': 3}",
        "         grid {'six': [1, 2, 3, 4, 5, 6], 'seven': '7 values 1..9', 'pair': [('gd', 'gd')]}",
        "longname9 two",
        "         base {}",
        "         grid {}",
        ""]


def test_main_error_branches(monkeypatch, capsys, tmp_path):
    def raiser(exc):
        calls = []

        def f():  # the parser's epilog first, then the fields command's table
            calls.append(1)
            if len(calls) > 1:
                raise exc
            return "TABLE"
        return f

    monkeypatch.setattr(cli, "_fields_table", raiser(ConfigError("bad thing")))
    assert cli.main(["fields"]) == 2
    assert capsys.readouterr() == ("", "error: bad thing\n")
    monkeypatch.setattr(cli, "_fields_table", raiser(OSError(errno.ENOENT, "No such file", "/x/y")))
    assert cli.main(["fields"]) == 2
    assert capsys.readouterr() == ("", "error: /x/y: No such file\n")
    monkeypatch.setattr(cli, "_fields_table", raiser(OSError("plain")))
    assert cli.main(["fields"]) == 2
    assert capsys.readouterr() == ("", "error: : plain\n")
    # a reader that stopped: stdout goes to /dev/null, status 0, nothing on stderr
    monkeypatch.setattr(cli, "_fields_table", raiser(BrokenPipeError()))
    target = tmp_path / "stdout.txt"
    with open(target, "w") as fh:
        monkeypatch.setattr("sys.stdout", fh)
        assert cli.main(["fields"]) == 0
        os.write(fh.fileno(), b"lost")
    assert target.read_bytes() == b""
    assert capsys.readouterr().err == ""


def test_require_out_message(capsys):
    assert cli.main(["run"]) == 2
    assert capsys.readouterr() == ("", "error: run needs --out DIR (or --print-config to only show the "
                                       "configuration)\n")
    assert cli.main(["sweep", "--no-preset-grid"]) == 2
    assert capsys.readouterr() == ("", "error: sweep needs --out DIR (or --print-config to only show the "
                                       "configuration)\n")


# ---------------------------------------------------------------------- __main__.py: run, with the engine faked

METRICS = {"test_error": 0.123456, "test_error_se": 0.01234, "train_error": 0.5, "forget_acc": 0.25,
           "diverged": False}


@pytest.fixture
def engine(monkeypatch):
    """simulate, check_device, bytes_per_config, memory_refusal, available_memory and provenance faked; what the
    command passes them recorded."""
    import simulations.engine as eng
    import simulations.provenance as prov
    import simulations.sweep as sw

    calls = SimpleNamespace(simulate=[], devices=[], sizes=[], need=100.0, fail=None)

    def simulate(configs, **kwargs):
        calls.simulate.append((configs, kwargs))
        if calls.fail is not None:
            raise calls.fail
        return [SimpleNamespace(metrics=dict(METRICS),
                                trajectory={"step": np.array([0, 5]), "train_loss": np.array([0.75, 0.125])},
                                coefficients={"kappa": np.arange(6.0).reshape(1, 2, 3)})]

    def bytes_per_config(cfg, backend):
        calls.sizes.append((cfg.hash, backend))
        return calls.need

    monkeypatch.setattr(eng, "simulate", simulate)
    monkeypatch.setattr(eng, "check_device", lambda device: calls.devices.append(device))
    monkeypatch.setattr(eng, "bytes_per_config", bytes_per_config)
    monkeypatch.setattr(eng, "memory_refusal", lambda cfg, need, budget: f"REFUSED {cfg.n} {need} {budget}")
    monkeypatch.setattr(sw, "available_memory", lambda: 1000.0)
    monkeypatch.setattr(prov, "provenance", lambda device: {"device": device, "command": prov.command_line()})
    return calls


def test_run_passes_writes_and_prints_exactly(engine, tmp_path, capsys):
    out = tmp_path / "one"
    argv = ["run", "--set", "n=10", "--device", "weird", "--max-memory-gb", "1.5", "--out", str(out)]
    assert cli.main(argv) == 0
    cfg = SimConfig(**{**SMOKE_BASE, "n": 10})
    (configs, kwargs), = engine.simulate
    assert [c.hash for c in configs] == [cfg.hash]
    assert kwargs == {"device": "weird", "save_coefficients": True, "memory_bytes": 1.5 * 2**30}
    assert engine.devices == ["weird"] and engine.sizes == [(cfg.hash, "gram")]
    record = json.loads((out / "result.json").read_text())
    wall = record.pop("wall_s")
    assert 0 <= wall < 60
    assert record == {"config": cfg.to_dict(), "hash": cfg.hash, "seed": cfg.seed, "metrics": METRICS,
                      "provenance": {"device": "weird", "command": ["python", "-m", "simulations", *argv]},
                      "trajectory_file": "trajectory.npz"}
    with np.load(out / "trajectory.npz") as z:
        assert sorted(z.files) == ["kappa", "step", "train_loss"]
        assert z["step"].tolist() == [0, 5] and z["train_loss"].tolist() == [0.75, 0.125]
        assert z["kappa"].tolist() == [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]
    assert json.loads((out / "run.json").read_text()) == {"kind": "run", "identity": {"config": cfg.hash,
                                                                                      "numerics_version": "NUMV-1"}}
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "run.json", "trajectory.npz"]
    assert capsys.readouterr() == (
        f"{cfg.hash}  test_error 0.1235 ± 0.0123  train_error 0.500  forget_acc 0.250  diverged False\n"
        f"wrote {out / 'result.json'}\n", "")


def test_run_memory_budget_boundary(engine, tmp_path, capsys):
    # no --max-memory-gb: half of the available memory (1000 bytes, faked); a need equal to the budget runs
    engine.need = 500.0
    assert cli.main(["run", "--set", "n=10", "--out", str(tmp_path / "a")]) == 0
    assert engine.simulate[-1][1]["memory_bytes"] == 500.0 and engine.devices == ["cpu"]
    assert engine.simulate[-1][1]["device"] == "cpu"
    capsys.readouterr()
    engine.need = 500.5
    assert cli.main(["run", "--set", "n=10", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr() == ("", "error: REFUSED 10 500.5 500.0\n")
    assert len(engine.simulate) == 1 and not (tmp_path / "b").exists()
    engine.need = 2**30 + 1
    assert cli.main(["run", "--max-memory-gb", "1", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == f"error: REFUSED 20 {2**30 + 1} {float(2**30)}\n"
    engine.need = 2**30
    assert cli.main(["run", "--max-memory-gb", "1", "--out", str(tmp_path / "c")]) == 0
    assert engine.simulate[-1][1]["memory_bytes"] == 2**30


def test_run_folder_identity_force_and_outputs(engine, tmp_path, capsys, monkeypatch):
    import simulations.provenance as prov

    out = tmp_path / "one"
    assert cli.main(["run", "--out", str(out)]) == 0
    # same configuration, other numerics: only the configuration is compared, the folder is reused
    monkeypatch.setattr(prov, "numerics_version", lambda: "NUMV-2")
    assert cli.main(["run", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["identity"]["numerics_version"] == "NUMV-2"
    capsys.readouterr()
    # another configuration: refused without --force
    assert cli.main(["run", "--set", "n=10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} holds another run (run, other settings: config ")
    assert err.endswith("): add --force to replace it, or choose a new --out\n")
    # --force takes it over: its outputs are removed before the run, so a failed run leaves none of them
    engine.fail = ConfigError("engine failed")
    assert cli.main(["run", "--set", "n=10", "--force", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: engine failed\n"
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
    engine.fail = None
    assert cli.main(["run", "--set", "n=10", "--force", "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["n"] == 10


def test_run_print_config_exact_and_nothing_run(engine, tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["run", "--set", "d=123", "--print-config", "--device", "cuda:9", "--out", str(out)]) == 0
    cfg = SimConfig(**{**SMOKE_BASE, "d": 123})
    expected = json.dumps({"preset": "smoke", "hash": cfg.hash, "config": cfg.to_dict()}, indent=2)
    assert capsys.readouterr() == (expected + "\n", "")
    assert engine.simulate == [] and engine.devices == [] and not out.exists()


# ---------------------------------------------------------------------- __main__.py: sweep, with run_sweep faked


@pytest.fixture
def sweeps(monkeypatch):
    import simulations.sweep as sw

    calls = []

    def run_sweep(base, grid, out, **kwargs):
        calls.append((base, grid, out, kwargs))
        return {"runs": 7, "computed": 3}

    monkeypatch.setattr(sw, "run_sweep", run_sweep)
    return calls


def test_sweep_defaults_passed_exactly(sweeps, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", "--set", "n=10", "--no-preset-grid", "--grid", "seed=0,1", "--out", str(out)]) == 0
    (base, grid, where, kwargs), = sweeps
    assert base == {**SMOKE_BASE, "n": 10} and grid == {"seed": [0, 1]} and where == out
    assert kwargs == {"executor": "inprocess", "workers": 2, "device": "cpu", "save_coefficients": False,
                      "max_memory_gb": None, "chunk_runs": 2000, "executor_options": {"timeout_min": 60},
                      "on_other_grid": "refuse"}
    assert capsys.readouterr() == ('{"runs": 7, "computed": 3}\n', "sweep: 2 runs over seed[2]\n")
    assert cli.main(["sweep", "--no-preset-grid", "--out", str(out)]) == 0
    assert sweeps[-1][1] == {} and sweeps[-1][0] == SMOKE_BASE
    assert capsys.readouterr().err == "sweep: 1 runs over base\n"


def test_sweep_every_option_passed(sweeps, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", "--grid", "seed=0:1999:1", "--executor", "pool", "--workers", "3", "--cluster",
                     "local", "--slurm-partition", "gpu", "--timeout-min", "5", "--chunk-runs", "7",
                     "--save-coefficients", "--force", "--device", "cuda:1", "--max-memory-gb", "2.5",
                     "--out", str(out)]) == 0
    (base, grid, where, kwargs), = sweeps
    assert base == SMOKE_BASE
    assert grid == {"signal_strength": [0.5, 1.0, 2.0, 4.0], "optimizer+unlearn_optimizer": [("gd", "gd"),
                                                                                            ("sam", "sam")],
                    "seed": list(range(2000))}
    assert kwargs == {"executor": "pool", "workers": 3, "device": "cuda:1", "save_coefficients": True,
                      "max_memory_gb": 2.5, "chunk_runs": 7,
                      "executor_options": {"timeout_min": 5, "cluster": "local", "slurm_partition": "gpu"},
                      "on_other_grid": "replace"}
    assert capsys.readouterr().err == \
        "sweep: 16,000 runs over signal_strength[4], optimizer+unlearn_optimizer[2], seed[2000]\n"
    assert cli.main(["sweep", "--no-preset-grid", "--slurm-partition", "p", "--out", str(out)]) == 0
    assert sweeps[-1][3]["executor_options"] == {"timeout_min": 60, "slurm_partition": "p"}
    assert cli.main(["sweep", "--no-preset-grid", "--cluster", "debug", "--out", str(out)]) == 0
    assert sweeps[-1][3]["executor_options"] == {"timeout_min": 60, "cluster": "debug"}


def test_sweep_print_config_exact(sweeps, capsys):
    assert cli.main(["sweep", "--set", "rho=0.25", "--print-config"]) == 0
    expected = {"preset": "smoke", "runs": 16, "base": {**SMOKE_BASE, "rho": 0.25},
                "grid": {"signal_strength": [0.5, 1.0, 2.0, 4.0],
                         "optimizer+unlearn_optimizer": [["gd", "gd"], ["sam", "sam"]], "seed": [0, 1]}}
    assert capsys.readouterr() == (json.dumps(expected, indent=2) + "\n", "")
    assert sweeps == []
    # the base alone is validated: an invalid one is refused even when only printing
    assert cli.main(["sweep", "--set", "alpha=2", "--no-preset-grid", "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "alpha" in err and len(err.splitlines()) == 1
    assert cli.main(["sweep", "--no-preset-grid", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == {"preset": "smoke", "runs": 1, "base": SMOKE_BASE, "grid": {}}


def test_module_namespace():
    assert cli.positive_int is arguments.positive_int and re.match(r"^sam-unlearning ", cli.version_text())
