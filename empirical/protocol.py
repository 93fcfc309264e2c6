"""The empirical protocol in one command (docs/protocol.md): pretrain with each optimizer, build the forget
sets, retrain on each, run every unlearning method with every unlearning optimizer, evaluate, tabulate.

    python -m empirical protocol --preset paper --pretrain sgd,sam,asam --forget high,mid,low \\
        --methods neggrad,sharp_minmax --unlearn-optimizers sgd,sam --out results/protocol

Layout under ``--out`` (every stage is skipped when its record already exists and was made with the same settings,
so an interrupted protocol resumes, and adding a method or an optimizer reruns only what is new; a folder of other
settings is refused, or with ``--force`` the stages whose settings changed are redone)::

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

import contextlib
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulations.atomic import atomic_write_bytes, atomic_write_json
from simulations.errors import ConfigError
from simulations.runfolder import RunFolder, read_identity

from .config import CHOICES, make_config, parse_overrides

LEVELS = ("high", "mid", "low")
# unlearning settings a protocol preset brings (scoped like --unlearn-set; the user's settings win). cpu: one epoch
# per method at batch 128, cut to 20 steps (NegGrad and Sharp MinMax: a retain and a forget batch per step, 2.1
# passes over |F| = 1200) or 40 single-batch steps (RL and SalUn over R ∪ F: the same number of images) — the
# 5–10 full epochs of the paper do not fit 60 CPU minutes. A CPU-scale choice, not the paper's.
UNLEARN_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"epochs": 1, "batch_size": 128, "steps_per_epoch": 20, "rl.steps_per_epoch": 40,
            "salun.steps_per_epoch": 40},
}
# training settings a protocol preset brings per pretraining optimizer (below the user's --set, scoped or not; the
# sgd ones reach the retrains too, which follow the SGD recipe). cpu: SAM's step costs two SGD steps and its 12-epoch
# model underfit (73.4 % test accuracy against SGD's 76.4 %): 18 epochs for SAM/ASAM.
PRETRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"sam": {"epochs": 18}, "asam": {"epochs": 18}},
}
# evaluation settings a protocol preset brings. cpu: the retain accuracy, the MIA's shadow-in set and the
# entanglement on a seeded sample of 5,000 retain images (of 16,800), the same for every model of a forget set.
EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"retain_sample": 5000},
}
PRETRAIN_SCOPES = CHOICES["optimizer"]  # --set OPT.key=value
ROW_KEYS = ("pretrain", "forget", "method", "optimizer", "retain", "forget_acc", "test", "mia", "tow", "tow_mia",
            "avg_gap", "tow_signed_authors_code", "e_var", "e_var_authors_units", "e_wp")


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
        check_split,
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
    check_split(base, len(arrays.train_y), str(pretrain_run / "split.npz"), dataset=cfg["dataset"])
    paths = {}
    for name in forget_sets:
        path = out / "splits" / f"{name}.npz"
        paths[name] = path
        if path.is_file():
            kept = load_split(path)  # reused only when it is a partition of this very training split
            if np.array_equal(kept["train"], base["train"]) and np.array_equal(kept["val"], base["val"]) \
                    and len(kept["forget"]) == min(cfg["forget_size"], len(base["train"])):
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
                   forget_seed=cfg["forget_seed"], dataset=cfg["dataset"], n_train=len(arrays.train_y),
                   description=f"{cfg['dataset']} ({arrays.source}); forget {what}, |F| = {len(forget)}")
    return paths


def unlearn_settings(preset: str, overrides: dict[str, Any], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method, the unlearning settings of this protocol: the preset's (:data:`UNLEARN_PRESETS`), then the user's
    ``--unlearn-set`` (scoped ``method.key`` or unscoped: :func:`empirical.unlearn.resolve_scoped`)."""
    from .unlearn import resolve_scoped

    base = resolve_scoped(UNLEARN_PRESETS.get(preset, {}), methods, strict=False)
    user = resolve_scoped(overrides, methods)
    return {m: {**base[m], **user[m]} for m in methods}


def parse_train_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set`` of the protocol: ``key=value`` for every training run, or ``OPT.key=value`` (OPT one of sgd, sam,
    asam) for the pretraining with that optimizer only (sgd: the retrains too, which follow the SGD recipe)."""
    unscoped, out = [], {}
    for item in items or []:
        key = item.split("=", 1)[0].strip()
        if "." in key and "=" in item:
            scope, name = key.split(".", 1)
            if scope not in PRETRAIN_SCOPES:
                raise ConfigError(f"--set {item!r}: {scope!r} is not a pretraining optimizer; scope a setting with "
                                  f"one of {', '.join(PRETRAIN_SCOPES)} (e.g. sam.epochs=18)")
            if name in ("optimizer", "split_file"):
                raise ConfigError(f"--set {item!r}: {name} is chosen by the protocol")
            out.update({f"{scope}.{k}": v for k, v in parse_overrides([f"{name}={item.split('=', 1)[1]}"]).items()})
        else:
            unscoped.append(item)
    return {**parse_overrides(unscoped), **out}


def train_settings(preset: str, overrides: dict[str, Any], opt: str) -> dict[str, Any]:
    """The training overrides of the pretraining with ``opt`` (sgd: also of the retrains): the preset's for that
    optimizer (:data:`PRETRAIN_PRESETS`), then the user's unscoped ones, then the user's ``opt.``-scoped ones."""
    unscoped = {k: v for k, v in overrides.items() if "." not in k}
    scoped = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(f"{opt}.")}
    return {**PRETRAIN_PRESETS.get(preset, {}).get(opt, {}), **unscoped, **scoped}


def make_plan(out: Path, preset: str = "smoke", pretrain: str = "sgd,sam", forget: str = "high,mid,low",
              methods: str = "neggrad", unlearn_optimizers: str = "sgd,sam", train_overrides: dict | None = None,
              unlearn_overrides: dict | None = None, mia_features: tuple[str, ...] = ("confidence",),
              progress: bool | None = None, force: bool = False, retain_sample: int | None = None) -> Plan:
    """Check every setting of a protocol (nothing is written) and return its :class:`Plan`. ``retain_sample``
    None: the preset's (:data:`EVAL_PRESETS`; 0, all of R, for the others)."""
    from .unlearn import METHODS, UnlearnConfig

    train_overrides, unlearn_overrides = dict(train_overrides or {}), dict(unlearn_overrides or {})
    pre_opts = _list(pretrain, "pretrain", ("sgd", "sam", "asam"))
    forget_sets = _list(forget, "forget", (*LEVELS, "random"))
    method_list = _list(methods, "methods", METHODS)
    unlearn_opts = _list(unlearn_optimizers, "unlearn-optimizers", ("sgd", "sam", "asam"))
    for key in unlearn_overrides:
        if key.rsplit(".", 1)[-1] in ("method", "optimizer", "split_file"):
            raise ConfigError(f"--unlearn-set {key}=... is chosen by the protocol; use --methods/--unlearn-optimizers")
    per_method = unlearn_settings(preset, unlearn_overrides, method_list)
    for method in method_list:  # bad overrides fail here, before any training
        UnlearnConfig(**{**per_method[method], "method": method})
    stray = sorted({k.split(".", 1)[0] for k in train_overrides if "." in k} - set(pre_opts) - {"sgd"})
    if stray:
        raise ConfigError(f"--set {stray[0]}.…: {stray[0]} is not among --pretrain {','.join(pre_opts)}; drop the "
                          "setting or add the optimizer")
    for opt in sorted(set(pre_opts) | {"sgd"}):  # every training config is checked before anything is written
        make_config(preset, {**train_settings(preset, train_overrides, opt), "optimizer": opt})
    if retain_sample is None:
        retain_sample = EVAL_PRESETS.get(preset, {}).get("retain_sample", 0)
    from .evaluate import check_retain_sample

    check_retain_sample(retain_sample)
    return Plan(Path(out), preset, pre_opts, forget_sets, method_list, unlearn_opts, train_overrides, per_method,
                tuple(mia_features), progress, force, dict(sorted(unlearn_overrides.items())), retain_sample)


def run_protocol(out: Path, preset: str = "smoke", pretrain: str = "sgd,sam", forget: str = "high,mid,low",
                 methods: str = "neggrad", unlearn_optimizers: str = "sgd,sam", train_overrides: dict | None = None,
                 unlearn_overrides: dict | None = None, mia_features: tuple[str, ...] = ("confidence",),
                 progress: bool | None = None, force: bool = False, stages: str = "all",
                 retain_sample: int | None = None) -> dict[str, Any]:
    """Run the whole protocol (module docstring); returns and writes the summary. ``stages="train"`` stops after the
    pretraining runs, the forget sets and the retrain references (no summary is written)."""
    if stages not in ("all", "train"):
        raise ConfigError(f"--stages {stages!r}: choose all or train")
    plan = make_plan(out, preset, pretrain, forget, methods, unlearn_optimizers, train_overrides, unlearn_overrides,
                     mia_features, progress, force, retain_sample)
    with plan.folder():
        todo = plan.stages(stages)
        result = None
        for k, (stage, args) in enumerate(todo, 1):
            if progress is not False:  # which stage of how many, before it runs (it is skipped when done)
                print(f"protocol stage {k}/{len(todo)}: {plan.stage_text(stage, args)}", file=sys.stderr, flush=True)
            result = getattr(plan, stage)(*args)
        if stages == "train":
            return {"preset": preset, "stages": "train", "rows": [], "averages": []}
        return result


@dataclass
class Plan:
    """The stages of one protocol folder, each a call that skips what is done (:func:`_stage_done`): ``pretrain(opt)``
    → ``splits()`` → ``retrain(forget)`` → ``unlearn(pre, forget, method, opt)`` (the unlearning run and its
    evaluation) → ``summary()`` (from the records on disk). :func:`run_protocol` calls them in order; the GPU check
    calls them under a time budget; :mod:`empirical.cluster` submits them as job arrays."""
    out: Path
    preset: str
    pre_opts: list[str]
    forget_sets: list[str]
    methods: list[str]
    unlearn_opts: list[str]
    train_overrides: dict[str, Any]
    per_method: dict[str, dict[str, Any]]
    mia_features: tuple[str, ...] = ("confidence",)
    progress: bool | None = None
    force: bool = False
    unlearn_overrides: dict[str, Any] = field(default_factory=dict)
    retain_sample: int = 0  # > 0: retain-side metrics on a seeded sample of R (empirical.evaluate.describe)

    @property
    def device(self) -> str:
        return self.train_overrides.get("device", "auto")

    def identity(self) -> dict[str, Any]:
        return {"preset": self.preset, "train_overrides": dict(sorted(self.train_overrides.items())),
                "unlearn_overrides": self.unlearn_overrides, "mia_features": list(self.mia_features),
                **({"retain_sample": self.retain_sample} if self.retain_sample else {})}

    def evaluation(self) -> dict[str, Any]:
        """What a metrics file or a reference is computed with (kept beside it, compared on reuse)."""
        return {"mia_features": list(self.mia_features),
                **({"retain_sample": self.retain_sample} if self.retain_sample else {})}

    @contextlib.contextmanager
    def folder(self):
        """The protocol folder's run-folder contract (one writer, its identity); stale forget sets of other training
        settings are removed when ``force`` replaces them."""
        identity = self.identity()
        with RunFolder(self.out, "protocol", identity, force=self.force, outputs=("summary.json", "summary.csv"),
                       fix="add --force to redo the stages whose settings changed") as folder:
            folder.begin()
            if folder.replacing and {k: (folder.previous or {}).get(k) for k in ("preset", "train_overrides")} != \
                    {k: identity[k] for k in ("preset", "train_overrides")}:
                import shutil

                shutil.rmtree(self.out / "splits", ignore_errors=True)  # the forget sets of other training settings
            yield folder

    def pretrain_config(self, opt: str):
        return make_config(self.preset, {**train_settings(self.preset, self.train_overrides, opt), "optimizer": opt})

    def pretrain(self, opt: str) -> Path:
        from .trainer import train

        folder = self.out / f"pretrain_{opt}"
        cfg = self.pretrain_config(opt)
        if not _stage_done(folder, "pretrain", _train_identity(cfg), self.force):
            train(cfg, folder, progress=self.progress, force=self.force)
        return folder

    def splits(self) -> dict[str, Path]:
        return forget_splits(self.out / f"pretrain_{self.pre_opts[0]}", self.out, self.forget_sets)

    def split_path(self, name: str) -> Path:
        return self.out / "splits" / f"{name}.npz"

    def retrain_config(self, name: str):
        return make_config(self.preset, {**train_settings(self.preset, self.train_overrides, "sgd"),
                                         "optimizer": "sgd", "split_file": str(self.split_path(name))})

    def retrain(self, name: str) -> Path:
        from .trainer import train

        folder = self.out / f"retrain_{name}"
        cfg = self.retrain_config(name)
        if not _stage_done(folder, "retrain", _train_identity(cfg), self.force):
            train(cfg, folder, stage="retrain", progress=self.progress, force=self.force)
        return folder

    def stages(self, which: str = "all") -> list[tuple[str, tuple]]:
        """The stages in the order :func:`run_protocol` runs them, as (name of the Plan method, its arguments):
        pretrain per optimizer, the forget sets, retrain per forget set, then (``which="all"``) unlearn + evaluate
        per job and the summary."""
        out = [("pretrain", (opt,)) for opt in self.pre_opts] + [("splits", ())] + \
            [("retrain", (name,)) for name in self.forget_sets]
        if which == "all":
            out += [("unlearn", job) for job in self.unlearn_jobs()] + [("summary", ())]
        return out

    def stage_text(self, stage: str, args: tuple) -> str:
        """One line saying what a stage does and where it writes."""
        if stage == "pretrain":
            return f"pretrain, pretraining optimizer {args[0]} -> pretrain_{args[0]}/"
        if stage == "splits":
            return f"forget sets {', '.join(self.forget_sets)} -> splits/"
        if stage == "retrain":
            return f"retrain (sgd) without forget set {args[0]} -> retrain_{args[0]}/"
        if stage == "unlearn":
            pre, name, method, opt = args
            return (f"unlearn + evaluate: pretraining optimizer {pre}, unlearning optimizer {opt}, method {method}, "
                    f"forget set {name} -> unlearn/{pre}_{name}_{method}_{opt}/")
        return "summary -> summary.json, summary.csv"

    def describe(self, which: str = "all") -> dict[str, Any]:
        """What ``--print-config`` shows: every pretraining and retraining configuration, each method's unlearning
        configuration (lr and epochs resolved; the optimizer and the forget set's split file vary per stage) and
        the stages in order. Nothing is read or written."""
        unlearn = {}
        for method in self.methods:
            cfg = self.unlearn_config(self.pre_opts[0], self.forget_sets[0], method, self.unlearn_opts[0])
            unlearn[method] = {k: v for k, v in cfg.resolved().items() if k not in ("optimizer", "split_file")}
        stages = []
        for stage, args in self.stages(which):
            keys = {"pretrain": ("optimizer",), "retrain": ("forget",),
                    "unlearn": ("pretrain", "forget", "method", "optimizer")}.get(stage, ())
            stages.append({"stage": stage, **dict(zip(keys, args)), "what": self.stage_text(stage, args)})
        return {"out": str(self.out), "preset": self.preset,
                "pretrain": {opt: {"hash": (c := self.pretrain_config(opt)).hash, "config": c.to_dict()}
                             for opt in self.pre_opts},
                "retrain": {name: {"hash": (c := self.retrain_config(name)).hash, "config": c.to_dict()}
                            for name in self.forget_sets},
                "unlearn": unlearn,
                "unlearn_per_stage": {"optimizer": self.unlearn_opts,
                                      "split_file": str(self.split_path("<forget set>"))},
                "mia_features": list(self.mia_features), "stages": stages}

    def unlearn_jobs(self) -> list[tuple[str, str, str, str]]:
        return [(pre, name, method, opt) for pre in self.pre_opts for name in self.forget_sets
                for method in self.methods for opt in self.unlearn_opts]

    def unlearn_config(self, pre: str, name: str, method: str, opt: str):
        from .unlearn import UnlearnConfig

        return UnlearnConfig(**{"device": self.device, **self.per_method[method], "method": method,
                                "optimizer": opt, "split_file": str(self.split_path(name))})

    def arguments(self) -> dict[str, Any]:
        """The keywords of :func:`make_plan` that rebuild this plan (in a cluster job)."""
        return {"out": str(self.out), "preset": self.preset, "pretrain": self.pre_opts, "forget": self.forget_sets,
                "methods": self.methods, "unlearn_optimizers": self.unlearn_opts,
                "train_overrides": self.train_overrides, "unlearn_overrides": self.unlearn_overrides,
                "mia_features": self.mia_features, "progress": False, "force": self.force,
                "retain_sample": self.retain_sample}

    def unlearn_run(self, pre: str, name: str, method: str, opt: str) -> str:
        """The unlearning run alone (skipped when done); returns its identity."""
        from .unlearn import unlearn, unlearn_identity

        folder = self.out / "unlearn" / f"{pre}_{name}_{method}_{opt}"
        cfg = self.unlearn_config(pre, name, method, opt)
        stage_id = unlearn_identity(cfg, self.out / f"pretrain_{pre}")
        if not _stage_done(folder, "unlearn", stage_id, self.force):
            unlearn(cfg, self.out / f"pretrain_{pre}", folder, progress=self.progress, force=self.force,
                    record_accuracy=False)  # the evaluation computes them (metrics.json)
        return stage_id

    def unlearn(self, pre: str, name: str, method: str, opt: str) -> dict[str, Any]:
        """The unlearning run (skipped when done) and its metrics against the retrain of its forget set (computed
        again only when the run, the retrain or the MIA features changed); returns the summary row."""
        from .evaluate import evaluate

        folder = self.out / "unlearn" / f"{pre}_{name}_{method}_{opt}"
        stage_id = self.unlearn_run(pre, name, method, opt)
        made_from = {"unlearn": stage_id, "retrain": self.retrain_config(name).hash, **self.evaluation()}
        metrics = _read_metrics(folder / "metrics.json")
        if metrics is None or metrics.get("made_from") != made_from:
            metrics = evaluate(folder, self.out / f"retrain_{name}", None, mia_features=self.mia_features,
                               device=self.device, reference=self.reference(name),
                               retain_sample=self.retain_sample)
            metrics["made_from"] = made_from
            atomic_write_json(folder / "metrics.json", metrics)
        return _row(pre, name, method, opt, metrics)

    def reference(self, name: str) -> dict[str, Any]:
        """The retrained model's description (accuracies, MIA, entanglement) for forget set ``name``: computed once
        and kept in ``retrain_<name>/reference.json`` (every unlearning run of that forget set is compared with
        it)."""
        from .config import TrainConfig
        from .evaluate import describe, load_run
        from .trainer import resolve_device

        path = self.out / f"retrain_{name}" / "reference.json"
        made_from = {"retrain": self.retrain_config(name).hash, **self.evaluation()}
        kept = _read_metrics(path)
        if kept is not None and kept.get("made_from") == made_from:
            return kept["description"]
        device = resolve_device(TrainConfig(device=self.device))
        model, prepared, _ = load_run(self.out / f"retrain_{name}", device)
        description = describe(model, prepared, device, mia_features=self.mia_features,
                               retain_sample=self.retain_sample)
        atomic_write_json(path, {"made_from": made_from, "description": description})
        return description

    def summary(self) -> dict[str, Any]:
        """``summary.json`` / ``summary.csv`` from the metrics of every finished unlearning run (a job not done yet is
        listed under ``missing``), with AVG ToW over the forget sets."""
        rows, missing = [], []
        for pre, name, method, opt in self.unlearn_jobs():
            metrics = _read_metrics(self.out / "unlearn" / f"{pre}_{name}_{method}_{opt}" / "metrics.json")
            if metrics is None or "tow" not in metrics:
                missing.append(f"{pre}_{name}_{method}_{opt}")
                continue
            rows.append(_row(pre, name, method, opt, metrics))
        return write_summary(self.out, self, rows, missing)


# the units of a summary row's numbers (the screen shows AVG ToW and ToW-MIA x100)
SUMMARY_UNITS = {"retain": "percent", "forget_acc": "percent", "test": "percent", "mia": "fraction (0-1)",
                 "tow": "fraction (0-1)", "tow_mia": "fraction (0-1)", "avg_gap": "percentage points",
                 "tow_signed_authors_code": "fraction (can exceed 1)", "e_var": "raw ratio",
                 "e_var_authors_units": "clip(e_var / 1300, 0, 1)", "e_wp": "raw ratio",
                 "avg_tow": "fraction (0-1)", "avg_tow_mia": "fraction (0-1)"}


def _row(pre: str, name: str, method: str, opt: str, metrics: dict) -> dict[str, Any]:
    ours = metrics["unlearned"]
    return {"pretrain": pre, "forget": name, "method": method, "optimizer": opt,
            "retain": ours["accuracy"]["retain"], "forget_acc": ours["accuracy"]["forget"],
            "test": ours["accuracy"]["test"], "mia": ours["mia_efficacy"]["confidence"],
            "tow": metrics["tow"], "tow_mia": metrics["tow_mia"], "avg_gap": metrics["avg_gap"],
            "tow_signed_authors_code": metrics["tow_signed_authors_code"],
            "e_var": ours["entanglement"]["e_var"],
            "e_var_authors_units": ours["entanglement"].get("e_var_authors_units"),
            "e_wp": ours["entanglement"]["e_wp"]}


def write_summary(out: Path, plan: Plan, rows: list[dict], missing: list[str] | None = None) -> dict[str, Any]:
    averages = []
    for pre in plan.pre_opts:
        for method in plan.methods:
            for opt in plan.unlearn_opts:
                sel = [r for r in rows if (r["pretrain"], r["method"], r["optimizer"]) == (pre, method, opt)]
                if not sel:
                    continue
                averages.append({"pretrain": pre, "method": method, "optimizer": opt,
                                 "avg_tow": float(np.mean([r["tow"] for r in sel])),
                                 "avg_tow_mia": float(np.mean([r["tow_mia"] for r in sel])),
                                 "forget_sets": [r["forget"] for r in sel]})
    from simulations.provenance import command_line

    summary = {"preset": plan.preset, "train_overrides": plan.train_overrides, "unlearn_settings": plan.per_method,
               "retain_sample": plan.retain_sample, "rows": rows, "averages": averages,
               "missing": list(missing or []), "units": SUMMARY_UNITS, "command": command_line()}
    atomic_write_json(out / "summary.json", summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode())
    return summary


_TRAIN_IDENTITIES: dict[str, dict] = {}


def _train_identity(cfg) -> dict[str, str]:
    """The identity :func:`empirical.trainer.train` gives a run of ``cfg`` (configuration, numerics, data), so a
    finished stage is reused only when all three match."""
    if cfg.hash not in _TRAIN_IDENTITIES:
        import torch

        from .trainer import prepare_data, train_identity

        _TRAIN_IDENTITIES[cfg.hash] = train_identity(cfg, prepare_data(cfg, torch.device("cpu")))
    return _TRAIN_IDENTITIES[cfg.hash]


def _stage_done(folder: Path, kind: str, identity: dict, force: bool) -> bool:
    """Whether ``folder`` holds a finished stage made with ``identity``; a finished stage of other settings is
    refused (redone with ``force``)."""
    if not (folder / "record.json").is_file():
        return False
    found = read_identity(folder)
    if found is not None and found.get("kind") == kind and found.get("identity") == identity:
        return True
    if found is None:  # a stage written before run.json existed: judge it by its record
        record = json.loads((folder / "record.json").read_text())
        if kind == "unlearn":
            import hashlib

            made = record.get("config_hash") or \
                hashlib.sha256(repr(sorted(record.get("config", {}).items())).encode()).hexdigest()[:16]
        else:
            made = record.get("config_hash")
        if made == identity["config"]:
            return True
    if force:
        return False
    raise ConfigError(f"stage {folder} was run with other settings than this protocol asks for; rerun with --force "
                      "to redo it, or choose a new --out")


def _read_metrics(path: Path) -> dict | None:
    """A stage's metrics.json, or None when missing or unreadable (then it is computed again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summary_lines(summary: dict) -> list[str]:
    lines = [f"{'pretrain':8s} {'method':13s} {'unlearn':7s} {'AVG ToW':>8s} {'ToW-MIA':>8s}  forget sets  "
             "(ToW x100)"]
    for a in summary["averages"]:
        lines.append(f"{a['pretrain']:8s} {a['method']:13s} {a['optimizer']:7s} {100 * a['avg_tow']:8.2f} "
                     f"{100 * a['avg_tow_mia']:8.2f}  {','.join(a['forget_sets'])}")
    return lines
