"""An empirical run folder's identity holds its configuration, the empirical numerics' code version and its data:
a finished run of other code or other data is never reused (the run-folder contract, issue 9)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import simulations.provenance as provenance
from empirical.data import load_cifar
from empirical.trainer import train
from empirical.unlearn import UnlearnConfig, unlearn, unlearn_identity
from simulations.errors import ConfigError
from simulations.provenance import EMPIRICAL_NUMERICS_MODULES, source_fingerprint
from tests.test_empirical_trainer import tiny, write_fixture


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(write_fixture(tmp_path_factory.mktemp("cifar"), per_class=6))


def test_the_fingerprint_follows_code_not_comments_or_docstrings(tmp_path):
    base = "def f(x):\n    \"\"\"Doc.\"\"\"\n    return x * 2  # twice\n"
    (tmp_path / "m.py").write_text(base)
    first = source_fingerprint(tmp_path, ("m",))
    (tmp_path / "m.py").write_text(base.replace("Doc.", "Other words.").replace("# twice", "# double"))
    assert source_fingerprint(tmp_path, ("m",)) == first
    (tmp_path / "m.py").write_text(base.replace("x * 2", "x * 3"))
    assert source_fingerprint(tmp_path, ("m",)) != first
    assert {"sam", "unlearn", "methods", "metrics", "trainer", "models", "data"} <= set(EMPIRICAL_NUMERICS_MODULES)


def test_the_data_digest_sees_one_pixel_and_one_label(root):
    arrays = load_cifar("cifar10", root)
    first = arrays.digest
    assert load_cifar("cifar10", root).digest == first  # the same content read again
    arrays.__dict__.pop("_digest")
    arrays.train_x[3, 4, 5, 1] ^= 1
    assert arrays.digest != first
    arrays.train_x[3, 4, 5, 1] ^= 1
    arrays.__dict__.pop("_digest")
    assert arrays.digest == first
    arrays.test_y[0] = (arrays.test_y[0] + 1) % 10
    arrays.__dict__.pop("_digest")
    assert arrays.digest != first


def test_a_run_of_other_numerics_or_other_data_is_refused_not_reused(root, tmp_path, monkeypatch):
    out = tmp_path / "pre"
    cfg = tiny(root, epochs=1)
    train(cfg, out, progress=False)
    identity = json.loads((out / "run.json").read_text())["identity"]
    assert identity["config"] == cfg.hash and identity["numerics"] == provenance.empirical_numerics_version()
    assert identity["data"] == load_cifar("cifar10", root).digest and len(identity["split"]) == 16
    record = (out / "record.json").read_bytes()

    monkeypatch.setattr(provenance, "_EMPIRICAL_NUMERICS", "0123456789ab")  # the numerical code changed
    with pytest.raises(ConfigError, match="--force"):
        train(cfg, out, progress=False)
    assert (out / "record.json").read_bytes() == record
    monkeypatch.undo()

    other = tmp_path / "other"  # the same layout, one image changed: other data
    shutil.copytree(root, other / "cifar-10-batches-py")
    import pickle

    batch = other / "cifar-10-batches-py" / "data_batch_1"
    data = pickle.loads(batch.read_bytes())
    data[b"data"] = np.array(data[b"data"])
    data[b"data"][0, 0] ^= 0xFF
    batch.write_bytes(pickle.dumps(data))
    with pytest.raises(ConfigError, match="--force"):
        train(tiny(str(other / "cifar-10-batches-py"), epochs=1), out, progress=False)
    assert (out / "record.json").read_bytes() == record
    # the same settings, numerics and data: reused as it is
    assert train(cfg, out, progress=False)["config_hash"] == cfg.hash
    assert (out / "record.json").read_bytes() == record

    # unlearning: its identity names the source run's own identity; data other than the model's are refused
    ucfg = UnlearnConfig(method="neggrad", epochs=1, batch_size=30, device="cpu", bf16=False, channels_last=False)
    uid = unlearn_identity(ucfg, out)
    assert uid["source_identity"] == identity and uid["numerics"] == identity["numerics"]
    bad = UnlearnConfig(method="neggrad", epochs=1, batch_size=30, device="cpu", bf16=False, channels_last=False,
                        data_root=str(other / "cifar-10-batches-py"))
    with pytest.raises(ConfigError, match="not the data the model"):
        unlearn(bad, out, tmp_path / "u_bad", progress=False)
    assert not (tmp_path / "u_bad").exists()
    unlearn(ucfg, out, tmp_path / "u", progress=False)
    assert json.loads((tmp_path / "u" / "run.json").read_text())["identity"] == uid
