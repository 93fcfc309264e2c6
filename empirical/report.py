"""The result table of a protocol folder, in the paper's shape, from the run's own records (docs/protocol.md#metrics).

    python -m empirical report --protocol results/protocol-cpu --out docs/results/cpu

Writes ``summary.json`` (the protocol's rows and averages, the label, the pretrained models' accuracies, the
settings and the wall time read from the records), ``summary.csv`` (one row per unlearning run) and ``summary.md``:
methods × unlearning optimizer {SGD, SAM} for each pretraining optimizer, with ToW on F_low / F_mid / F_high, AVG ToW,
AVG ToW-MIA, AVG MIA efficacy and AVG E_Var (raw ratio and the authors' units), plus the retrain references and what
the table says about the paper's empirical claims. Then the figures (:mod:`figures.empirical`) next to them.
Every number comes from the folder's ``record.json`` / ``metrics.json`` files; nothing is trained here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.errors import ConfigError

from .protocol import LEVELS, ROW_KEYS

MARGIN = 0.5  # ToW points (×100): a difference smaller than this is "cannot decide" (one seed, no error bars)


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({type(exc).__name__}); finish the protocol first") from None


def collect(protocol: Path) -> dict[str, Any]:
    """The protocol's summary plus what the records say about its models and its cost."""
    protocol = Path(protocol)
    summary = _read(protocol / "summary.json")
    if not summary.get("rows"):
        raise ConfigError(f"{protocol / 'summary.json'} has no unlearning runs")
    models, seconds = {}, {"pretrain": 0.0, "retrain": 0.0, "unlearn": 0.0}
    for folder in sorted(protocol.glob("pretrain_*")) + sorted(protocol.glob("retrain_*")):
        rec = _read(folder / "record.json")
        models[folder.name] = {k: 100 * rec[k] for k in ("train_acc", "val_acc", "test_acc", "retain_acc",
                                                          "forget_acc")}
        models[folder.name]["epochs"] = rec["epochs"]
        seconds[rec["stage"]] += sum(rec["epoch_seconds"])
    for folder in sorted((protocol / "unlearn").glob("*")):
        if (folder / "record.json").is_file():
            seconds["unlearn"] += sum(_read(folder / "record.json")["epoch_seconds"])
    first = _read(next(iter(sorted(protocol.glob("pretrain_*")))) / "record.json")
    cfg = first["config"]
    retrain = {}
    for level in LEVELS:
        metrics = next((_read(p) for p in sorted((protocol / "unlearn").glob(f"*_{level}_*/metrics.json"))), None)
        if metrics:
            ref = metrics["retrained"]
            retrain[level] = {**{k: ref["accuracy"][k] for k in ("retain", "forget", "test")},
                              "mia": ref["mia_efficacy"]["confidence"], "e_var": ref["entanglement"]["e_var"]}
    label = (f"CPU-scale: ResNet-18 width {cfg['width']}, {cfg['epochs']} epochs, C-score proxy; not the paper's "
             f"setting" if summary.get("preset") == "cpu" else
             f"preset {summary.get('preset')}: {cfg['arch']} width {cfg['width']}, {cfg['epochs']} epochs")
    return {**summary, "label": label, "models": models, "retrain_reference": retrain,
            "training_config": cfg, "data_source": first.get("data_source"), "device": first.get("device"),
            "compute_seconds": seconds, "provenance": first.get("provenance")}


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def table_lines(report: dict) -> list[str]:
    """The paper-shaped Markdown table: one line per (pretrain, method, unlearning optimizer)."""
    rows = report["rows"]
    levels = [lv for lv in ("low", "mid", "high") if any(r["forget"] == lv for r in rows)]
    head = ["pretrain", "method", "unlearn"] + [f"ToW F_{lv}" for lv in levels] + \
        ["AVG ToW", "AVG ToW-MIA", "AVG MIA", "AVG E_Var", "AVG E_Var (authors' units)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pre in dict.fromkeys(r["pretrain"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            for opt in dict.fromkeys(r["optimizer"] for r in rows):
                sel = [r for r in rows if (r["pretrain"], r["method"], r["optimizer"]) == (pre, method, opt)]
                if not sel:
                    continue
                tows = [next((f"{100 * r['tow']:.2f}" for r in sel if r["forget"] == lv), "–") for lv in levels]
                cells = [pre.upper(), method, opt.upper(), *tows, f"{100 * _mean(sel, 'tow'):.2f}",
                         f"{100 * _mean(sel, 'tow_mia'):.2f}", f"{_mean(sel, 'mia'):.3f}",
                         f"{_mean(sel, 'e_var'):.3f}", f"{_mean(sel, 'e_var_authors_units'):.5f}"]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def claims(report: dict) -> list[dict[str, Any]]:
    """What the table says about the paper's empirical claims (docs/protocol.md#what-the-paper-reports), each with its
    numbers and a verdict: supports / contradicts when the difference exceeds :data:`MARGIN` ToW points, else cannot
    decide (one seed)."""
    rows = report["rows"]

    def avg(key: str, **match) -> float:
        sel = [r for r in rows if all(r[k] == v for k, v in match.items())]
        return 100 * _mean(sel, key) if key.startswith("tow") else _mean(sel, key)

    def verdict(diff: float, margin: float = MARGIN) -> str:
        if not np.isfinite(diff):
            return "cannot decide (not run)"
        return "supports" if diff > margin else "contradicts" if diff < -margin else "cannot decide"

    out = []
    d_pre = avg("tow", pretrain="sam") - avg("tow", pretrain="sgd")
    out.append({"claim": "SAM as pretraining optimizer raises AVG ToW", "difference": d_pre, "verdict": verdict(d_pre),
                "numbers": f"AVG ToW over all methods and unlearning optimizers: SAM-pretrained "
                           f"{avg('tow', pretrain='sam'):.2f} vs SGD-pretrained {avg('tow', pretrain='sgd'):.2f}"})
    d_un = avg("tow", optimizer="sam") - avg("tow", optimizer="sgd")
    out.append({"claim": "SAM as unlearning optimizer raises AVG ToW", "difference": d_un, "verdict": verdict(d_un),
                "numbers": f"AVG ToW over all methods and models: SAM unlearning {avg('tow', optimizer='sam'):.2f} "
                           f"vs SGD unlearning {avg('tow', optimizer='sgd'):.2f}"})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if "sharp_minmax" in methods and len(methods) > 1:
        best_other = max(avg("tow", method=m) for m in methods if m != "sharp_minmax")
        d = avg("tow", method="sharp_minmax") - best_other
        out.append({"claim": "Sharp MinMax is the best method", "difference": d, "verdict": verdict(d),
                    "numbers": ", ".join(f"{m} {avg('tow', method=m):.2f}" for m in methods) + " (AVG ToW)"})
    d_mia = avg("tow_mia", pretrain="sam") - avg("tow_mia", pretrain="sgd")
    out.append({"claim": "stronger MIA resistance with SAM (ToW-MIA, SAM- vs SGD-pretrained)", "difference": d_mia,
                "verdict": verdict(d_mia),
                "numbers": f"AVG ToW-MIA {avg('tow_mia', pretrain='sam'):.2f} vs {avg('tow_mia', pretrain='sgd'):.2f};"
                           f" MIA efficacy {avg('mia', pretrain='sam'):.3f} vs {avg('mia', pretrain='sgd'):.3f}"})
    e_sam, e_sgd = avg("e_var", pretrain="sam"), avg("e_var", pretrain="sgd")
    rel = (e_sgd - e_sam) / e_sgd if e_sgd else float("nan")
    out.append({"claim": "lower entanglement (E_Var) after unlearning with SAM-pretrained models", "difference": rel,
                "verdict": verdict(rel, 0.02),
                "numbers": f"AVG E_Var {e_sam:.3f} (SAM-pretrained) vs {e_sgd:.3f} (SGD-pretrained), relative "
                           f"decrease {100 * rel:.1f} % (verdict margin 2 %)"})
    levels = [lv for lv in ("low", "mid", "high") if any(r["forget"] == lv for r in rows)]
    if len(levels) >= 2:
        per = {lv: avg("tow", forget=lv) for lv in levels}
        d = per[levels[0]] - per[levels[-1]]
        out.append({"claim": "memorization trend: ToW falls from F_low to F_high", "difference": d,
                    "verdict": verdict(d),
                    "numbers": ", ".join(f"F_{lv} {v:.2f}" for lv, v in per.items()) + " (AVG ToW over all runs)"})
    return out


def markdown(report: dict) -> str:
    cfg = report["training_config"]
    seconds = report["compute_seconds"]
    lines = [f"# Empirical protocol — {report['label']}", "",
             f"**{report['label']}.** Data: {report.get('data_source')}. Device: {report.get('device')}. "
             f"One seed; no error bars.", "",
             f"Training: {cfg['arch']} width {cfg['width']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr "
             f"{cfg['lr']} (cosine, {cfg['warmup_epochs']} warmup epochs), {cfg['limit_per_class'] or 'all'} images "
             f"per class, |F| = {cfg['forget_size']}; forget sets by the C-score proxy (1 − C-score, not the "
             f"Feldman & Zhang score of the paper). Unlearning settings per method: "
             f"`{json.dumps(report.get('unlearn_settings', {}))}` (method defaults otherwise: "
             "docs/protocol.md#unlearning-methods).", "",
             f"Compute (sum of epoch times from the records): pretraining {seconds['pretrain'] / 60:.1f} min, "
             f"retraining {seconds['retrain'] / 60:.1f} min, unlearning {seconds['unlearn'] / 60:.1f} min "
             "(evaluation not included).", "",
             "## Table (ToW ×100; MIA efficacy on F, confidence feature; E_Var raw ratio and in the authors' units)",
             "", *table_lines(report), "",
             "## Models", "", "| model | test | retain | forget | val | epochs |", "|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['test_acc']:.2f} | {m['retain_acc']:.2f} | {m['forget_acc']:.2f} | "
                     f"{m['val_acc']:.2f} | {m['epochs']} |")
    lines += ["", "Retrain references (the gold standard of every metric): " + "; ".join(
        f"F_{lv}: RA {r['retain']:.2f}, FA {r['forget']:.2f}, TA {r['test']:.2f}, MIA {r['mia']:.3f}, "
        f"E_Var {r['e_var']:.3f}" for lv, r in report["retrain_reference"].items()), "",
        "## The paper's empirical claims against this table", "",
        f"Verdicts by the numbers (a difference under {MARGIN} ToW points: cannot decide — one seed, "
        f"{report['label']}).", ""]
    for c in report["claims"]:
        lines.append(f"- **{c['claim']}**: {c['verdict']} — {c['numbers']}.")
    if report.get("missing"):
        lines += ["", f"Not finished: {', '.join(report['missing'])}."]
    return "\n".join(lines) + "\n"


def write_report(protocol: Path, out: Path, figures: bool = True) -> dict[str, Any]:
    report = collect(protocol)
    report["claims"] = claims(report)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", report)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("label", *ROW_KEYS))
    writer.writeheader()
    writer.writerows({"label": report["label"], **r} for r in report["rows"])
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "summary.md", markdown(report).encode())
    if figures:
        from figures.empirical import render_protocol

        report["figures"] = [str(p) for p in render_protocol(out, out)]
    return report
