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
    epochs = epochs_text(models)
    label = (f"CPU-scale: ResNet-18 width {cfg['width']}, {epochs}, C-score proxy; not the paper's "
             f"setting" if summary.get("preset") == "cpu" else
             f"preset {summary.get('preset')}: {cfg['arch']} width {cfg['width']}, {epochs}")
    return {**summary, "label": label, "models": models, "retrain_reference": retrain,
            "training_config": cfg, "data_source": first.get("data_source"), "device": first.get("device"),
            "compute_seconds": seconds, "provenance": first.get("provenance")}


def epochs_text(models: dict[str, dict]) -> str:
    """"12 epochs" when every pretraining and retraining ran as many; else per model kind, e.g. "12 epochs (SAM
    pretraining 18)"."""
    counts = {name: m["epochs"] for name, m in models.items()}
    common = max(set(counts.values()), key=lambda n: (list(counts.values()).count(n), -n))
    others = [f"{name.removeprefix('pretrain_').upper()} pretraining {n}" if name.startswith("pretrain_")
              else f"{name} {n}" for name, n in counts.items() if n != common]
    return f"{common} epochs" + (f" ({', '.join(others)})" if others else "")


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


FACTORS = ("pretrain", "forget", "method", "optimizer")


def paired_differences(rows: list[dict], key: str, factor: str, a: str, b: str) -> np.ndarray:
    """``row[key]`` of ``factor = a`` minus that of ``factor = b``, for every pair of rows equal in every other
    factor (pretraining and unlearning optimizer, forget set, method): the comparisons the claims rest on."""
    other = [f for f in FACTORS if f != factor]
    by_cell: dict[tuple, dict[str, float]] = {}
    for r in rows:
        by_cell.setdefault(tuple(r[f] for f in other), {})[r[factor]] = float(r[key])
    return np.array([c[a] - c[b] for c in by_cell.values() if a in c and b in c and np.isfinite(c[a] - c[b])])


def bootstrap_ci(diffs: np.ndarray, level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (resampling the pairs); (nan, nan) for fewer than 3."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) < 3:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(diffs, size=(n_boot, len(diffs))).mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def verdict(lo: float, hi: float) -> str:
    """supports when the interval of the paired mean difference lies above 0, contradicts when below, else cannot
    decide (also when there are too few pairs to bootstrap)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "cannot decide (too few paired runs)"
    return "supports" if lo > 0 else "contradicts" if hi < 0 else "cannot decide"


PRETRAIN_TARGET = 75.0  # % test accuracy every pretrained model must reach before SAM- and SGD-pretrained compare


def claims(report: dict) -> list[dict[str, Any]]:
    """What the table says about the paper's empirical claims (docs/protocol.md#what-the-paper-reports). Each claim
    is a paired comparison: the rows that differ only in the factor the claim is about (e.g. SAM- vs SGD-pretrained,
    same forget set, method and unlearning optimizer) give one difference each, and the verdict comes from the 95 %
    bootstrap interval of their mean (:func:`verdict`). One seed: the interval is over cells, not over seeds."""
    rows = report["rows"]
    scale = {"tow": 100.0, "tow_mia": 100.0, "mia": 1.0, "e_var": 1.0}

    def claim(text: str, key: str, factor: str, a: str, b: str, sign: float = 1.0, extra: str = "") -> dict:
        d = sign * scale[key] * paired_differences(rows, key, factor, a, b)
        lo, hi = bootstrap_ci(d)
        mean = float(d.mean()) if len(d) else float("nan")
        what = f"{'+' if sign > 0 else '-'}({key} of {factor}={a} minus {factor}={b})"
        numbers = (f"{len(d)} paired runs, mean difference {what} {mean:.2f}, 95 % CI [{lo:.2f}, {hi:.2f}], "
                   f"{int((d > 0).sum())} of {len(d)} positive" + (f"; {extra}" if extra else ""))
        return {"claim": text, "difference": mean, "ci": [lo, hi], "pairs": len(d), "verdict": verdict(lo, hi),
                "numbers": numbers}

    models = report.get("models", {})
    accuracy = ", ".join(f"{n.removeprefix('pretrain_').upper()} {m['test_acc']:.2f} %" for n, m in models.items()
                         if n.startswith("pretrain_"))
    below = [n.removeprefix("pretrain_").upper() for n, m in models.items()
             if n.startswith("pretrain_") and m["test_acc"] < PRETRAIN_TARGET]

    def premise(c: dict) -> dict:
        """A comparison of pretraining optimizers is measured only between models that both reached the target
        accuracy; else an underfit model is compared, not an optimizer (the numbers stay, the verdict says so)."""
        if below:
            c["verdict"] = (f"not measured: premise not met ({', '.join(below)}-pretrained model below "
                            f"{PRETRAIN_TARGET:.0f} % test accuracy)")
        return c

    out = [premise(claim("SAM as pretraining optimizer raises ToW", "tow", "pretrain", "sam", "sgd",
                         extra=f"pretrained test accuracy {accuracy}" if accuracy else "")),
           claim("SAM as unlearning optimizer raises ToW", "tow", "optimizer", "sam", "sgd")]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if "sharp_minmax" in methods and len(methods) > 1:
        for m in methods:
            if m != "sharp_minmax":
                out.append(claim(f"Sharp MinMax beats {m}", "tow", "method", "sharp_minmax", m))
    out.append(premise(claim("stronger MIA resistance with SAM pretraining (ToW-MIA)", "tow_mia", "pretrain", "sam",
                             "sgd")))
    out.append(premise(claim("lower entanglement (E_Var) with SAM-pretrained models", "e_var", "pretrain", "sam",
                             "sgd", sign=-1.0)))
    levels = [lv for lv in ("low", "mid", "high") if any(r["forget"] == lv for r in rows)]
    if len(levels) >= 2:
        out.append(claim(f"memorization trend: ToW lower on F_{levels[-1]} than on F_{levels[0]}", "tow", "forget",
                         levels[0], levels[-1]))
    return out


def markdown(report: dict) -> str:
    cfg = report["training_config"]
    seconds = report["compute_seconds"]
    lines = [f"# Empirical protocol — {report['label']}", "",
             f"**{report['label']}.** Data: {report.get('data_source')}. Device: {report.get('device')}. "
             f"One seed; no error bars.", "",
             f"Training: {cfg['arch']} width {cfg['width']}, {epochs_text(report['models'])}, batch "
             f"{cfg['batch_size']}, lr "
             f"{cfg['lr']} (cosine, {cfg['warmup_epochs']} warmup epochs), {cfg['limit_per_class'] or 'all'} images "
             f"per class, |F| = {cfg['forget_size']}; forget sets by the C-score proxy (1 − C-score, not the "
             f"Feldman & Zhang score of the paper). Unlearning settings per method: "
             f"`{json.dumps(report.get('unlearn_settings', {}))}` (method defaults otherwise: "
             "docs/protocol.md#unlearning-methods)." + (
                 f" Retain accuracy, the MIA's shadow-in set and the entanglement on a seeded sample of "
                 f"{report['retain_sample']} retain images (the same for every model of a forget set)."
                 if report.get("retain_sample") else ""), "",
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
        "Each claim is a paired comparison: the runs that differ only in the factor the claim is about give one "
        "difference each; the verdict is \"supports\" when the 95 % bootstrap interval of the mean difference lies "
        "above 0, \"contradicts\" when below, else \"cannot decide\"; comparisons of pretraining optimizers only when "
        f"every pretrained model reached {PRETRAIN_TARGET:.0f} % test accuracy (one seed: the interval is over the "
        "paired "
        f"cells, not over seeds; {report['label']}).", ""]
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
