"""A rehearsal of the GPU machine's layout on a CPU (docs/protocol.md#data-files-and-the-gpu-machine): a copy of the
repository with no ``../shared`` beside it, the data in the git-ignored ``.data/`` inside it,
``python -m empirical.gpu_check --smoke``; what lands in ``$OUT`` must be what a device call can bring back (at most 8
small JSON/CSV/PNG files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATA_FILES = ("cifar10-jpg.tar.xz", "cifar10-cscores.npz")


@pytest.mark.skipif(not all((SHARED / f).is_file() for f in DATA_FILES), reason="needs ../shared/data (CIFAR-10)")
def test_gpu_check_rehearses_the_device_layout(tmp_path):
    copy = tmp_path / "machine" / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("empirical", "simulations"):
        shutil.copytree(REPO / part, copy / part, ignore=ignore)
    assert not (copy.parent / "shared").exists()
    (copy / ".data").mkdir()
    for name in DATA_FILES:
        shutil.copy(SHARED / name, copy / ".data" / name)
    out = tmp_path / "OUT"
    env = {k: v for k, v in os.environ.items() if k not in ("SAM_UNLEARNING_DATA", "PYTHONPATH")}
    env.update(OUT=str(out), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "empirical.gpu_check", "--smoke", "--bench-steps", "0"], cwd=copy,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 1 <= len(files) <= 8 and all(p.suffix in (".json", ".csv", ".png") for p in files), files
    assert all(p.stat().st_size < 2**20 for p in files)
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["errors"] == {} and "cifar10-jpg" in result["data"]["source"]
    assert str(copy / ".data") in result["data"]["source"]  # found in the repository's ignored folder
    assert set(result["sam_bf16_correction_cosine"]) >= {"sam_rho0.02", "sam_rho0.1", "asam_rho0.1"}
    assert {"pretrain_sgd", "pretrain_sam", "retrain_high", "retrain_low"} <= set(result["runs"])
    assert all(0 <= r["test_acc"] <= 1 for r in result["runs"].values())
    assert len(result["summary"]) == 8 and "pretrain_sgd" in result["stage_seconds"]
    rows = (out / "gpu_check_summary.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 16 and "e_var_authors_units" in rows[0]
    scratch = Path(result["scratch"])
    assert (scratch / "protocol" / "pretrain_sgd" / "checkpoint.pt").is_file()  # the heavy files stay there
    shutil.rmtree(scratch, ignore_errors=True)


def test_data_are_searched_in_the_environment_then_shared_then_the_repository(monkeypatch, tmp_path):
    from empirical import data

    monkeypatch.delenv("SAM_UNLEARNING_DATA", raising=False)
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo" / ".data")
    assert data.data_root_candidates() == [tmp_path / "shared" / "data", tmp_path / "repo" / ".data"]
    (tmp_path / "repo" / ".data").mkdir(parents=True)
    assert data.default_data_root() == tmp_path / "repo" / ".data"  # no ../shared: the ignored folder
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert data.default_data_root() == tmp_path / "shared" / "data"
    monkeypatch.setenv("SAM_UNLEARNING_DATA", str(tmp_path / "nowhere"))
    assert data.default_data_root() == tmp_path / "nowhere"  # taken as given, so a wrong one is reported
    assert "/.data/" in (REPO / ".gitignore").read_text().split()
