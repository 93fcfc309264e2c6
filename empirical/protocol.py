"""The empirical protocol in one command (spec/empirical.md §1–3): pretrain with each optimizer, build the forget
sets, retrain on each, run every unlearning method with every unlearning optimizer, evaluate, tabulate.

    python -m empirical protocol --preset paper --pretrain sgd,sam,asam --forget high,mid,low \\
        --methods neggrad,sharp_minmax --unlearn-optimizers sgd,sam --out results/protocol

Layout under ``--out`` (every stage is skipped when its record already exists, so an interrupted protocol
resumes, and adding a method or an optimizer reruns only what is new)::

    pretrain_<opt>/                 the pretrained models (one per pretraining optimizer, full training split)
    splits/<forget>.npz             the forget sets: memorization levels high/mid/low (C-score proxy, or the
                                    --set memorization_scores=FILE of the pretraining config) or "random"
    retrain_<forget>/               the gold standard for each forget set (SGD, the pretraining recipe)
    unlearn/<pre>_<forget>_<method>_<opt>/   each unlearning run and its metrics.json
    summary.json, summary.csv       one row per unlearning run, and AVG ToW over the forget sets

The pretrained model does not depend on the forget set (it trains on the whole training split), so one model per
optimizer serves every forget set: the forget sets are partitions of the same training split.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from simulations.config import ConfigError
from simulations.provenance import atomic_write_bytes, atomic_write_json, ensure_writable_dir

from .config import make_config

LEVELS = ("high", "mid", "low")
ROW_KEYS = ("pretrain", "forget", "method", "optimizer", "retain", "forget_acc", "test", "mia", "tow", "tow_mia",
            "avg_gap", "tow_signed_authors_code", "e_var", "e_wp")


def _list(text: str | list[str], name: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise ConfigError(f"--{name} is empty")
    if allowed is not None and (bad := [t for t in items if t not in allowed]):
        raise ConfigError(f"--{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def forget_splits(pretrain_run: Path, out: Path, forget_sets: list[str]) -> dict[str, Path]:
    """One split file per forget set, each a partition of the pretraining run's training split."""
    from .data import (
        forget_retain_split,
        load_cifar,
        load_split,
        memorization_scores,
        save_split,
    )
    from .trainer import load_record

    base = load_split(pretrain_run / "split.npz")
    cfg = load_record(pretrain_run)["config"]
    arrays = load_cifar(cfg["dataset"], cfg["data_root"] or None, limit_per_class=cfg["limit_per_class"] or None)
    paths = {}
    for name in forget_sets:
        path = out / "splits" / f"{name}.npz"
        paths[name] = path
        if path.is_file():
            continue
        if name == "random":
            forget, retain = forget_retain_split(base["train"], arrays.train_y, "random", size=cfg["forget_size"],
                                                 seed=cfg["forget_seed"])
            what = f"random (seed {cfg['forget_seed']})"
        else:
            scores, source = memorization_scores(arrays, cfg.get("memorization_scores") or None,
                                                 cfg["data_root"] or None)
            forget, retain = forget_retain_split(base["train"], arrays.train_y, "memorization",
                                                 size=cfg["forget_size"], scores=scores, level=name)
            what = f"{name}-memorization by {source}"
        save_split(path, train=base["train"], val=base["val"], forget=forget, retain=retain, seed=base["seed"],
                   forget_seed=cfg["forget_seed"],
                   description=f"{cfg['dataset']} ({arrays.source}); forget {what}, |F| = {len(forget)}")
    return paths


def run_protocol(out: Path, preset: str = "smoke", pretrain: str = "sgd,sam", forget: str = "high,mid,low",
                 methods: str = "neggrad", unlearn_optimizers: str = "sgd,sam", train_overrides: dict | None = None,
                 unlearn_overrides: dict | None = None, mia_features: tuple[str, ...] = ("confidence",),
                 progress: bool | None = None) -> dict[str, Any]:
    """Run the whole protocol (module docstring); returns and writes the summary."""
    from .evaluate import evaluate
    from .trainer import train
    from .unlearn import METHODS, UnlearnConfig, unlearn

    train_overrides, unlearn_overrides = dict(train_overrides or {}), dict(unlearn_overrides or {})
    pre_opts = _list(pretrain, "pretrain", ("sgd", "sam", "asam"))
    forget_sets = _list(forget, "forget", (*LEVELS, "random"))
    method_list = _list(methods, "methods", METHODS)
    unlearn_opts = _list(unlearn_optimizers, "unlearn-optimizers", ("sgd", "sam", "asam"))
    for key in ("method", "optimizer", "split_file"):
        if key in unlearn_overrides:
            raise ConfigError(f"--unlearn-set {key}=... is chosen by the protocol; use --methods/--unlearn-optimizers")
    UnlearnConfig(**unlearn_overrides)  # bad overrides fail here, before any training
    out = ensure_writable_dir(Path(out))
    device = train_overrides.get("device", "auto")

    def done(folder: Path) -> bool:
        return (folder / "record.json").is_file()

    for opt in pre_opts:
        folder = out / f"pretrain_{opt}"
        if not done(folder):
            train(make_config(preset, {**train_overrides, "optimizer": opt}), folder, progress=progress)
    splits = forget_splits(out / f"pretrain_{pre_opts[0]}", out, forget_sets)
    for name, split in splits.items():
        folder = out / f"retrain_{name}"
        if not done(folder):
            cfg = make_config(preset, {**train_overrides, "optimizer": "sgd", "split_file": str(split)})
            train(cfg, folder, stage="retrain", progress=progress)
    rows = []
    for pre in pre_opts:
        for name, split in splits.items():
            for method in method_list:
                for opt in unlearn_opts:
                    folder = out / "unlearn" / f"{pre}_{name}_{method}_{opt}"
                    if not done(folder):
                        cfg = UnlearnConfig(**{"device": device, **unlearn_overrides, "method": method,
                                               "optimizer": opt, "split_file": str(split)})
                        unlearn(cfg, out / f"pretrain_{pre}", folder, progress=progress)
                    metrics_path = folder / "metrics.json"
                    if metrics_path.is_file():
                        metrics = json.loads(metrics_path.read_text())
                    else:
                        metrics = evaluate(folder, out / f"retrain_{name}", metrics_path, mia_features=mia_features,
                                           device=device)
                    ours = metrics["unlearned"]
                    rows.append({"pretrain": pre, "forget": name, "method": method, "optimizer": opt,
                                 "retain": ours["accuracy"]["retain"], "forget_acc": ours["accuracy"]["forget"],
                                 "test": ours["accuracy"]["test"], "mia": ours["mia_efficacy"]["confidence"],
                                 "tow": metrics["tow"], "tow_mia": metrics["tow_mia"], "avg_gap": metrics["avg_gap"],
                                 "tow_signed_authors_code": metrics["tow_signed_authors_code"],
                                 "e_var": ours["entanglement"]["e_var"], "e_wp": ours["entanglement"]["e_wp"]})
    averages = []
    for pre in pre_opts:
        for method in method_list:
            for opt in unlearn_opts:
                sel = [r for r in rows if (r["pretrain"], r["method"], r["optimizer"]) == (pre, method, opt)]
                averages.append({"pretrain": pre, "method": method, "optimizer": opt,
                                 "avg_tow": float(np.mean([r["tow"] for r in sel])),
                                 "avg_tow_mia": float(np.mean([r["tow_mia"] for r in sel])),
                                 "forget_sets": [r["forget"] for r in sel]})
    summary = {"preset": preset, "train_overrides": train_overrides, "unlearn_overrides": unlearn_overrides,
               "rows": rows, "averages": averages}
    atomic_write_json(out / "summary.json", summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode())
    return summary


def summary_lines(summary: dict) -> list[str]:
    lines = [f"{'pretrain':8s} {'method':13s} {'unlearn':7s} {'AVG ToW':>8s} {'ToW-MIA':>8s}  forget sets"]
    for a in summary["averages"]:
        lines.append(f"{a['pretrain']:8s} {a['method']:13s} {a['optimizer']:7s} {100 * a['avg_tow']:8.2f} "
                     f"{100 * a['avg_tow_mia']:8.2f}  {','.join(a['forget_sets'])}")
    return lines
