"""The run-folder contract: every bad input of ``tests/reliability_cases.py`` on every command line is one line,
exit status 2, and leaves ``--out`` as it was; faults (corrupt chunks, code changes, concurrent writers, a killed
pool parent, a full disk) lose nothing and reuse nothing silently."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from reliability_cases import CASES, SW, markdown
from test_empirical_trainer import write_fixture

import simulations.provenance as provenance
from simulations.errors import ConfigError, OutputError
from simulations.runfolder import LOCK_FILE, RunFolder
from simulations.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
TINY_BASE = {"n": 10, "d": 30, "m": 3, "steps": 5, "unlearn_steps": 3, "n_test": 100, "unlearn_method": "neggrad"}


def _main(cli: str):
    if cli == "simulations":
        from simulations.__main__ import main
    elif cli == "empirical":
        from empirical.__main__ import main
    elif cli == "theory":
        from theory.__main__ import main
    else:
        from figures.__main__ import main
    return main


def _snapshot(folder: Path):
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Finished folders of each kind, made once; every case works on a copy."""
    from empirical.__main__ import main as empirical
    from simulations.__main__ import main as simulations

    base = tmp_path_factory.mktemp("made")
    data = str(write_fixture(base / "data").parent)
    folders = {"sweep": base / "sweep", "run": base / "run", "pretrain": base / "pre", "unlearn": base / "unlearn"}
    assert simulations([*SW, "--out", str(folders["sweep"])]) == 0
    assert simulations(["run", *SW[1:-3], "--out", str(folders["run"])]) == 0
    assert empirical(["pretrain", "--preset", "smoke", "--data-root", data, "--set", "device=cpu", "--set",
                      "epochs=1", "--out", str(folders["pretrain"])]) == 0
    assert empirical(["unlearn", "--from", str(folders["pretrain"]), "--method", "neggrad", "--set", "epochs=1",
                      "--set", "device=cpu", "--out", str(folders["unlearn"])]) == 0
    return {"data": data, **folders}


def _fill(arg: str, paths: dict) -> str:
    for key, value in paths.items():
        arg = arg.replace(key, value)
    return arg


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, made, tmp_path, capsys):
    cli, folder, argv, words, _ = CASES[case]
    out = tmp_path / "out"
    if folder in ("sweep", "run", "pretrain", "unlearn"):
        shutil.copytree(made[folder], out)
    elif folder.startswith("locked"):
        if folder == "locked":
            shutil.copytree(made["sweep"], out)
        out.mkdir(exist_ok=True)
        (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                 "command": "another writer", "since": "now"}))
    argv = [_fill(a, {"OUT": str(out), "PRE": str(made["pretrain"]), "DATA": made["data"],
                      "MISSING": str(tmp_path / "missing")}) for a in argv]
    if "--out" not in argv and argv[0] != "evaluate":
        argv += ["--out", str(out)]
    before = _snapshot(out)
    capsys.readouterr()
    try:
        code = _main(cli)(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(out) == before


def test_the_table_is_large_and_docs_are_generated_from_it():
    assert len(CASES) >= 60
    assert {c[0] for c in CASES} == {"simulations", "empirical", "theory", "figures"}
    assert (ROOT / "docs" / "reliability.md").read_text() == markdown(), \
        "docs/reliability.md is stale: python tests/reliability_cases.py"


# ------------------------------------------------------------------------------------------------ faults
def _results(folder: Path) -> list[str]:
    return (folder / "results.csv").read_text().splitlines()


def _numbers(folder: Path) -> list[dict]:
    """The rows of results.csv without their wall-clock time."""
    import csv

    with open(folder / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)]


def test_corrupt_or_truncated_chunks_are_recomputed(tmp_path):
    """A corrupt or truncated cache chunk (either file, or a json that is not a chunk) is removed and recomputed."""
    grid = {"seed": [0, 1, 2]}
    run_sweep(TINY_BASE, grid, tmp_path, chunk_runs=1)
    clean = _numbers(tmp_path)
    chunks = sorted((tmp_path / "cache").glob("chunk-*.json"))
    assert len(chunks) == 3
    chunks[0].write_text(chunks[0].read_text()[:40])  # truncated json
    npz = chunks[1].with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-10])  # truncated npz
    chunks[2].write_text('{"a": 1}')  # not a chunk at all
    again = run_sweep(TINY_BASE, grid, tmp_path, chunk_runs=1)
    assert again["computed"] == 3
    assert _numbers(tmp_path) == clean
    assert len(list((tmp_path / "cache").glob("chunk-*.json"))) == 3  # the damaged ones were removed
    assert run_sweep(TINY_BASE, grid, tmp_path, chunk_runs=1)["computed"] == 0


def test_a_change_of_the_numerics_is_never_reused(tmp_path, monkeypatch):
    """A change of the numerical code recomputes cached cells instead of reusing them; every row of results.csv
    carries the numerics_version that computed it."""
    run_sweep(TINY_BASE, {"seed": [0, 1]}, tmp_path)
    header = _results(tmp_path)[0].split(",")
    assert "numerics_version" in header
    monkeypatch.setattr(provenance, "_NUMERICS", "edited-code0")
    summary = run_sweep(TINY_BASE, {"seed": [0, 1, 2]}, tmp_path)
    assert summary["computed"] == 3 and summary["recomputed"] == 2
    col = header.index("numerics_version")
    assert {line.split(",")[col] for line in _results(tmp_path)[1:]} == {"edited-code0"}


def test_a_cell_named_twice_is_computed_and_listed_once(tmp_path):
    """A cell the grid names twice is computed and listed once."""
    summary = run_sweep(TINY_BASE, {"d": [30, 30, 40]}, tmp_path)
    assert summary["runs"] == summary["computed"] == 2
    assert len(_results(tmp_path)) == 3


def test_one_writer_at_a_time_and_a_dead_writers_lock_is_taken_over(tmp_path):
    """A second writer of a folder is refused, naming the holder, while the first holds it; a lock left by a dead
    process is taken over."""
    with RunFolder(tmp_path / "x", "sweep", {"a": 1}):
        info = json.loads((tmp_path / "x" / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["command"]
        code = "from simulations.runfolder import RunFolder\nwith RunFolder({!r}, 'sweep', {{'a': 1}}): pass"
        other = subprocess.run([sys.executable, "-c", code.format(str(tmp_path / "x"))], capture_output=True,
                               text=True, cwd=ROOT)
        assert other.returncode != 0 and "in use by pid" in other.stderr
    assert not (tmp_path / "x" / LOCK_FILE).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "x" / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with RunFolder(tmp_path / "x", "sweep", {"a": 1}) as folder:
        folder.begin()
    assert not (tmp_path / "x" / LOCK_FILE).exists()


def test_a_refusal_leaves_no_folder_behind(tmp_path):
    """A refusal after the checks began leaves no folder behind, not even an empty one."""
    target = tmp_path / "a" / "b" / "c"
    with pytest.raises(ConfigError):
        with RunFolder(target, "sweep", {}):
            raise ConfigError("refused after the checks began")
    assert not (tmp_path / "a").exists()


def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A write that fails (disk full) is one line naming the path and the fix, and leaves the target as it was."""
    from simulations import atomic

    target = tmp_path / "results.csv"
    target.write_text("old")

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OutputError, match="No space left on device.*free disk space"):
        atomic.atomic_write_bytes(target, b"new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_splits_know_their_data(tmp_path):
    """split.npz records its dataset, training-set size and an index checksum; a mismatch or an edit is refused."""
    import numpy as np

    from empirical.data import DataError, check_split, load_split, save_split

    idx = dict(train=np.arange(8), val=np.arange(8, 10), forget=np.arange(2), retain=np.arange(2, 8), seed=0)
    path = save_split(tmp_path / "split.npz", **idx, dataset="cifar10", n_train=10)
    split = load_split(path)
    assert split["dataset"] == "cifar10" and split["n_train"] == 10 and len(split["indices_sha256"]) == 64
    with pytest.raises(DataError, match="cifar100"):
        check_split(split, 10, dataset="cifar100")
    with pytest.raises(DataError, match="12"):
        check_split(split, 12, dataset="cifar10")
    z = dict(np.load(path))
    z["forget"] = np.array([0, 3])
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(DataError, match="checksum"):
        load_split(tmp_path / "bad.npz")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX process groups")
def test_pool_workers_exit_with_their_killed_parent(tmp_path):
    """SIGKILL of a pool sweep's parent (a library call): no worker outlives it by more than 10 s."""
    script = textwrap.dedent(f"""
        from simulations.sweep import run_sweep
        run_sweep({{"n": 20, "d": 2000, "m": 10, "steps": 4000, "n_test": 100}}, {{"seed": list(range(40))}},
                  {str(tmp_path / 'pool')!r}, executor="pool", workers=2, chunk_runs=1, progress=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    workers: list[int] = []
    alive: list[int] = []
    try:
        # wait until the pool computes (a chunk is written: its workers are past their initializer), however slow
        # the machine is; then kill the parent outright
        deadline = time.time() + 300
        while time.time() < deadline and not list((tmp_path / "pool").rglob("chunk-*.json")):
            assert parent.poll() is None, "the sweep ended before it was killed"
            time.sleep(0.5)
        listing = subprocess.run(["ps", "-o", "pid=,ppid=", "-A"], capture_output=True, text=True).stdout
        workers = [int(p) for p, pp in (line.split() for line in listing.splitlines()) if int(pp) == parent.pid]
        assert workers, "the pool never started"
        parent.kill()
        parent.wait()
        deadline = time.time() + 10
        alive = workers
        while alive and time.time() < deadline:
            time.sleep(0.25)
            alive = [w for w in workers if _running(w)]
        assert not alive, f"orphaned workers {alive}"
    finally:  # never leave a process behind, even when the test fails
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for w in workers:
            if _running(w):
                os.kill(w, 9)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_save_coefficients_recomputes_the_cached_cells_stored_without_them(tmp_path, capsys):
    """--save-coefficients over cells cached without coefficients recomputes just those cells, with them (the
    numbers are the same), instead of ignoring the flag; cells cached with coefficients serve both kinds of run."""
    from simulations.store import COEFFICIENT_KEYS, ResultStore
    from simulations.sweep import expand_grid

    run_sweep(TINY_BASE, {"seed": [0, 1]}, tmp_path, chunk_runs=1)
    before = _numbers(tmp_path)
    capsys.readouterr()
    summary = run_sweep(TINY_BASE, {"seed": [0, 1, 2]}, tmp_path, chunk_runs=1, save_coefficients=True)
    err = capsys.readouterr().err
    assert summary["computed"] == 3 and summary["recomputed"] == 2 and summary["skipped"] == 0, summary
    assert "--save-coefficients: 2 cached cell(s)" in err, err
    assert _numbers(tmp_path)[:2] == before
    import numpy as np

    cache = tmp_path / "cache"
    def bare_chunk(path):
        with np.load(path) as z:
            return "kappa" not in z.files

    bare = [p for p in sorted(cache.glob("chunk-*.npz")) if bare_chunk(p)]
    assert len(bare) == 2  # the old chunks stay; the store must prefer the new ones whatever the order of names
    for path, stem in zip(bare, ("chunk-000000000000", "chunk-ffffffffffff")):
        path.rename(cache / f"{stem}.npz")
        path.with_suffix(".json").rename(cache / f"{stem}.json")
    store = ResultStore(cache)
    for cfg in expand_grid(TINY_BASE, {"seed": [0, 1, 2]}):
        traj = store.trajectory(cfg.hash)
        assert all(traj[k].shape[0] == traj["step"].shape[0] > 1 for k in COEFFICIENT_KEYS), cfg.seed
    assert not store.without_coefficients(c.hash for c in expand_grid(TINY_BASE, {"seed": [0, 1, 2]}))
    assert run_sweep(TINY_BASE, {"seed": [0, 1, 2]}, tmp_path, save_coefficients=True)["computed"] == 0
    assert run_sweep(TINY_BASE, {"seed": [0, 1, 2]}, tmp_path)["computed"] == 0
    assert "coefficients" not in capsys.readouterr().err
