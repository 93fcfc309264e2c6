"""Exact pins on ``simulations/config.py`` for mutation testing.

What is pinned, function by function (every expected value is written by hand from the definition):

* ``_validate_field`` / ``validate`` / ``SimConfig.__post_init__``: every error message verbatim, both sides of every
  boundary (positive ints at 0/1, non-negatives at -1/0, ``P`` at 1/2, ``label_flip`` at 0/0.5, ``alpha`` at 0/1,
  ``mask_fraction`` at 0/1, polyrelu ``q`` at 1, ``forget_size`` at n/n+1, ``sam_steps`` at steps/steps+1, the
  ``sigma_0 = 0`` rule with and without training steps), each branch of the cross-field rules, bools refused as ints
  and floats, ints accepted as floats, and the validation cache (its keys carry the value's type; it stops growing
  at exactly 1,000,000 entries).
* ``SimConfig.to_dict`` / ``values`` / ``replace``: the exact field order and values; ``replace`` parses strings.
* ``parse_value``: every accepted spelling of a bool, int parsing (``"3.0"``, ``"1e3"``, the 2**63 bound, non-finite),
  float parsing, strings stripped, custom ``field_types``, the messages of unknown names and malformed values.
* ``coerce_values``, ``parse_assignments``, ``parse_grid_axis`` (lists, ranges with their rounding and count, linked
  axes, every error message), ``Preset.config`` and ``preset``.
"""

from __future__ import annotations

import re

import pytest

from simulations import config
from simulations.config import (FIELD_NAMES, PRESETS, ConfigError, Preset, SimConfig, coerce_values, parse_assignments,
                                parse_grid_axis, parse_value, preset, validate)

KNOWN = ", ".join(FIELD_NAMES)


@pytest.fixture(autouse=True)
def _fresh_validation_cache():
    """The cache of already validated (name, type, value) keys would let a value seen earlier skip validation."""
    config._VALID_FIELD_VALUES.clear()
    yield
    config._VALID_FIELD_VALUES.clear()


def _refused(message: str, **kw) -> None:
    config._VALID_FIELD_VALUES.clear()
    with pytest.raises(ConfigError) as err:
        SimConfig(**kw)
    assert str(err.value) == message


def _accepted(**kw) -> SimConfig:
    config._VALID_FIELD_VALUES.clear()
    cfg = SimConfig(**kw)
    for k, v in kw.items():
        assert getattr(cfg, k) == v
    return cfg


# ---------------------------------------------------------------------------------------------- _validate_field


def test_validate_field_types_messages_and_bounds():
    # types: a bool is no int and no float; an int is a float; a str is neither
    _refused("n=True: expected int", n=True)
    _refused("n='3': expected int", n="3")
    _refused("n=3.0: expected int", n=3.0)
    _refused("lr=True: expected float", lr=True)
    _refused("lr='x': expected float", lr="x")
    _refused("noise_projected=1: expected bool", noise_projected=1)
    _refused("backend=1: expected str", backend=1)
    cfg = _accepted(lr=1, sigma_p=2)
    assert type(cfg.lr) is int and cfg.lr == 1
    assert _accepted(noise_projected=False).noise_projected is False
    # finite floats only
    _refused("lr=inf: must be a finite number", lr=float("inf"))
    _refused("rho=nan: must be a finite number", rho=float("nan"))
    _refused("label_flip=-inf: must be a finite number", label_flip=float("-inf"))
    # choices
    _refused("backend='gpu': choose one of gram, weights", backend="gpu")
    _refused("optimizer='adam': choose one of gd, sgd, sam", optimizer="adam")
    _refused("unlearn_method='x': choose one of none, neggrad, rl, ga, ft, retrain, sharp_minmax",
             unlearn_method="x")
    # positive integers: 1 is fine, 0 is not
    _refused("n=0: must be a positive integer", n=0, forget_size=0)
    _refused("d=0: must be a positive integer", d=0)
    _refused("m=-1: must be a positive integer", m=-1)
    _refused("log_points=0: must be a positive integer", log_points=0)
    _refused("n_test=0: must be a positive integer", n_test=0)
    _accepted(n=1, forget_size=0, d=1, m=1, n_test=1, log_points=1)
    # non-negative: 0 is fine, -1 is not
    msg = ": must be >= 0 (negative values have no meaning here)"
    _refused("steps=-1" + msg, steps=-1)
    _refused("seed=-1" + msg, seed=-1)
    _refused("lr=-0.5" + msg, lr=-0.5)
    _refused("sigma_0=-0.01" + msg, sigma_0=-0.01)
    _refused("batch_size=-1" + msg, batch_size=-1)
    _accepted(steps=0, unlearn_steps=0, sam_steps=0, batch_size=0, forget_size=0, seed=0, signal_strength=0.0,
              lr=0.0, rho=0.0, unlearn_lr=0.0, sam_lambda=0.0)


def test_validate_reaches_the_value_checks_of_every_field_kind():
    # a field outside every set (label_flip) is only type-checked here; the str field is not compared with 1 or 0
    cfg = _accepted(backend="weights", activation="polyrelu", q=2.5, precision="float32")
    assert cfg.backend == "weights"


# ---------------------------------------------------------------------------------------------- validate


def test_validate_cross_field_rules_exact_messages_and_boundaries():
    # P >= 2
    _refused("P=1: a sample needs one signal patch and at least one noise patch (P >= 2)", P=1)
    _accepted(P=2)
    _accepted(P=3)
    # sigma_p > 0
    _refused("sigma_p=0: the noise must have positive scale", sigma_p=0.0)
    _accepted(sigma_p=1.0)
    _accepted(sigma_p=0.5)
    # sigma_0 = 0 only without gaussian training
    s0 = ("sigma_0=0: every filter starts at zero, where the ReLU's gradient vanishes, so the network cannot train; "
          "use sigma_0 > 0 (e.g. 0.01)")
    _refused(s0, sigma_0=0.0)
    _refused(s0, sigma_0=0.0, steps=0, unlearn_steps=1)
    _refused(s0, sigma_0=0.0, steps=1, unlearn_steps=0)
    _refused(s0, sigma_0=0.0, steps=1, unlearn_steps=1)
    _accepted(sigma_0=0.0, steps=0, unlearn_steps=0)
    _accepted(sigma_0=0.0, backend="weights", init="torch_uniform")
    _accepted(sigma_0=1.0)
    # label_flip in [0, 0.5)
    _refused("label_flip=0.5: must lie in [0, 0.5)", label_flip=0.5)
    _refused("label_flip=-0.1: must lie in [0, 0.5)", label_flip=-0.1)
    _accepted(label_flip=0.0)
    _accepted(label_flip=0.49)
    # alpha in [0, 1]
    _refused("alpha=1.01: the retain weight must lie in [0, 1]", alpha=1.01)
    _refused("alpha=-0.01: the retain weight must lie in [0, 1]", alpha=-0.01)
    _accepted(alpha=0.0)
    _accepted(alpha=1.0)
    # mask_fraction in (0, 1]
    _refused("mask_fraction=0.0: must lie in (0, 1]", mask_fraction=0.0)
    _refused("mask_fraction=1.5: must lie in (0, 1]", mask_fraction=1.5)
    _accepted(mask_fraction=1.0)
    _accepted(mask_fraction=0.01)
    # polyrelu q > 1
    _refused("q=1.0: the polynomial ReLU needs q > 1 (Cao et al. use q > 2)", activation="polyrelu", q=1.0)
    _refused("q=0.5: the polynomial ReLU needs q > 1 (Cao et al. use q > 2)", activation="polyrelu", q=0.5)
    _accepted(activation="polyrelu", q=1.01)
    _accepted(activation="relu", q=0.5)


def test_validate_forget_set_rules():
    _refused("forget_size=21 exceeds n=20: the forget set is a subset of the data", forget_size=21)
    _accepted(forget_size=20)
    _refused("forget_size=6 exceeds n=5: the forget set is a subset of the data", n=5, forget_size=6)
    # methods other than retrain need a forget set
    for method in ("neggrad", "rl", "ga", "ft", "sharp_minmax"):
        _refused(f"unlearn_method={method} needs forget_size >= 1", unlearn_method=method, forget_size=0)
        _accepted(unlearn_method=method, forget_size=1)
    _accepted(unlearn_method="retrain", forget_size=0)
    _accepted(unlearn_method="none", forget_size=0)
    # methods with a retain term need retain data
    for method in ("neggrad", "ft", "retrain", "sharp_minmax"):
        _refused(f"forget_size=20 = n leaves no retain data for {method}", unlearn_method=method, forget_size=20)
        _refused(f"forget_size=4 = n leaves no retain data for {method}", unlearn_method=method, n=4, forget_size=4)
        _accepted(unlearn_method=method, forget_size=19)
    for method in ("rl", "ga", "none"):
        _accepted(unlearn_method=method, forget_size=20)


def test_validate_sam_and_backend_rules():
    sam = ("sam_steps=101 exceeds steps=100: SAM runs for the first sam_steps pretraining steps (0 = all of them)")
    _refused(sam, sam_steps=101)
    _refused("sam_steps=1 exceeds steps=0: SAM runs for the first sam_steps pretraining steps (0 = all of them)",
             sam_steps=1, steps=0)
    _accepted(sam_steps=100)
    _accepted(sam_steps=0, steps=0)
    chen = ("rho_rule=chen scales the plain SAM radius by (C)'s m sqrt(B)/(P sigma_p sqrt d); adaptive SAM's radius "
            "is relative to |w| and has no such scale: use rho_rule=fixed with sam_adaptive")
    _refused(chen, backend="weights", rho_rule="chen", sam_adaptive=True)
    _refused(chen, backend="gram", rho_rule="chen", sam_adaptive=True)  # this rule comes before the backend's
    _accepted(backend="weights", rho_rule="chen")
    _accepted(backend="weights", sam_adaptive=True)
    _accepted(rho_rule="chen")
    _refused("sam_adaptive=True scales by |w| per coordinate, which the gram backend cannot express: set "
             "backend=weights", sam_adaptive=True)
    _refused("init=torch_uniform (uniform per coordinate) is not rotation invariant, the gram backend cannot express "
             "it: set backend=weights (or init=gaussian)", init="torch_uniform")
    _refused("mask_granularity=coordinate is not rotation invariant, the gram backend cannot express it: set "
             "backend=weights (or mask_granularity=filter)", unlearn_method="sharp_minmax",
             mask_granularity="coordinate")
    _accepted(backend="weights", unlearn_method="sharp_minmax", mask_granularity="coordinate")
    _accepted(unlearn_method="sharp_minmax", mask_granularity="filter")
    _accepted(unlearn_method="neggrad", mask_granularity="coordinate")
    _accepted(backend="weights", init="torch_uniform")


def test_validate_is_called_on_existing_objects_and_caches_typed_keys():
    cfg = SimConfig()
    validate(cfg)  # a valid configuration passes
    cache = config._VALID_FIELD_VALUES
    assert len(cache) == len(FIELD_NAMES) == 42
    assert ("backend", str, "gram") in cache and ("n", int, 20) in cache and ("lr", float, 0.1) in cache
    assert ("noise_projected", bool, True) in cache
    # the key carries the type: n=1 validated does not let n=True through
    _accepted(n=1, forget_size=0)
    with pytest.raises(ConfigError) as err:
        SimConfig(n=True, forget_size=0)
    assert str(err.value) == "n=True: expected int"
    # a cached valid value still passes, an invalid one is never cached
    SimConfig(n=1, forget_size=0)
    with pytest.raises(ConfigError):
        SimConfig(n=0, forget_size=0)
    assert ("n", int, 0) not in config._VALID_FIELD_VALUES
    # cross-field rules are checked even when every field value is cached
    SimConfig(forget_size=5)
    SimConfig(n=4, forget_size=0)
    with pytest.raises(ConfigError) as err:
        SimConfig(n=4, forget_size=5)
    assert str(err.value) == "forget_size=5 exceeds n=4: the forget set is a subset of the data"


class _NearlyFull(set):
    """A cache that reports 999,999 more entries than it holds (building a real one is slow on a busy machine)."""

    def __len__(self) -> int:
        return super().__len__() + 999_999


def test_validation_cache_stops_growing_at_one_million(monkeypatch):
    cache = _NearlyFull()
    monkeypatch.setattr(config, "_VALID_FIELD_VALUES", cache)
    SimConfig()  # 42 new keys: only the first one fits below the cap
    assert len(cache) == 1_000_000
    assert ("backend", str, "gram") in cache and ("n", int, 20) not in cache
    SimConfig(seed=7)
    assert len(cache) == 1_000_000 and ("seed", int, 7) not in cache


# ---------------------------------------------------------------------------------------------- identity, replace


def test_to_dict_values_and_replace():
    cfg = SimConfig(n=12, d=34, lr=0.25, backend="weights", unlearn_method="neggrad", noise_projected=False)
    d = cfg.to_dict()
    assert list(d) == list(FIELD_NAMES)
    assert d["n"] == 12 and d["d"] == 34 and d["lr"] == 0.25 and d["backend"] == "weights"
    assert d["unlearn_method"] == "neggrad" and d["noise_projected"] is False and d["P"] == 2 and d["seed"] == 0
    assert d["log_points"] == 21 and d["precision"] == "float64"
    vals = cfg.values()
    assert isinstance(vals, tuple) and len(vals) == 42
    assert vals[:5] == ("weights", 12, 34, 2, 10)
    assert vals[-3:] == ("pretrain_then_unlearn", "float64", 21)
    assert vals == tuple(d.values())
    # replace parses strings and turns int floats into floats; it validates
    new = cfg.replace(n="30", lr=1, noise_projected="yes", backend="gram")
    assert new.n == 30 and type(new.n) is int
    assert new.lr == 1.0 and type(new.lr) is float
    assert new.noise_projected is True and new.backend == "gram" and new.d == 34
    assert cfg.n == 12  # frozen original untouched
    assert SimConfig().replace() == SimConfig()
    with pytest.raises(ConfigError) as err:
        cfg.replace(n="0")
    assert str(err.value) == "n=0: must be a positive integer"


# ---------------------------------------------------------------------------------------------- parse_value


def test_parse_value_bools():
    for text in ("1", "true", "yes", "on", " TRUE ", "Yes", "ON"):
        assert parse_value("noise_projected", text) is True, text
    for text in ("0", "false", "no", "off", " FALSE ", "No", "Off"):
        assert parse_value("shared_noise", text) is False, text
    with pytest.raises(ConfigError) as err:
        parse_value("filter_bias", "maybe")
    assert str(err.value) == "filter_bias='maybe': expected bool"
    assert err.value.__cause__ is None and err.value.__suppress_context__ is True


def test_parse_value_ints():
    assert parse_value("n", "3") == 3 and type(parse_value("n", "3")) is int
    assert parse_value("n", " 3.0 ") == 3 and type(parse_value("n", "3.0")) is int
    assert parse_value("d", "1e3") == 1000
    assert parse_value("seed", "-3") == -3
    assert parse_value("seed", "0") == 0
    assert parse_value("seed", "9223372036854774784") == 9223372036854774784  # the largest float below 2**63
    assert parse_value("seed", "-9223372036854774784") == -9223372036854774784
    # an integer literal is taken exactly, not through a float (2**53 + 1 would become 2**53), up to 2**63 - 1
    assert parse_value("seed", "9007199254740993") == 9007199254740993
    assert parse_value("seed", " 9223372036854775807 ") == 2**63 - 1
    assert parse_value("seed", "-9223372036854775807") == -(2**63 - 1)
    # in float notation the bound is on the float: 2**63 itself is refused, the float just below it accepted
    assert parse_value("seed", "9.2233720368547748e18") == 2**63 - 1024
    for text in ("3.5", "9223372036854775808", "-9223372036854775808", "9.223372036854775808e18", "1e19", "-1e19",
                 "abc", ""):
        with pytest.raises(ConfigError) as err:
            parse_value("seed", text)
        assert str(err.value) == f"seed={text!r}: expected int"
    for text, shown in (("inf", "inf"), (" -inf ", "-inf"), ("nan", "nan"), ("1e400", "1e400")):
        with pytest.raises(ConfigError) as err:
            parse_value("n", text)
        assert str(err.value) == f"n={shown}: must be a finite integer"


def test_parse_value_floats_and_strings():
    assert parse_value("lr", "0.5") == 0.5
    v = parse_value("lr", " 2 ")
    assert v == 2.0 and type(v) is float
    assert parse_value("rho", "-1e-3") == -0.001
    for text, shown in (("nan", "nan"), (" -inf ", "-inf"), ("1e400", "1e400"), ("inf", "inf")):
        with pytest.raises(ConfigError) as err:
            parse_value("lr", text)
        assert str(err.value) == f"lr={shown}: must be a finite number (NaN and inf have no meaning here)"
    with pytest.raises(ConfigError) as err:
        parse_value("lr", "abc")
    assert str(err.value) == "lr='abc': expected float"
    assert err.value.__suppress_context__ is True
    assert parse_value("backend", " weights ") == "weights"
    assert parse_value("backend", "anything") == "anything"  # parsing is not validation


def test_parse_value_field_types_and_unknown_names():
    types = {"alpha": float, "beta": int, "flag": bool, "word": str}
    assert parse_value("beta", "7", types) == 7 and type(parse_value("beta", "7", types)) is int
    assert parse_value("alpha", "7", types) == 7.0 and type(parse_value("alpha", "7", types)) is float
    assert parse_value("flag", "on", types) is True
    assert parse_value("word", " x ", types) == "x"
    with pytest.raises(ConfigError) as err:
        parse_value("alpah", "1", types)
    assert str(err.value) == "unknown option 'alpah' (did you mean 'alpha'?); known options: alpha, beta, flag, word"
    with pytest.raises(ConfigError) as err:
        parse_value("n", "1", types)  # known to SimConfig, not to these types
    assert str(err.value) == "unknown option 'n'; known options: alpha, beta, flag, word"
    with pytest.raises(ConfigError) as err:
        parse_value("sigma_pp", "1")
    assert str(err.value) == f"unknown option 'sigma_pp' (did you mean 'sigma_p'?); known options: {KNOWN}"
    with pytest.raises(ConfigError) as err:
        parse_value("zzz", "1")
    assert str(err.value) == f"unknown option 'zzz'; known options: {KNOWN}"


# ---------------------------------------------------------------------------------------------- coerce_values


def test_coerce_values():
    out = coerce_values({"n": "3", "lr": 1, "rho": 0.5, "d": 7, "backend": " weights ", "noise_projected": "off",
                         "sigma_p": True, "shared_noise": True})
    assert out == {"n": 3, "lr": 1.0, "rho": 0.5, "d": 7, "backend": " weights ", "noise_projected": False,
                   "sigma_p": True, "shared_noise": True}
    assert type(out["n"]) is int and type(out["lr"]) is float and type(out["d"]) is int
    assert out["sigma_p"] is True and out["shared_noise"] is True
    assert type(coerce_values({"lr": "2"})["lr"]) is float
    assert coerce_values({}) == {}
    with pytest.raises(ConfigError) as err:
        coerce_values({"n": 1, "sigma_pp": 1})
    assert str(err.value) == f"unknown option 'sigma_pp' (did you mean 'sigma_p'?); known options: {KNOWN}"
    with pytest.raises(ConfigError) as err:
        coerce_values({"zzz": "1"})
    assert str(err.value) == f"unknown option 'zzz'; known options: {KNOWN}"
    with pytest.raises(ConfigError) as err:
        coerce_values({"n": "x"})
    assert str(err.value) == "n='x': expected int"


# ---------------------------------------------------------------------------------------------- parse_assignments


def test_parse_assignments():
    assert parse_assignments(None) == {}
    assert parse_assignments([]) == {}
    out = parse_assignments([" n = 3", "lr=0.5", "backend=a=b", "noise_projected=no"])
    assert out == {"n": 3, "lr": 0.5, "backend": "a=b", "noise_projected": False}
    assert type(out["n"]) is int
    assert parse_assignments(["x=2", "y= 1.5"], {"x": int, "y": float}) == {"x": 2, "y": 1.5}
    with pytest.raises(ConfigError) as err:
        parse_assignments(["n=3", "n3"])
    assert str(err.value) == "--set 'n3': expected key=value"
    with pytest.raises(ConfigError) as err:
        parse_assignments(["n=1"], {"x": int})
    assert str(err.value) == "unknown option 'n'; known options: x"


# ---------------------------------------------------------------------------------------------- parse_grid_axis


def _grid_error(item: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_grid_axis(item)
    return str(err.value)


def test_parse_grid_axis_lists():
    assert parse_grid_axis("n=1,2,3") == ("n", [1, 2, 3])
    key, vals = parse_grid_axis(" n = 10, 20,, 30 , ")
    assert (key, vals) == ("n", [10, 20, 30]) and all(type(v) is int for v in vals)
    assert parse_grid_axis("optimizer=gd,sam") == ("optimizer", ["gd", "sam"])
    assert parse_grid_axis("noise_projected=true,0") == ("noise_projected", [True, False])
    assert parse_grid_axis("lr=1,0.5") == ("lr", [1.0, 0.5])
    assert parse_grid_axis("backend=a=b,c") == ("backend", ["a=b", "c"])  # split at the first "=" only
    assert _grid_error("n") == "--grid 'n': expected key=v1,v2,... or key=start:stop:step"
    assert _grid_error("n=") == "--grid 'n=': no values"
    assert _grid_error("n= , ,") == "--grid 'n= , ,': no values"
    assert _grid_error("nn=1,2") == f"unknown grid key 'nn' (did you mean 'n'?); known options: {KNOWN}"
    assert _grid_error("zzz=1") == f"unknown grid key 'zzz'; known options: {KNOWN}"
    assert _grid_error("n=1,x") == "n='x': expected int"


def test_parse_grid_axis_linked():
    assert parse_grid_axis("optimizer+unlearn_optimizer=gd+gd,sam+sam") == (
        "optimizer+unlearn_optimizer", [("gd", "gd"), ("sam", "sam")])
    assert parse_grid_axis(" optimizer + unlearn_optimizer = gd+sgd ,, sam + gd ,") == (
        "optimizer+unlearn_optimizer", [("gd", "sgd"), ("sam", "gd")])
    key, vals = parse_grid_axis("n+forget_size+lr=10+2+1,20+4+0.5")
    assert (key, vals) == ("n+forget_size+lr", [(10, 2, 1.0), (20, 4, 0.5)])
    assert type(vals[0][0]) is int and type(vals[0][2]) is float
    assert _grid_error("optimizer+unlearn_optimizer=gd") == (
        "--grid 'optimizer+unlearn_optimizer=gd': each value of a linked axis needs 2 parts joined by +")
    assert _grid_error("n+d+m=1+2") == "--grid 'n+d+m=1+2': each value of a linked axis needs 3 parts joined by +"
    assert _grid_error("n+d=1+2,3+4+5") == "--grid 'n+d=1+2,3+4+5': each value of a linked axis needs 2 parts joined by +"
    assert _grid_error("optimizer+unlearn_optimizer=, ,") == "--grid 'optimizer+unlearn_optimizer=, ,': no values"
    assert _grid_error("n+zz=1+2") == f"unknown option 'zz'; known options: {KNOWN}"


def test_parse_grid_axis_ranges():
    assert parse_grid_axis("signal_strength=0.5:1.5:0.5") == ("signal_strength", [0.5, 1.0, 1.5])
    key, vals = parse_grid_axis(" n = 10:30:10 ")
    assert (key, vals) == ("n", [10, 20, 30]) and all(type(v) is int for v in vals)
    assert parse_grid_axis("n=10:35:10") == ("n", [10, 20, 30])
    assert parse_grid_axis("n=1:2:0.4") == ("n", [1, 1, 2])  # 1, 1.4, 1.8 rounded
    assert parse_grid_axis("n=5:5:1") == ("n", [5])
    assert parse_grid_axis("n=2:3:1") == ("n", [2, 3])
    assert parse_grid_axis("seed=-2:0:1") == ("seed", [-2, -1, 0])
    # stop inclusive up to rounding (0.3/0.1 = 2.9999999999999996), values rounded to 12 digits
    key, vals = parse_grid_axis("lr=0:0.3:0.1")
    assert (key, vals) == ("lr", [0.0, 0.1, 0.2, 0.3]) and all(type(v) is float for v in vals)
    assert parse_grid_axis("lr=0:0.35:0.1") == ("lr", [0.0, 0.1, 0.2, 0.3])
    assert parse_grid_axis("lr=0.2:0.3:0.05") == ("lr", [0.2, 0.25, 0.3])
    assert parse_grid_axis("lr=0.1234567890123:0.1234567890123:1") == ("lr", [0.123456789012])
    assert _grid_error("n=1:2") == "--grid 'n=1:2': a range is start:stop:step"
    assert _grid_error("n=1:2:3:4") == "--grid 'n=1:2:3:4': a range is start:stop:step"
    assert _grid_error("n=a:2:1") == "--grid 'n=a:2:1': start, stop and step must be numbers"
    assert _grid_error("n=1:2:") == "--grid 'n=1:2:': start, stop and step must be numbers"
    for item in ("lr=nan:1:1", "lr=0:inf:1", "lr=0:1:nan"):
        assert _grid_error(item) == f"--grid {item!r}: start, stop and step must be finite numbers"
    for item in ("n=1:5:0", "n=1:5:-1", "n=5:1:1", "n=5:4.9:1"):
        assert _grid_error(item) == f"--grid {item!r}: need step > 0 and stop >= start"
    assert _grid_error("lr=0:1:1e-7") == "--grid 'lr=0:1:1e-7': 10000001 values on one axis; use a coarser step"
    assert _grid_error("n=0:30000000:1") == "--grid 'n=0:30000000:1': 30000001 values on one axis; use a coarser step"
    assert _grid_error("backend=1:2:1") == "--grid 'backend=1:2:1': a numeric range for the non-numeric option backend"
    assert _grid_error("noise_projected=0:1:1") == (
        "--grid 'noise_projected=0:1:1': a numeric range for the non-numeric option noise_projected")


# ---------------------------------------------------------------------------------------------- presets


def test_preset_config_and_lookup():
    p = Preset("t", "a test preset", base={"lr": 1, "n": 12, "d": 40})
    cfg = p.config()
    assert cfg == SimConfig(lr=1.0, n=12, d=40)
    assert type(cfg.lr) is float
    over = p.config({"n": "30", "d": 50, "steps": "7"})
    assert (over.n, over.d, over.steps, over.lr) == (30, 50, 7, 1.0)
    assert p.base == {"lr": 1, "n": 12, "d": 40}  # not modified
    assert Preset("e", "empty").config() == SimConfig()
    smoke = preset("smoke").config()
    assert (smoke.n, smoke.d, smoke.steps, smoke.lr, smoke.rho, smoke.n_test, smoke.unlearn_method, smoke.alpha) == (
        20, 400, 200, 0.5, 0.3, 2000, "neggrad", 0.5)
    assert preset("smoke").config({"d": 100}).d == 100
    for name in ("smoke", "quick", "paper", "kou2023"):
        assert preset(name) is PRESETS[name]
    with pytest.raises(ConfigError) as err:
        preset("nope")
    assert str(err.value) == "unknown preset 'nope'; choose one of smoke, quick, paper, kou2023"
    with pytest.raises(ConfigError, match=re.escape("q=1.0: the polynomial ReLU needs q > 1") + ".*$"):
        p.config({"activation": "polyrelu", "q": "1"})


def test_grid_axis_cap_admits_exactly_ten_million_values():
    """10⁷ values on one axis are accepted (the cap refuses more): with a non-numeric option the range then fails
    for its type, not for its size. (About 2 s and 600 MB: the 10⁷ values are built before the type check.)"""
    assert _grid_error("backend=0:9999999:1") == (
        "--grid 'backend=0:9999999:1': a numeric range for the non-numeric option backend")
    assert _grid_error("backend=0:10000000:1") == (
        "--grid 'backend=0:10000000:1': 10000001 values on one axis; use a coarser step")
