"""Configuration of one simulation run: a frozen dataclass with a stable hash, presets and overrides.

Every field is described, with its default, in ``docs/model.md`` (#configuration-fields); open modelling points of the
theory are fields, so
every result records which choice it used. The field names are a public interface: scripts and cached results
rely on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError  # noqa: F401 - its home is simulations.errors; importable from here as before

SCHEMA_VERSION = 1

CHOICES: dict[str, tuple[str, ...]] = {
    "backend": ("gram", "weights"),
    "activation": ("relu", "polyrelu"),
    "optimizer": ("gd", "sgd", "sam"),
    "unlearn_optimizer": ("gd", "sgd", "sam"),
    "sam_sign": ("min", "max"),
    "forget_select": ("random", "noisy"),
    "forget_target": ("flip", "uniform"),
    "unlearn_method": ("none", "neggrad", "rl", "ga", "ft", "retrain", "sharp_minmax"),
    "mask_granularity": ("filter", "coordinate"),
    "regime": ("pretrain_then_unlearn", "from_scratch"),
    "precision": ("float64", "float32"),
    "init": ("gaussian", "torch_uniform"),
    "patch_aggregation": ("sum", "mean"),
    "output_scale": ("inv_m", "one"),
    "rho_rule": ("fixed", "chen"),
}


@dataclass(frozen=True)
class SimConfig:
    """One run of the two-layer CNN on the signal–noise model (docs/model.md).

    Data model (§1): ``n`` samples of ``P`` patches in R^d; one patch is ``yhat * mu`` with
    ``||mu|| = signal_strength``, the others noise ``xi ~ N(0, sigma_p^2 (I - mu mu^T/||mu||^2))`` when
    ``noise_projected`` (else ``N(0, sigma_p^2 I)``); with ``shared_noise`` the P-1 noise patches of a sample are one
    vector, else independent draws. Labels are flipped with probability ``label_flip``.
    Network (§2): ``2m`` filters, ``f = F_{+1} - F_{-1}``, activation ``relu`` or ``polyrelu`` (``max(0,z)^q``),
    init ``N(0, sigma_0^2 I)``, logistic loss. The (K) authors' script's network is reachable too:
    ``filter_bias`` adds a trainable bias per filter, ``sigma(<w_{j,r}, x^{(p)}> + b_{j,r})``, drawn by the weights'
    init rule; ``init=torch_uniform`` draws weights and biases from ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's default
    for fan_in = d; ``sigma_0`` is then unused); ``patch_aggregation=mean`` divides the sum over patches by P;
    ``output_scale=one`` drops the 1/m of the fixed second layer.
    Optimizers (§3): ``gd`` (full batch), ``sgd`` (``batch_size``), ``sam`` (radius ``rho``, batch ``batch_size``;
    0 = full batch; ``rho_rule=chen`` makes ``rho`` the constant of (C)'s radius ``rho m sqrt(B)/(P sigma_p sqrt d)``,
    B = the batch size, n for full batch, for the training and the unlearning SAM alike); ``sam_steps`` > 0 runs SAM
    for the first ``sam_steps`` pretraining steps only, then the base step (rho = 0): a schedule of this project's,
    not (C)'s optimizer, that lets SAM block noise memorisation early and still fit the flipped samples
    (docs/sam-interpolation.md); ``sam_sign``/``sam_lambda`` give the generalised step ``g + s*lambda*(g(W+eps) - g)``.
    Unlearning (§4): ``unlearn_method`` on forget set F (``forget_size`` samples chosen by ``forget_select``) with
    retain weight ``alpha``, optimizer ``unlearn_optimizer``, ``unlearn_steps`` steps at ``unlearn_lr``.
    """

    backend: str = "gram"
    n: int = 20
    d: int = 200
    P: int = 2
    m: int = 10
    signal_strength: float = 1.0
    sigma_p: float = 1.0
    sigma_0: float = 0.01
    label_flip: float = 0.1
    noise_projected: bool = True
    shared_noise: bool = True
    activation: str = "relu"
    q: float = 3.0
    filter_bias: bool = False
    init: str = "gaussian"
    patch_aggregation: str = "sum"
    output_scale: str = "inv_m"
    optimizer: str = "gd"
    lr: float = 0.1
    rho: float = 0.0
    rho_rule: str = "fixed"
    sam_steps: int = 0
    sam_adaptive: bool = False
    sam_sign: str = "min"
    sam_lambda: float = 1.0
    batch_size: int = 0
    steps: int = 100
    seed: int = 0
    n_test: int = 10_000
    forget_size: int = 2
    forget_select: str = "random"
    forget_target: str = "flip"
    unlearn_method: str = "none"
    unlearn_optimizer: str = "gd"
    alpha: float = 0.9
    unlearn_steps: int = 50
    unlearn_lr: float = 0.1
    mask_fraction: float = 0.3
    mask_granularity: str = "filter"
    regime: str = "pretrain_then_unlearn"
    precision: str = "float64"
    log_points: int = 21

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in FIELD_NAMES)

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of every field (and the schema version): names the cached result.

        A field added after schema version 1 enters the hash only when it differs from its default (a default
        that leaves every result as it was), so configurations that existed before keep their hash and cache."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            names = tuple(k for k in FIELD_NAMES if k in _SCHEMA_1_FIELDS or getattr(self, k) != _DEFAULTS[k])
            values = [float(getattr(self, k)) if k in _FLOAT_FIELDS else getattr(self, k) for k in names]
            payload = f"{SCHEMA_VERSION}|{names}|{values}"
            cached = hashlib.sha256(payload.encode()).hexdigest()[:16]
            object.__setattr__(self, "_hash", cached)
        return cached

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **coerce_values(changes))

    # ------------------------------------------------------------------ derived
    @property
    def n_noise_vectors(self) -> int:
        """Distinct training noise vectors N: one per sample when shared, else one per noise patch."""
        return self.n if self.shared_noise else self.n * (self.P - 1)

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0 or self.batch_size >= self.n

    @property
    def unlearns(self) -> bool:
        return self.unlearn_method != "none"


FIELD_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "bool": bool, "str": str}[f.type] for f in fields(SimConfig)
}
FIELD_NAMES: tuple[str, ...] = tuple(FIELD_TYPES)
_FLOAT_FIELDS = frozenset(k for k, t in FIELD_TYPES.items() if t is float)
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SimConfig)}
_SCHEMA_1_FIELDS = frozenset((  # the fields of schema version 1, which always enter the hash
    "backend", "n", "d", "P", "m", "signal_strength", "sigma_p", "sigma_0", "label_flip", "noise_projected",
    "shared_noise", "activation", "q", "optimizer", "lr", "rho", "sam_adaptive", "sam_sign", "sam_lambda",
    "batch_size", "steps", "seed", "n_test", "forget_size", "forget_select", "forget_target", "unlearn_method",
    "unlearn_optimizer", "alpha", "unlearn_steps", "unlearn_lr", "mask_fraction", "mask_granularity", "regime",
    "precision", "log_points"))


_POSITIVE_INTS = frozenset(("n", "d", "P", "m", "n_test", "log_points"))
_NON_NEGATIVE = frozenset(("steps", "unlearn_steps", "sam_steps", "batch_size", "forget_size", "seed", "signal_strength",
                           "sigma_p", "sigma_0", "lr", "rho", "unlearn_lr", "sam_lambda"))
_VALID_FIELD_VALUES: set[tuple] = set()  # (name, type, value) already checked: sweeps build many configurations


def _validate_field(name: str, typ: type, value: Any) -> None:
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{name}={value!r}: expected {typ.__name__}")
    if typ is float and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}: must be a finite number")
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(CHOICES[name])}")
    if name in _POSITIVE_INTS and value < 1:
        raise ConfigError(f"{name}={value}: must be a positive integer")
    if name in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{name}={value}: must be >= 0 (negative values have no meaning here)")


def validate(cfg: SimConfig) -> None:
    """Raise :class:`ConfigError` with one clear message for the first invalid field."""
    seen = _VALID_FIELD_VALUES
    for name, typ in FIELD_TYPES.items():
        value = getattr(cfg, name)
        key = (name, type(value), value)
        if key not in seen:
            _validate_field(name, typ, value)
            if len(seen) < 1_000_000:
                seen.add(key)
    if cfg.P < 2:
        raise ConfigError(f"P={cfg.P}: a sample needs one signal patch and at least one noise patch (P >= 2)")
    if cfg.sigma_p == 0:
        raise ConfigError("sigma_p=0: the noise must have positive scale")
    if cfg.sigma_0 == 0 and cfg.init == "gaussian" and cfg.steps + cfg.unlearn_steps > 0:
        raise ConfigError("sigma_0=0: every filter starts at zero, where the ReLU's gradient vanishes, so the network "
                          "cannot train; use sigma_0 > 0 (e.g. 0.01)")
    if not 0 <= cfg.label_flip < 0.5:
        raise ConfigError(f"label_flip={cfg.label_flip}: must lie in [0, 0.5)")
    if not 0 <= cfg.alpha <= 1:
        raise ConfigError(f"alpha={cfg.alpha}: the retain weight must lie in [0, 1]")
    if not 0 < cfg.mask_fraction <= 1:
        raise ConfigError(f"mask_fraction={cfg.mask_fraction}: must lie in (0, 1]")
    if cfg.activation == "polyrelu" and cfg.q <= 1:
        raise ConfigError(f"q={cfg.q}: the polynomial ReLU needs q > 1 (Cao et al. use q > 2)")
    if cfg.forget_size > cfg.n:
        raise ConfigError(f"forget_size={cfg.forget_size} exceeds n={cfg.n}: the forget set is a subset of the data")
    if cfg.unlearns and cfg.unlearn_method != "retrain" and cfg.forget_size == 0:
        raise ConfigError(f"unlearn_method={cfg.unlearn_method} needs forget_size >= 1")
    if cfg.unlearns and cfg.forget_size == cfg.n and cfg.unlearn_method in ("neggrad", "ft", "retrain", "sharp_minmax"):
        raise ConfigError(f"forget_size={cfg.forget_size} = n leaves no retain data for {cfg.unlearn_method}")
    if cfg.sam_steps > cfg.steps:
        raise ConfigError(f"sam_steps={cfg.sam_steps} exceeds steps={cfg.steps}: SAM runs for the first sam_steps "
                          "pretraining steps (0 = all of them)")
    if cfg.rho_rule == "chen" and cfg.sam_adaptive:
        raise ConfigError("rho_rule=chen scales the plain SAM radius by (C)'s m sqrt(B)/(P sigma_p sqrt d); adaptive "
                          "SAM's radius is relative to |w| and has no such scale: use rho_rule=fixed with sam_adaptive")
    if cfg.backend == "gram":
        if cfg.sam_adaptive:
            raise ConfigError("sam_adaptive=True scales by |w| per coordinate, which the gram backend cannot "
                              "express: set backend=weights")
        if cfg.init == "torch_uniform":
            raise ConfigError("init=torch_uniform (uniform per coordinate) is not rotation invariant, the gram "
                              "backend cannot express it: set backend=weights (or init=gaussian)")
        if cfg.unlearn_method == "sharp_minmax" and cfg.mask_granularity == "coordinate":
            raise ConfigError("mask_granularity=coordinate is not rotation invariant, the gram backend cannot "
                              "express it: set backend=weights (or mask_granularity=filter)")


# ---------------------------------------------------------------------- parsing overrides


def parse_value(name: str, text: str, field_types: dict[str, type] | None = None) -> Any:
    """Parse ``text`` as the type of field ``name`` of ``field_types`` (default: SimConfig's); raises ConfigError
    for unknown fields and malformed values."""
    field_types = FIELD_TYPES if field_types is None else field_types
    if name not in field_types:
        from .fields import suggest

        raise ConfigError(f"unknown option {name!r}{suggest(name, field_types)}; known options: "
                          f"{', '.join(field_types)}")
    typ = field_types[name]
    try:
        if typ is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            try:  # an integer literal exactly (a seed above 2**53 must not pass through a float)
                v = int(text.strip())
            except ValueError:
                v = None
            if v is not None:
                if abs(v) > 2**63 - 1:
                    raise ValueError
                return v
            f = float(text)
            if not math.isfinite(f):
                raise ConfigError(f"{name}={text.strip()}: must be a finite integer")
            if f != int(f) or abs(f) > 2**63 - 1:
                raise ValueError
            return int(f)
        if typ is float:
            f = float(text)
            if not math.isfinite(f):
                raise ConfigError(f"{name}={text.strip()}: must be a finite number (NaN and inf have no meaning here)")
            return f
        return text.strip()
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}={text!r}: expected {typ.__name__}") from None


def coerce_values(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if k not in FIELD_TYPES:
            from .fields import suggest

            raise ConfigError(f"unknown option {k!r}{suggest(k, FIELD_NAMES)}; known options: {', '.join(FIELD_NAMES)}")
        out[k] = parse_value(k, v) if isinstance(v, str) and FIELD_TYPES[k] is not str else v
        if FIELD_TYPES[k] is float and isinstance(out[k], int) and not isinstance(out[k], bool):
            out[k] = float(out[k])
    return out


def parse_assignments(items: list[str] | None, field_types: dict[str, type] | None = None) -> dict[str, Any]:
    """``["key=value", ...]`` → typed dict (fields of ``field_types``, default SimConfig's)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(key.strip(), text, field_types)
    return out


def parse_grid_axis(item: str) -> tuple[str, list[Any]]:
    """``key=v1,v2,...`` or ``key=start:stop:step`` (stop inclusive up to rounding) → (key, values).

    A linked axis ``key1+key2=a1+a2,b1+b2`` varies several fields together (values are tuples)."""
    if "=" not in item:
        raise ConfigError(f"--grid {item!r}: expected key=v1,v2,... or key=start:stop:step")
    key, text = (s.strip() for s in item.split("=", 1))
    if "+" in key:  # linked axis: optimizer+unlearn_optimizer=gd+gd,sam+sam
        names = [k.strip() for k in key.split("+")]
        values = []
        for part in (t for t in text.split(",") if t.strip()):
            texts = part.split("+")
            if len(texts) != len(names):
                raise ConfigError(f"--grid {item!r}: each value of a linked axis needs {len(names)} parts joined by +")
            values.append(tuple(parse_value(k, t) for k, t in zip(names, texts)))
        if not values:
            raise ConfigError(f"--grid {item!r}: no values")
        return "+".join(names), values
    if key not in FIELD_TYPES:
        from .fields import suggest

        raise ConfigError(f"unknown grid key {key!r}{suggest(key, FIELD_NAMES)}; known options: "
                          f"{', '.join(FIELD_NAMES)}")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--grid {item!r}: a range is start:stop:step")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--grid {item!r}: start, stop and step must be numbers") from None
        if not all(math.isfinite(v) for v in (start, stop, step)):
            raise ConfigError(f"--grid {item!r}: start, stop and step must be finite numbers")
        if step <= 0 or stop < start:
            raise ConfigError(f"--grid {item!r}: need step > 0 and stop >= start")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > 10_000_000:
            raise ConfigError(f"--grid {item!r}: {count} values on one axis; use a coarser step")
        raw = [start + i * step for i in range(count)]
        if FIELD_TYPES[key] is int:
            values: list[Any] = [int(round(v)) for v in raw]
        elif FIELD_TYPES[key] is float:
            values = [round(v, 12) for v in raw]
        else:
            raise ConfigError(f"--grid {item!r}: a numeric range for the non-numeric option {key}")
    else:
        values = [parse_value(key, t) for t in text.split(",") if t.strip() != ""]
    if not values:
        raise ConfigError(f"--grid {item!r}: no values")
    return key, values


# ---------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A base configuration (overrides of the defaults) plus the grid a sweep of it runs by default."""

    name: str
    description: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def config(self, overrides: dict[str, Any] | None = None) -> SimConfig:
        return SimConfig(**coerce_values({**self.base, **(overrides or {})}))


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke",
        "a few signal strengths x {gd, sam}, each before and after NegGrad; seconds on a CPU",
        base=dict(n=20, d=400, m=10, steps=200, lr=0.5, rho=0.3, n_test=2000, forget_size=2,
                  unlearn_method="neggrad", unlearn_steps=50, unlearn_lr=0.5, alpha=0.5),
        grid={"signal_strength": [0.5, 1.0, 2.0, 4.0], "optimizer+unlearn_optimizer": [("gd", "gd"), ("sam", "sam")],
              "seed": [0, 1]},
    ),
    "quick": Preset(
        "quick",
        "signal strength x d heatmap, gd vs sam, before and after NegGrad; seconds on a CPU",
        base=dict(n=20, d=400, m=10, steps=200, lr=0.5, rho=0.3, n_test=5000, forget_size=2,
                  unlearn_method="neggrad", unlearn_steps=50, unlearn_lr=0.5, alpha=0.5),
        grid={"signal_strength": [round(0.25 * k, 2) for k in range(1, 21)],
              "d": [100, 200, 400, 800, 1600, 3200], "optimizer+unlearn_optimizer": [("gd", "gd"), ("sam", "sam")],
              "seed": [0, 1, 2]},
    ),
    "paper": Preset(
        "paper",
        "the shape of the (K) authors' grid (signal 0..9.9 x d 100..1090 x 10 seeds, n=20, P=2, m=10, p=0.1, "
        "unprojected N(0,I) noise, lr 0.1, 100 GD steps, 1,000 test samples; float32), for gd and sam, on our "
        "network (1/m, sum over patches, no bias, sigma_0=0.01: an effective lr 25x smaller than theirs). The grid's "
        "shape only, not the authors' exact setting: for that use kou2023",
        base=dict(n=20, P=2, m=10, sigma_p=1.0, label_flip=0.1, noise_projected=False, lr=0.1, steps=100,
                  n_test=1000, rho=0.3, forget_size=2, unlearn_method="none", precision="float32"),
        grid=dict(signal_strength=[round(0.1 * k, 1) for k in range(100)], d=list(range(100, 1100, 10)),
                  optimizer=["gd", "sam"], seed=list(range(10))),
    ),
    "kou2023": Preset(
        "kou2023",
        "the (K) authors' syntheticrelu.py setting: their network exactly (trainable filter bias, mean over "
        "patches, no 1/m, PyTorch's uniform init), n=20, P=2, m=10, p=0.1, unprojected N(0,I) noise, full-batch GD, lr 0.1, 100 steps, "
        "1,000 test samples; grid signal 0.5..10 x d 100..1090 x 5 seeds (weights backend; float32 as theirs)",
        base=dict(backend="weights", n=20, P=2, m=10, sigma_p=1.0, label_flip=0.1, noise_projected=False,
                  optimizer="gd", lr=0.1, steps=100, n_test=1000, filter_bias=True, init="torch_uniform",
                  patch_aggregation="mean", output_scale="one", unlearn_method="none", precision="float32"),
        grid=dict(signal_strength=[round(0.5 * k, 1) for k in range(1, 21)], d=list(range(100, 1100, 90)),
                  seed=list(range(5))),
    ),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
