"""Positive and negative controls of every verdict rule of :mod:`theory.validation`: ``python -m theory controls``.

A control is a synthetic "world": sweep tables and trajectories with the columns the simulator writes, generated
from a handful of parameters (boundary exponents, error levels, activation fractions, rates). The positive world
satisfies every prediction; for each rule a negative world changes the one parameter that rule is about so that
the prediction is violated. Both go through :func:`theory.validation.run_predictions`, the code path of the real
report. A rule passes its controls when the positive world gives *agrees* and the negative one *disagrees*.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .validation import ValidationPreset, run_predictions, with_premise

P_FLIP = 0.1
DELTA = 0.05
PRESET = ValidationPreset(
    "controls", base=dict(n=20, P=2, m=10, sigma_p=1.0, label_flip=P_FLIP, steps=400, unlearn_steps=50),
    ds=[100, 200, 400, 800, 1600], signals=[round(0.1 * k, 6) for k in range(1, 81)], seeds=list(range(10)),
    n_values=[10, 20, 40, 80], n_sweep_d=1600, n_signals=[round(0.1 * k, 6) for k in range(1, 81)],
    alphas=[round(0.1 * k, 6) for k in range(1, 10)], alpha_signal=6.0, lemma_signals=[0.5, 1.0, 1.5, 2.0, 3.0],
    lemma_d=1600, delta=DELTA, n_boot=100)


@dataclass(frozen=True)
class World:
    """The parameters of a synthetic world; the defaults satisfy every prediction."""

    gd_exp_d: float = 0.25  # GD boundary ~ d^gd_exp_d n^gd_exp_n
    gd_exp_n: float = -0.25
    sam_mode: str = "flat"  # flat: SAM boundary constant; proportional: a fixed fraction of GD's; sloped: ~ d^1/4
    sam_level: float = 0.8
    benign_rising: bool = False  # benign-side error rising with ||mu|| instead of decaying
    active_sam: float = 0.1  # early active own-class noise fraction (GD: 0.5)
    noise_signal_sam: float = 0.2  # max zeta_bar / max kappa at the end of pretraining (GD: 2)
    lemma_ratio_retain: float = 0.4  # SAM/SGD active fraction at W+eps on R and on F during NegGrad
    lemma_ratio_forget: float = 1.1
    window_error: tuple = (0.30, 0.12)  # post-NegGrad test error (GD, SAM) in the weak-signal window
    window_forget: tuple = (0.2, 0.6)  # post-NegGrad forget accuracy (GD, SAM) in the window
    surplus_exp: float = 2.0  # Delta kappa_SAM - Delta kappa_SGD ~ ||phi||^surplus_exp
    alpha_star: tuple = (0.6, 0.3)  # (GD, SAM)
    minmax_forget_shift: float = -0.3  # Sharp MinMax forget accuracy minus SAM-NegGrad's
    samax_factor: float = 1.3  # SAM-max boundary / GD boundary


NEGATIVE: dict[str, dict] = {
    "2a": {"gd_exp_d": 0.0},
    "2b": {"gd_exp_n": 0.0},
    "3": {"benign_rising": True},
    "4a": {"sam_mode": "proportional", "sam_level": 1.3},
    "4b": {"sam_mode": "sloped"},
    "4c": {"sam_mode": "proportional", "sam_level": 0.5},
    "5a": {"active_sam": 0.5},
    "5b": {"noise_signal_sam": 3.0},
    "6a": {"lemma_ratio_retain": 1.0, "lemma_ratio_forget": 0.5},
    "7": {"window_error": (0.12, 0.30)},
    "8": {"surplus_exp": 0.5},
    "9": {"alpha_star": (0.3, 0.6)},
    "10": {"window_forget": (0.8, 0.3)},
    "11a": {"minmax_forget_shift": 0.2},
    "11b": {"samax_factor": 0.8},
}


def _error(mu, boundary, rising: bool = False):
    """Seed-mean test error that falls through p + delta exactly at ``boundary``: p + A exp(-(mu/b)^4 ln(A/delta)),
    so log(error - p) is linear in mu^4 / b^4 ~ n mu^4 / d; with ``rising`` the benign side rises instead."""
    amp = 0.35
    fall = P_FLIP + amp * np.exp(-((mu / boundary) ** 4) * np.log(amp / DELTA))
    if rising:
        return np.where(mu < boundary, fall, P_FLIP + 0.02 + 0.025 * (mu - boundary) / mu)
    return fall


class SyntheticSweeps:
    """The interface of :class:`theory.validation.Sweeps` (``preset``, ``get``, ``trajectories``, ``settings``)
    over a synthetic world."""

    def __init__(self, world: World, preset: ValidationPreset = PRESET, seed: int = 0):
        self.world, self.preset, self.settings = world, preset, {}
        self.rng = np.random.default_rng(seed)
        self._traj: dict[str, dict] = {}
        self._tables: dict[str, pd.DataFrame] = {}
        self._builders = {"heat_d": self._heat_d, "heat_n": self._heat_n, "scratch": self._scratch,
                          "alpha": self._alpha, "minmax": self._minmax, "samax": self._samax}

    def get(self, name: str) -> pd.DataFrame:
        """The table of sweep ``name``, built on first use (a rule reads only the tables it needs)."""
        if name not in self._tables:
            self._name = name
            self._tables[name] = with_premise(self._builders[name]())
        return self._tables[name]

    def trajectories(self, name: str, hashes) -> dict:
        return {h: self._traj[h] for h in hashes}

    # ------------------------------------------------------------------ boundaries
    def gd_boundary(self, d, n):
        w = self.world
        return 0.6 * (d / 100) ** w.gd_exp_d * (n / 20) ** w.gd_exp_n * 2.0

    def sam_boundary(self, d, n):
        w = self.world
        if w.sam_mode == "flat":
            return w.sam_level
        if w.sam_mode == "sloped":
            return w.sam_level * (d / 100) ** 0.25
        return w.sam_level * self.gd_boundary(d, n)

    def _noise(self):
        return 0.003 * self.rng.normal()

    def _row(self, **kw) -> dict:
        base = {"n": 20, "d": 1600, "label_flip": P_FLIP, "pretrain_train_error": 0.0, "pretrain_train_loss": 0.01,
                "train_error": 0.0, "train_loss": 0.01, "pretrain_test_error_se": 0.003, "test_error_se": 0.003,
                "alpha": 0.5, "unlearn_optimizer": kw.get("optimizer", "gd")}
        base.update(kw)
        self._count = getattr(self, "_count", 0) + 1
        base["hash"] = f"{self._name}-{self._count}"  # unique per synthetic run, like a config hash
        return base

    def _heat(self, along: str) -> pd.DataFrame:
        w, pre = self.world, self.preset
        rows = []
        values = pre.ds if along == "d" else pre.n_values
        signals = pre.signals if along == "d" else pre.n_signals
        for v in values:
            d, n = (v, 20) if along == "d" else (pre.n_sweep_d, v)
            bounds = {"gd": self.gd_boundary(d, n), "sam": self.sam_boundary(d, n)}
            for opt in ("gd", "sam"):
                for seed in pre.seeds:
                    for mu in signals:
                        err = float(_error(mu, bounds[opt], w.benign_rising)) + self._noise()
                        in_window = bounds["sam"] <= mu < bounds["gd"]
                        i = 0 if opt == "gd" else 1
                        after = w.window_error[i] if in_window else err
                        forget = w.window_forget[i] if in_window else (1.0 if opt == "gd" else w.window_forget[1])
                        r = self._row(optimizer=opt, d=d, n=n, seed=seed, signal_strength=mu,
                                      pretrain_test_error=err, test_error=after, forget_acc=forget)
                        rows.append(r)
                        if along == "d":
                            self._traj[r["hash"]] = self._pretrain_trajectory(opt)
        return pd.DataFrame(rows)

    def _heat_d(self):
        return self._heat("d")

    def _heat_n(self):
        return self._heat("n")

    def _pretrain_trajectory(self, opt: str) -> dict:
        steps = np.linspace(0, self.preset.base["steps"], 21)
        active = 0.5 if opt == "gd" else self.world.active_sam
        ratio = 2.0 if opt == "gd" else self.world.noise_signal_sam
        return {"step": steps, "active_noise_fraction": np.full(steps.size, active),
                "signal_coef_max": np.linspace(0, 1, steps.size), "noise_coef_max": np.linspace(0, ratio, steps.size)}

    def _scratch(self) -> pd.DataFrame:
        w, pre = self.world, self.preset
        rows = []
        steps = np.linspace(0, pre.base["unlearn_steps"], 11)
        for opt in ("gd", "sam"):
            for seed in pre.seeds:
                for phi in pre.lemma_signals:
                    rate = 0.01 * phi**2 * (1 + 0.01 * self.rng.normal())
                    if opt == "sam":
                        rate += 0.005 * phi**w.surplus_exp * (1 + 0.01 * self.rng.normal())
                    r = self._row(optimizer="gd", unlearn_optimizer=opt, seed=seed, signal_strength=phi,
                                  pretrain_test_error=np.nan, test_error=0.2, forget_acc=0.5)
                    rows.append(r)
                    sam = opt == "sam"
                    self._traj[r["hash"]] = {
                        "step": steps, "signal_coef_max": rate * steps,
                        "active_noise_fraction_retain": np.full(steps.size, 0.5 * (w.lemma_ratio_retain if sam else 1)),
                        "active_noise_fraction_forget": np.full(steps.size, 0.4 * (w.lemma_ratio_forget if sam else 1)),
                        "loss_slope_forget": np.full(steps.size, 0.6),
                        "loss_slope_perturbed_forget": np.full(steps.size, 0.5 if sam else 0.6),
                        "own_noise_coef_mean_retain": np.linspace(0, 1, steps.size),
                        "own_noise_coef_mean_forget": np.linspace(0, -1, steps.size)}
        return pd.DataFrame(rows)

    def _alpha(self) -> pd.DataFrame:
        w, pre = self.world, self.preset
        rows = []
        for d in pre.ds:
            for i, opt in enumerate(("gd", "sam")):
                for seed in pre.seeds:
                    for a in pre.alphas:
                        after = P_FLIP + (0.3 if a < w.alpha_star[i] else 0.01) + self._noise()
                        rows.append(self._row(optimizer=opt, d=d, seed=seed, alpha=a, signal_strength=pre.alpha_signal,
                                              pretrain_test_error=P_FLIP + 0.01, test_error=after, forget_acc=0.5))
        return pd.DataFrame(rows)

    def _minmax(self) -> pd.DataFrame:
        heat = self.get("heat_d")
        self._name = "minmax"
        sam = heat[heat["optimizer"] == "sam"].copy()
        sam["forget_acc"] = sam["forget_acc"] + self.world.minmax_forget_shift
        sam["hash"] = ["minmax-" + h for h in sam["hash"]]
        return sam.drop(columns=[c for c in sam.columns if c.startswith("pre_") or c == "interpolated"])

    def _samax(self) -> pd.DataFrame:
        pre, rows = self.preset, []
        for d in pre.ds:
            b = self.gd_boundary(d, 20)
            for opt, factor in (("gd", 1.0), ("sam", self.world.samax_factor)):
                for seed in pre.seeds:
                    for mu in pre.signals:
                        err = float(_error(mu, b * factor)) + self._noise()
                        rows.append(self._row(optimizer=opt, d=d, seed=seed, signal_strength=mu,
                                              pretrain_test_error=np.nan, test_error=err, forget_acc=1.0))
        return pd.DataFrame(rows)


def _verdicts(world: World, only: list[str] | None = None) -> dict[str, str]:
    table = run_predictions(SyntheticSweeps(world), only)
    return {str(r["prediction"]).split(" ", 1)[0]: r["verdict"] for r in table.to_dict("records")}


def _prediction_of(rule: str) -> str:
    return rule.rstrip("abcdefgh")


def run_controls(rules: list[str] | None = None) -> list[dict]:
    """``[{rule, positive, negative, passed}]`` for every rule of :data:`NEGATIVE` (or the named ones)."""
    rules = list(NEGATIVE) if rules is None else rules
    unknown = [r for r in rules if r not in NEGATIVE]
    if unknown:
        raise KeyError(f"unknown rule(s) {unknown}; known: {', '.join(NEGATIVE)}")
    positive = _verdicts(World(), sorted({_prediction_of(r) for r in rules}))
    out = []
    for rule in rules:
        negative = _verdicts(replace(World(), **NEGATIVE[rule]), [_prediction_of(rule)]).get(rule, "missing")
        pos = positive.get(rule, "missing")
        out.append({"rule": rule, "positive": pos, "negative": negative,
                    "passed": pos == "agrees" and negative == "disagrees"})
    return out
