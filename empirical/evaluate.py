"""Evaluate an unlearned model against the retrained one (docs/protocol.md#metrics).

    python -m empirical evaluate --run results/neggrad --retrain results/retrain --out results/neggrad/metrics.json

``--run`` is the ``--out`` folder of an ``unlearn`` run (its ``model.pt``) or of a ``pretrain``/``retrain`` run (its
``checkpoint.pt``); ``--retrain`` is a ``retrain`` run on the same forget set (checked: the forget-set ids must
agree; retrain with ``--set split_file=<pretrain>/split.npz`` to get it). For both models, in eval mode without
augmentation: accuracies on R, F, test and val (percent); MIA efficacy per feature (shadow-in: a seeded sample of R
the size of the test set; shadow-out: the test set; target: F); entanglement E_Var and E_Wp of the penultimate
features of R and F, overall and class-wise; optionally the loss landscape on F and on the test set. Then ToW (and
the authors' signed variant, labelled), ToW-MIA (headline MIA feature: confidence) and the avg gap. Everything
goes into one JSON file (written atomically) with the provenance of the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.atomic import atomic_write_json
from simulations.errors import ConfigError
from simulations.provenance import provenance
from simulations.runfolder import RunFolder

from .config import TrainConfig
from .metrics import (
    HEADLINE_MIA_FEATURE,
    MIA_FEATURES,
    avg_gap,
    classwise,
    e_var_authors_units,
    entanglement_var,
    entanglement_wp,
    mia_efficacy,
    model_outputs,
    shadow_in_indices,
    tow,
    tow_mia,
)


def load_run(run: Path, device: torch.device, data_root: str = ""):
    """``(model, prepared, record)`` of an unlearn, pretrain or retrain run folder, with that run's exact split."""
    from .trainer import load_record, load_trained

    run = Path(run)
    if not (run / "record.json").is_file():
        raise ConfigError(f"{run} has no record.json: give the --out folder of a finished unlearn, pretrain or "
                          "retrain run")
    record = load_record(run)
    if "method" in record:  # an unlearn run: its source's architecture and split, its own weights
        split = run / "split.npz" if (run / "split.npz").is_file() else None
        model, _, prepared, _ = load_trained(Path(record["source"]), device, data_root, weights=run / "model.pt",
                                             split=split)
    else:
        model, _, prepared, _ = load_trained(run, device, data_root)
    return model, prepared, record


def describe(model, prepared, device: torch.device, seed: int = 0, mia_features: tuple[str, ...] = MIA_FEATURES,
             wp_points: int = 1000, landscape_grid: int = 0, bf16: bool = False,
             progress: bool | None = None, retain_sample: int = 0) -> dict[str, Any]:
    """Accuracies, MIA efficacy and entanglement of one model on its prepared data (fp32: evaluation never
    autocasts; ``bf16`` is for comparisons only). ``progress``: the landscape's bar over its grid points (None: when
    stderr is a terminal). ``retain_sample`` > 0: the retain accuracy, the MIA's shadow-in set and the entanglement
    use a seeded sample of that many retain images (:func:`retain_subset`; the same for every model of a forget
    set), not all of R — a CPU-scale economy, recorded as ``retain_evaluated``."""
    def outputs(data, idx):
        return model_outputs(model, data, idx, device, bf16=bf16)

    retain_idx_all = prepared.retain_idx
    if retain_sample:
        keep = retain_subset(retain_idx_all.cpu().numpy(), retain_sample, seed)
        retain_idx_all = torch.as_tensor(keep, device=retain_idx_all.device)
    retain = outputs(prepared.data, retain_idx_all)
    forget = outputs(prepared.data, prepared.forget_idx)
    test = outputs(prepared.test, torch.arange(len(prepared.test), device=device))
    val = outputs(prepared.data, prepared.val_idx)
    retain_idx = retain_idx_all.cpu().numpy()
    shadow = np.searchsorted(retain_idx, shadow_in_indices(retain_idx, len(test.labels), seed))
    mia = mia_efficacy((retain.probs[shadow], retain.labels[shadow]), (test.probs, test.labels),
                       (forget.probs, forget.labels), features=mia_features, seed=seed)
    result = {
        "accuracy": {"retain": retain.accuracy, "forget": forget.accuracy, "test": test.accuracy,
                     "val": val.accuracy},
        "retain_evaluated": {"images": int(len(retain_idx)), "of": int(len(prepared.retain_idx)),
                             "sample_seed": seed if retain_sample else None},
        "mia_efficacy": mia,
        "entanglement": {
            "e_var": entanglement_var(retain.features, forget.features),
            "e_wp": entanglement_wp(retain.features, forget.features, max_points=wp_points, seed=seed),
        },
    }
    e_var = result["entanglement"]["e_var"]
    result["entanglement"]["e_var_authors_units"] = e_var_authors_units(e_var)
    result["entanglement"]["units"] = {"e_var": "raw ratio within/between on L2-normalised features (ours)",
                                       "e_var_authors_units": "clip(e_var / 1300, 0, 1), the authors' analysis "
                                                              "script's normalisation (spec §3)"}
    try:
        result["entanglement"]["e_var_classwise"] = classwise(entanglement_var, retain.features, retain.labels,
                                                              forget.features, forget.labels)
        result["entanglement"]["e_wp_classwise"] = classwise(entanglement_wp, retain.features, retain.labels,
                                                             forget.features, forget.labels,
                                                             max_points=wp_points, seed=seed)
    except ConfigError as exc:  # class-wise forgetting: no class on both sides
        result["entanglement"]["classwise"] = str(exc)
    if landscape_grid:
        from .landscape import landscape

        sets = {"forget": (prepared.data, prepared.forget_idx),
                "test": (prepared.test, torch.arange(len(prepared.test), device=device))}
        surfaces = landscape(model, sets, seed=seed, grid=landscape_grid, device=device, progress=progress)
        result["landscape"] = {name: {"summary": s["summary"], "alphas": np.asarray(s["alphas"]).tolist(),
                                      "loss": np.asarray(s["loss"]).tolist()} for name, s in surfaces.items()}
    return result


def check_retain_sample(value: Any) -> None:
    """``--retain-sample``: 0 (all of R) or a positive integer."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"--retain-sample {value!r}: must be 0 (all of R) or a positive integer")


def retain_subset(retain_idx: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A sorted seeded sample of ``size`` retain indices (all of them when ``size`` >= |R|); its generator is
    seeded apart from the MIA's shadow-in sample (:func:`empirical.metrics.shadow_in_indices`) and does not depend on
    the order of ``retain_idx``."""
    retain_idx = np.sort(np.asarray(retain_idx))
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        raise ConfigError(f"retain_sample={size!r}: must be a positive integer (0 in the caller: all of R)")
    if size >= len(retain_idx):
        return retain_idx
    return np.sort(np.random.default_rng([seed, 7]).choice(retain_idx, size, replace=False))


def evaluate(run: Path, retrain: Path, out: Path | None = None, seed: int = 0,
             mia_features: tuple[str, ...] = MIA_FEATURES, wp_points: int = 1000, landscape_grid: int = 0,
             device: str = "auto", data_root: str = "", reference: dict | None = None,
             progress: bool | None = None, retain_sample: int = 0) -> dict[str, Any]:
    """The metrics of ``run`` against ``retrain`` (module docstring); written to ``out`` when given (checked, and its
    folder locked, before anything is computed: :mod:`simulations.runfolder`). ``reference``: the retrained model's
    :func:`describe` computed before with the same settings (the protocol computes it once per forget set)."""
    if out is None:
        return _evaluate(run, retrain, None, seed, mia_features, wp_points, landscape_grid, device, data_root,
                         reference, progress, retain_sample)
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the metrics JSON file (e.g. {out / 'metrics.json'})")
    if out.name in RUN_FILES:
        raise ConfigError(f"--out {out} would overwrite a run's own {out.name}; name another file (metrics.json)")
    with RunFolder(out.parent, "evaluate", marker=False) as folder:
        result = _evaluate(run, retrain, out, seed, mia_features, wp_points, landscape_grid, device, data_root,
                           reference, progress, retain_sample)
        folder.begin()
        atomic_write_json(out, result)
    return result


RUN_FILES = ("record.json", "model.pt", "mask.pt", "split.npz", "checkpoint.pt", "run.json", "summary.json",
             "result.json", "results.csv", "manifest.json")


def _evaluate(run, retrain, out, seed, mia_features, wp_points, landscape_grid, device, data_root,
              reference=None, progress=None, retain_sample=0) -> dict:
    from .trainer import resolve_device

    if HEADLINE_MIA_FEATURE not in mia_features:
        raise ConfigError(f"the MIA features must include {HEADLINE_MIA_FEATURE!r} (ToW-MIA's headline feature)")
    if not (isinstance(wp_points, int) and wp_points >= 1):
        raise ConfigError(f"--wp-points {wp_points}: must be a positive integer")
    if not (isinstance(landscape_grid, int) and (landscape_grid == 0 or (landscape_grid >= 3
                                                                         and landscape_grid % 2 == 1))):
        raise ConfigError(f"--landscape-grid {landscape_grid}: must be 0 (skip) or an odd integer >= 3 (25 in the "
                          "paper)")
    check_retain_sample(retain_sample)
    dev = resolve_device(TrainConfig(device=device))
    model, prepared, record = load_run(run, dev, data_root)
    model_rt, prepared_rt, record_rt = load_run(retrain, dev, data_root)
    if not torch.equal(prepared.forget_idx.cpu(), prepared_rt.forget_idx.cpu()):
        raise ConfigError(f"{run} and {retrain} have different forget sets: retrain on the same split "
                          "(python -m empirical retrain --set split_file=<pretrain run>/split.npz)")
    kwargs = dict(seed=seed, mia_features=mia_features, wp_points=wp_points, landscape_grid=landscape_grid,
                  retain_sample=retain_sample,
                  progress=progress)
    ours = describe(model, prepared, dev, **kwargs)
    ref = reference if reference is not None else describe(model_rt, prepared_rt, dev, **kwargs)
    if ref.get("retain_evaluated") != ours["retain_evaluated"]:
        raise ConfigError(f"the retrained model's reference was computed on other retain images "
                          f"({ref.get('retain_evaluated')}) than this evaluation ({ours['retain_evaluated']}); "
                          "recompute it with the same retain_sample and seed")
    mia, mia_rt = ours["mia_efficacy"][HEADLINE_MIA_FEATURE], ref["mia_efficacy"][HEADLINE_MIA_FEATURE]
    from .unlearn import forget_id

    result = {
        "run": str(run), "retrain": str(retrain), "method": record.get("method", record.get("stage")),
        "forget_id": forget_id(prepared.forget_idx.cpu().numpy()), "seed": seed,
        "tow": tow(ours["accuracy"], ref["accuracy"]),
        "tow_signed_authors_code": tow(ours["accuracy"], ref["accuracy"], signed=True),
        "tow_mia": tow_mia(ours["accuracy"], mia, ref["accuracy"], mia_rt),
        "avg_gap": avg_gap(ours["accuracy"], mia, ref["accuracy"], mia_rt),
        "unlearned": ours, "retrained": ref, "units": UNITS, "provenance": provenance(str(dev)),
    }
    return result


# the units of the numbers in a metrics file (the screen shows ToW, ToW-MIA and MIA efficacy x100, in percent)
UNITS = {"accuracy": "percent (0-100)", "mia_efficacy": "fraction (0-1)", "tow": "fraction (0-1)",
         "tow_signed_authors_code": "fraction (can exceed 1)", "tow_mia": "fraction (0-1)",
         "avg_gap": "percentage points (MIA efficacy x100)", "e_var": "raw ratio (see entanglement.units)",
         "e_wp": "raw ratio", "landscape": "mean cross-entropy (nats); basin_ratio in percent"}


def summary_lines(result: dict) -> list[str]:
    """The screen table: accuracies and MIA efficacy in percent, ToW and ToW-MIA x100, the avg gap in percentage
    points (the metrics file keeps fractions: its ``units``)."""
    ours, ref = result["unlearned"], result["retrained"]
    lines = [f"{'':10s} {'RA %':>7s} {'FA %':>7s} {'TA %':>7s} {'MIA %':>7s} {'E_Var':>8s} {'E_Wp':>7s}"]
    for name, r in (("unlearned", ours), ("retrain", ref)):
        a, e = r["accuracy"], r["entanglement"]
        lines.append(f"{name:10s} {a['retain']:7.2f} {a['forget']:7.2f} {a['test']:7.2f} "
                     f"{100 * r['mia_efficacy'][HEADLINE_MIA_FEATURE]:7.2f} {e['e_var']:8.3f} {e['e_wp']:7.3f}")
    signed = 100 * result["tow_signed_authors_code"]
    lines.append(f"ToW x100 {100 * result['tow']:.2f}  ToW-MIA x100 {100 * result['tow_mia']:.2f}  avg gap "
                 f"{result['avg_gap']:.2f} pp  (signed ToW x100 of the authors' code {signed:.2f})")
    return lines
