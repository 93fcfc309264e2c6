"""The results API: ``simulations.load`` (a sweep's or a run's rows) and ``empirical.load`` (a protocol's summary
rows, or a run's record and metrics), checked against the files they read."""

from __future__ import annotations

import csv
import json
import math

import pytest
from _helpers import TINY

import empirical
import simulations
from simulations.config import FIELD_NAMES, FIELD_TYPES
from simulations.sweep import expand_grid, run_sweep

BASE = {**TINY, "steps": 10, "n_test": 100, "log_points": 4}
GRID = {"signal_strength": [0.5, 2.0], "optimizer": ["gd", "sam"], "seed": [0, 1]}  # 8 runs


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_simulations_load_gives_the_rows_of_results_csv_typed(tmp_path):
    run_sweep(BASE, GRID, tmp_path)
    rows, raw = simulations.load(tmp_path), _csv(tmp_path / "results.csv")
    configs = expand_grid(BASE, GRID)
    assert isinstance(rows, list) and len(rows) == len(raw) == len(configs) == 8
    for row, cells, cfg in zip(rows, raw, configs):
        assert list(row) == list(cells)  # every column, in the file's order
        assert row["hash"] == cells["hash"] == cfg.hash
        assert {k: row[k] for k in FIELD_NAMES} == cfg.to_dict()  # config fields typed as SimConfig's
        assert all(type(row[k]) is FIELD_TYPES[k] for k in FIELD_NAMES)
        assert row["test_error"] == float(cells["test_error"]) and isinstance(row["test_error"], float)
        assert row["forget_acc"] == float(cells["forget_acc"])
        assert row["diverged"] is (cells["diverged"] == "True") is False
        assert row["numerics_version"] == cells["numerics_version"]
    sam = [r["test_error"] for r in rows if r["optimizer"] == "sam" and r["signal_strength"] == 2.0]
    assert sam == [float(c["test_error"]) for c in raw if c["optimizer"] == "sam" and c["signal_strength"] == "2.0"]


def test_simulations_load_reads_a_run_folder(tmp_path, capsys):
    from simulations.__main__ import main

    out = tmp_path / "one"
    assert main(["run", "--preset", "smoke", "--set", "n_test=200", "--set", "steps=20", "--set", "d=77",
                 "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    [row] = simulations.load(out)
    assert row["hash"] == record["hash"] and row["d"] == 77 and row["steps"] == 20
    assert row["test_error"] == record["metrics"]["test_error"] and row["forget_acc"] == record["metrics"]["forget_acc"]


def test_simulations_load_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(simulations.ConfigError, match="results.csv"):
        simulations.load(tmp_path)


def test_read_csv_keeps_missing_metrics_as_none_and_hashes_as_text(tmp_path):
    from simulations.store import read_csv

    (tmp_path / "results.csv").write_text("hash,d,optimizer,test_error,pretrain_test_error,diverged\n"
                                          "1234567890123456,100,sam,0.25,,False\n"
                                          "1e10000000000000,200,gd,nan,0.5,True\n")
    a, b = read_csv(tmp_path / "results.csv")
    assert a == {"hash": "1234567890123456", "d": 100, "optimizer": "sam", "test_error": 0.25,
                 "pretrain_test_error": None, "diverged": False}
    assert b["hash"] == "1e10000000000000" and math.isnan(b["test_error"]) and b["pretrain_test_error"] == 0.5
    assert b["diverged"] is True


def _metrics(tow: float, mia: float) -> dict:
    side = {"accuracy": {"retain": 99.0, "forget": 90.0, "test": 88.5}, "mia_efficacy": {"confidence": mia},
            "entanglement": {"e_var": 2.5, "e_var_authors_units": 0.002, "e_wp": 0.75}}
    return {"unlearned": side, "retrained": side, "tow": tow, "tow_mia": tow / 2, "avg_gap": 1.25,
            "tow_signed_authors_code": tow}


def test_empirical_load_gives_the_summary_rows_of_a_protocol_folder(tmp_path):
    from empirical.protocol import _row, make_plan, write_summary

    plan = make_plan(tmp_path, "smoke", "sgd", "high,low", "neggrad", "sgd,sam")
    rows = [_row(*job, _metrics(0.25 * (i + 1), 0.1 * i)) for i, job in enumerate(plan.unlearn_jobs())]
    write_summary(tmp_path, plan, rows)
    loaded = empirical.load(tmp_path)
    assert loaded == rows and len(loaded) == 4
    table = _csv(tmp_path / "summary.csv")  # the same numbers as the CSV next to it
    for row, cells in zip(loaded, table):
        assert (row["pretrain"], row["forget"], row["method"], row["optimizer"]) == \
            (cells["pretrain"], cells["forget"], cells["method"], cells["optimizer"])
        assert row["tow"] == float(cells["tow"]) and row["mia"] == float(cells["mia"])
    assert loaded[3]["forget"] == "low" and loaded[3]["optimizer"] == "sam" and loaded[3]["tow"] == 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["units"]["tow"].startswith("fraction") and summary["units"]["retain"] == "percent"


def test_empirical_load_reads_a_run_record_and_its_metrics(tmp_path):
    from test_empirical_trainer import tiny, write_fixture

    from empirical.trainer import train

    root = str(write_fixture(tmp_path / "data"))
    record = train(tiny(root, epochs=1), tmp_path / "run", progress=False)
    [row] = empirical.load(tmp_path / "run")
    assert row["config"]["width"] == 8 and row["config"] == record["config"]
    assert row["test_acc"] == record["test_acc"] and row["metrics"] is None
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"tow": 0.5}))
    assert empirical.load(tmp_path / "run")[0]["metrics"] == {"tow": 0.5}
    with pytest.raises(simulations.ConfigError, match="summary.json"):
        empirical.load(tmp_path / "data")
