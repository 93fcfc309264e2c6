"""Every registered figure renders from (tiny) sweep results, and re-rendering gives the same bytes."""

from __future__ import annotations

import copy

import pytest

import figures.defaults as defaults
from figures.__main__ import main
from figures.registry import FIGURES

TINY_AXES = {"signal_strength": [0.5, 1.0, 2.0, 4.0], "d": [100, 400], "seed": [0], "n": [20, 40],
             "n+forget_size": [(20, 2), (40, 4)], "alpha": [0.2, 0.8]}


@pytest.fixture
def tiny_sweeps(monkeypatch):
    sweeps = copy.deepcopy(defaults.SWEEPS)
    for spec in sweeps.values():
        spec["base"] = {**spec["base"], "steps": 40, "unlearn_steps": 10, "n_test": 200}
        if spec["base"].get("sam_steps"):
            spec["base"]["sam_steps"] = 10
        spec["grid"] = {k: (TINY_AXES[k] if k in TINY_AXES else v) for k, v in spec["grid"].items()}
    monkeypatch.setattr(defaults, "SWEEPS", sweeps)
    import figures.__main__ as cli

    monkeypatch.setattr(cli, "SWEEPS", sweeps)
    return sweeps


def test_every_figure_renders_deterministically(tiny_sweeps, tmp_path, capsys):
    out, results = tmp_path / "out", tmp_path / "results"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= len(FIGURES)
    first = {p.name: p.read_bytes() for p in pngs}
    assert main(["--results", str(results), "--out", str(out), "--no-run"]) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))} == first


def test_unknown_figure_and_missing_results_are_refused(tmp_path, capsys):
    assert main(["--only", "no_such_figure", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err
    assert main(["--no-run", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def _protocol_summary(folder):
    import json

    rows, averages = [], []
    for k, (pre, opt) in enumerate((("sgd", "sgd"), ("sgd", "sam"), ("sam", "sgd"), ("sam", "sam"))):
        for method in ("neggrad", "sharp_minmax"):
            tows = []
            for j, forget in enumerate(("high", "mid", "low")):
                tow = 0.80 + 0.02 * k + 0.01 * j
                tows.append(tow)
                rows.append({"pretrain": pre, "forget": forget, "method": method, "optimizer": opt, "tow": tow})
            averages.append({"pretrain": pre, "method": method, "optimizer": opt, "avg_tow": sum(tows) / 3,
                             "avg_tow_mia": 0.9, "forget_sets": ["high", "mid", "low"]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"preset": "paper", "rows": rows, "averages": averages}))
    return folder


def test_empirical_figures_render_from_a_protocol_summary(tmp_path, capsys):
    protocol = _protocol_summary(tmp_path / "protocol")
    assert main(["--only", "empirical", "--protocol", str(protocol), "--out", str(tmp_path / "a")]) == 0
    assert main(["--only", "empirical", "--protocol", str(protocol), "--out", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["empirical_avg_tow.pdf", "empirical_avg_tow.png", "empirical_tow_by_forget_set.pdf",
                     "empirical_tow_by_forget_set.png"]
    for name in names:  # deterministic files
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    capsys.readouterr()
    assert main(["--only", "empirical", "--protocol", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "protocol summary" in capsys.readouterr().err
    (protocol / "summary.json").write_text('{"rows": [], "averages": []}')
    assert main(["--only", "empirical", "--protocol", str(protocol), "--out", str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err


def test_hatching_marks_exactly_the_cells_that_did_not_interpolate():
    import matplotlib.pyplot as plt
    import pandas as pd

    from figures.heatmaps import hatch_cells, premise_table

    df = pd.DataFrame({"d": [100, 100, 100, 100, 200, 200, 200, 200],
                       "signal_strength": [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0], "seed": [0, 1] * 4,
                       "train_error": [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0], "train_loss": [0.1] * 8,
                       "test_error": [0.2] * 8, "test_error_se": [0.01] * 8})
    ok = premise_table(df, "d")
    assert ok.loc[100, 2.0] == False and ok.values.sum() == 3  # noqa: E712 - one failing seed hatches the cell
    fig, ax = plt.subplots()
    assert hatch_cells(ax, ok) == 1
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_xy() == (1, 0)  # row of d=100, column of ||mu|| = 2
    plt.close(fig)
