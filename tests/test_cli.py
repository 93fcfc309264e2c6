"""Command line and bad inputs: one clear error (exit status 2, message on stderr), nothing already written is lost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations import ConfigError, SimConfig
from simulations.__main__ import main
from simulations.sweep import run_sweep

SMALL = ["--set", "n=10", "--set", "d=30", "--set", "m=3", "--set", "steps=5", "--set", "unlearn_steps=3",
         "--set", "n_test=100"]


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_sweep(tmp_path):
    """An output folder holding the results of a finished small sweep."""
    out = tmp_path / "sweep"
    assert main(["sweep", *SMALL, "--no-preset-grid", "--grid", "seed=0,1", "--out", str(out)]) == 0
    assert (out / "results.csv").exists() and list((out / "cache").glob("chunk-*.json"))
    return out


def _refused(capsys, argv, *words):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


BAD_SWEEPS = {
    "unknown option": (["--set", "foo=1"], ("foo", "unknown option")),
    "unknown grid key": (["--grid", "foo=1,2"], ("foo", "unknown grid key")),
    "negative rho": (["--set", "rho=-0.1"], ("rho",)),
    "negative rho on the grid": (["--grid", "rho=0.1,-1"], ("rho", ">= 0")),
    "negative sigma_p": (["--set", "sigma_p=-1"], ("sigma_p",)),
    "negative lr": (["--set", "lr=-0.5"], ("lr",)),
    "forget set larger than the data": (["--set", "forget_size=11"], ("forget_size", "n=10")),
    "forget set larger on the grid": (["--grid", "forget_size=1,50"], ("forget_size",)),
    "alpha above 1": (["--set", "alpha=1.5"], ("alpha", "[0, 1]")),
    "alpha below 0": (["--grid", "alpha=0.5,-0.1"], ("alpha",)),
    "adaptive SAM on the gram backend": (["--set", "sam_adaptive=true"], ("sam_adaptive", "backend=weights")),
    "tiny memory budget": (["--max-memory-gb", "0.0001"], ("--max-memory-gb",)),
    "huge grid": (["--grid", "seed=0:99999:1", "--grid", "lr=0.001:100:0.001"], ("runs", "split")),
    "bad value type": (["--set", "n=ten"], ("n", "int")),
    "bad range": (["--grid", "d=100:10"], ("d",)),
}


@pytest.mark.parametrize("case", list(BAD_SWEEPS))
def test_refused_sweep_leaves_existing_results_untouched(case, finished_sweep, capsys):
    extra, words = BAD_SWEEPS[case]
    before = _snapshot(finished_sweep)
    capsys.readouterr()
    _refused(capsys, ["sweep", *SMALL, "--no-preset-grid", *extra, "--out", str(finished_sweep)], *words)
    after = _snapshot(finished_sweep)
    assert after == before


@pytest.mark.parametrize("extra,words", [
    (["--set", "foo=1"], ("foo",)),
    (["--set", "rho=-1"], ("rho",)),
    (["--set", "forget_size=30"], ("forget_size",)),
    (["--set", "alpha=2"], ("alpha",)),
    (["--set", "sam_adaptive=1"], ("backend=weights",)),
    (["--set", "unlearn_method=bogus"], ("unlearn_method", "neggrad")),
    (["--preset", "nope"], ("nope", "smoke")),
])
def test_refused_run_writes_nothing(extra, words, tmp_path, capsys):
    out = tmp_path / "one"
    _refused(capsys, ["run", *SMALL, *extra, "--out", str(out)], *words)
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_unwritable_output_folder(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    out = blocker / "sub"  # a folder under a regular file cannot be created, even by root
    argv = [command, *SMALL, "--out", str(out)] + (["--no-preset-grid"] if command == "sweep" else [])
    msg = _refused(capsys, argv, "--out")
    assert str(out) in msg
    assert blocker.read_text() == "keep me"


def test_unknown_command_line_flag_exits_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--bogus", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_config_errors_in_the_api():
    with pytest.raises(ConfigError, match="rho"):
        SimConfig(rho=-1.0)
    with pytest.raises(ConfigError, match="foo"):
        SimConfig().replace(foo=1)
    with pytest.raises(ConfigError, match="forget_size"):
        SimConfig(n=5, forget_size=6)
    with pytest.raises(ConfigError, match="backend=weights"):
        SimConfig(backend="gram", sam_adaptive=True)
    with pytest.raises(ConfigError, match="alpha"):
        SimConfig(alpha=-0.01)
    SimConfig(backend="weights", sam_adaptive=True, alpha=0.0, forget_size=20)  # the edges are allowed
    assert SimConfig(lr=1).hash == SimConfig(lr=1.0).hash  # ints and floats hash alike


def test_refused_sweep_through_the_api_writes_nothing(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError):
        run_sweep({"n": 10, "d": 30}, {"rho": [0.1, -1.0]}, out)
    with pytest.raises(ConfigError):
        run_sweep({"n": 10, "d": 30}, {"seed": list(range(10))}, out, max_memory_gb=1e-6)
    assert not out.exists()


def test_memory_refusal_of_a_later_cell_happens_before_anything_is_written(finished_sweep):
    """Regression: only the grid's first cell used to be sized up front, so a later cell that cannot fit was
    refused after manifest.json had been overwritten."""
    before = _snapshot(finished_sweep)
    base = {"backend": "weights", "n": 10, "m": 3, "steps": 5, "n_test": 100}
    with pytest.raises(ConfigError, match="--max-memory-gb"):
        run_sweep(base, {"d": [30, 10**8]}, finished_sweep, max_memory_gb=1.0)
    assert _snapshot(finished_sweep) == before


def test_memory_refusal_message_is_consistent(tmp_path, capsys):
    """Regression: a small budget used to read 'needs about 0.0 GiB (budget 0.0 GiB): use backend=gram' for a
    configuration already on the gram backend."""
    msg = _refused(capsys, ["sweep", *SMALL, "--no-preset-grid", "--max-memory-gb", "0.0001",
                            "--out", str(tmp_path / "x")], "--max-memory-gb")
    assert "0.0 GiB (budget 0.0 GiB)" not in msg
    assert "use backend=gram" not in msg


def test_run_writes_result_and_trajectory(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["run", "--preset", "smoke", "--set", "n_test=500", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    for key in ("config", "hash", "metrics", "provenance"):
        assert key in record
    cfg = SimConfig(**record["config"])
    assert cfg.hash == record["hash"]
    assert cfg.n_test == 500 and cfg.unlearn_method == "neggrad"  # the smoke preset plus the override
    for key in ("test_error", "test_error_se", "train_loss", "forget_acc", "diverged", "pretrain_test_error"):
        assert key in record["metrics"]
    assert 0 <= record["metrics"]["test_error"] <= 1
    assert {"code_version", "libraries", "device"} <= set(record["provenance"])
    with np.load(out / "trajectory.npz") as z:
        assert {"step", "train_loss", "signal_coef_max", "active_noise_fraction", "kappa", "zeta_bar",
                "zeta"} <= set(z.files)
        assert z["step"][-1] == cfg.steps + cfg.unlearn_steps
        assert z["kappa"].shape == (len(z["step"]), 2, cfg.m)
    assert record["hash"] in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


def test_presets_command_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("smoke", "quick", "paper"):
        assert name in out
