"""Faults, tried as a user meets them: a sweep killed mid-run (SIGKILL, SIGTERM) on the command line, in-process and
with a process pool, then run again. Nothing is lost, nothing half-written is trusted, no process is left behind.

Every test here has a one-line docstring: ``docs/reliability.md`` lists them (``python tests/reliability_cases.py``).
The sweeps run as subprocesses (``python -m simulations sweep --preset smoke``) with one torch thread each; "mid-run"
is the moment the first cache chunk appears, polled for, never a fixed sleep.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny tensors: one thread is ~10x faster
SMOKE = ["--preset", "smoke", "--chunk-runs", "2"]  # 16 runs in 8 chunks of 2
RUNS, CHUNKS = 16, 8
POOL = ["--executor", "pool", "--workers", "2"]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc and POSIX signals")


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "simulations", "sweep", *SMOKE, *extra, "--out", str(out)]


def _sweep(out: Path, *extra: str) -> dict:
    """Run a sweep to its end; its summary."""
    done = subprocess.run(_command(out, *extra), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _start_until_first_chunk(out: Path, *extra: str) -> subprocess.Popen:
    """Start a sweep and return once its first cache chunk is complete (a chunk's json is written last)."""
    proc = subprocess.Popen(_command(out, *extra), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any((out / "cache").glob("chunk-*.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"the sweep wrote no chunk (status {proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.01)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(stat.parent.name))
    return kids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _left_alive(pids: list[int], within_s: float) -> list[int]:
    """The processes of ``pids`` still running after ``within_s`` seconds; they are killed then, so that a failing
    test leaves nothing behind either."""
    deadline = time.monotonic() + within_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def _table(folder: Path) -> tuple[list[str], list[list[str]]]:
    """``results.csv`` as its header and rows, without the ``wall_s`` column: every other field is compared as the
    exact text written. ``wall_s`` is a measured time (a batch's seconds over its size), different in every run."""
    rows = list(csv.reader(io.StringIO((folder / "results.csv").read_text(), newline="")))
    keep = [i for i, name in enumerate(rows[0]) if name != "wall_s"]
    assert len(keep) == len(rows[0]) - 1
    header, *body = [[row[i] for i in keep] for row in rows]
    return header, body


def _leftovers(folder: Path) -> list[str]:
    """Files a finished run must not leave: a lock, temporaries of atomic writes, a chunk's npz without its json."""
    found = [p.name for p in folder.rglob(".*") if p.name == ".lock" or p.name.endswith(".tmp")]
    found += [p.name for p in (folder / "cache").glob("chunk-*.npz") if not p.with_suffix(".json").exists()]
    return found


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A clean, uninterrupted in-process run of the sweep every test interrupts."""
    out = tmp_path_factory.mktemp("clean") / "sweep"
    summary = _sweep(out)
    assert summary["computed"] == RUNS
    return out


@pytest.mark.parametrize("executor", ["inprocess", "pool"])
def test_sigkill_mid_sweep_then_rerun_equals_a_clean_run(executor, clean, tmp_path):
    """SIGKILL of a sweep mid-run (in-process or pool), then the same command again: results.csv equals a clean
    run's in every byte of every column but the measured wall_s."""
    extra = POOL if executor == "pool" else []
    out = tmp_path / "sweep"
    proc = _start_until_first_chunk(out, *extra)
    family = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _left_alive(family, 5), "workers outlived their killed parent"
    assert not (out / "results.csv").exists(), "the sweep was not killed mid-run"
    assert (out / ".lock").exists()  # left by the dead writer; the rerun takes it over
    summary = _sweep(out, *extra)
    assert summary["runs"] == RUNS and summary["computed"] > 0 and summary["skipped"] > 0, summary
    assert summary["computed"] + summary["skipped"] == RUNS
    assert _table(out) == _table(clean)
    assert not _leftovers(out)


def test_sigterm_of_a_pool_parent_stops_its_workers_and_keeps_what_is_done(clean, tmp_path):
    """SIGTERM of a pool sweep's parent: it exits (status 143) within seconds and no worker outlives it; results.csv
    lists every cell in the cache, each equal to a clean run's, the lock is released and nothing is half-written."""
    out = tmp_path / "sweep"
    proc = _start_until_first_chunk(out, *POOL)
    family = _children(proc.pid)
    assert family, "the pool has no workers"
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _stop(proc)
        pytest.fail("the pool parent did not exit within 10 s of SIGTERM")
    finally:
        orphans = _left_alive(family, 5)
    err = proc.stderr.read()
    assert not orphans, f"workers outlived their parent: {orphans}"
    assert status == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "SIGTERM" in err and "resume" in err, err
    header, rows = _table(out)
    clean_header, clean_rows = _table(clean)
    assert header == clean_header and 0 < len(rows) < RUNS
    assert all(row in clean_rows for row in rows)
    cached = sum(len(json.loads(p.read_text())["rows"]) for p in (out / "cache").glob("chunk-*.json"))
    assert len(rows) == cached  # the resume from here is the same as after SIGKILL (test above)
    assert not _leftovers(out)


def test_a_local_protocol_stage_exits_when_the_protocol_is_killed(tmp_path):
    """A protocol stage run by submitit's local executor (its parent is submitit's controller) watches the protocol
    process that made the call: SIGKILL of that process leaves no stage running. Control: while the owner lives, the
    stage keeps running."""
    from empirical.cluster import StageCall

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    script = ("import sys, time, pickle; from simulations.executors import watch_owner; "
              "call = pickle.loads(bytes.fromhex(sys.argv[1])); watch_owner(*call.owner); print('ready', flush=True); "
              "time.sleep(120)")
    import pickle

    call = StageCall({}, owned=True)
    from simulations.executors import process_start

    call.owner = (owner.pid, process_start(owner.pid))  # as if the owner had made the call
    assert call.owner[1] is not None and StageCall({}).owner is None
    job = subprocess.Popen([sys.executable, "-c", script, pickle.dumps(call).hex()], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "ready"  # watching (however long the imports took)
        time.sleep(1.5)
        assert job.poll() is None  # the owner lives: the stage goes on
        owner.kill()
        owner.wait()
        assert job.wait(timeout=60) == 1  # the owner is gone: the stage stops within a poll or two
    finally:
        for p in (owner, job):
            if p.poll() is None:
                p.kill()
