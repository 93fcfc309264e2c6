"""A batch of configurations is the same as a loop of single runs; results are a function of the config alone."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_results_close, tiny

from simulations import simulate
from simulations.backends import bytes_per_config
from simulations.engine import group_key


def _mixed_configs():
    sam = tiny(optimizer="sam", rho=0.2, batch_size=4, unlearn_method="neggrad", unlearn_optimizer="sam",
               label_flip=0.1)
    gram_sam = [
        sam,
        sam.replace(signal_strength=2.0),
        sam.replace(seed=1),
        sam.replace(lr=0.1),
        sam.replace(rho=0.0),
        sam.replace(rho=0.5, sam_sign="max", sam_lambda=0.7),
        sam.replace(label_flip=0.3),
        sam.replace(d=60),
        sam.replace(d=20, seed=2, signal_strength=0.5),  # d - 1 < number of vectors: explicit draw inside gram
        sam.replace(sigma_p=0.5, sigma_0=0.05),
        sam.replace(alpha=0.5, unlearn_lr=0.2),
    ]
    sgd = tiny(optimizer="sgd", batch_size=3, unlearn_method="rl", unlearn_optimizer="sgd")
    gram_sgd = [sgd, sgd.replace(seed=5, lr=0.2), sgd.replace(label_flip=0.25, d=45)]
    weights = tiny(backend="weights", optimizer="sam", rho=0.3, unlearn_method="sharp_minmax",
                   mask_granularity="coordinate")
    weights_group = [weights, weights.replace(seed=3, signal_strength=1.5), weights.replace(rho=0.1, lr=0.3)]
    retrain = [tiny(unlearn_method="retrain", optimizer="sgd", batch_size=4, seed=s) for s in (0, 1)]
    return gram_sam + gram_sgd + weights_group + retrain


def test_batched_run_equals_loop_of_single_runs():
    configs = _mixed_configs()
    groups = {group_key(c) for c in configs}
    assert len(groups) == 4  # the gram configs of different d really share a batch
    batched = simulate(configs)
    assert [r.config for r in batched] == configs  # input order
    for c, res in zip(configs, batched):
        single = simulate([c])[0]
        assert_results_close(res, single, atol=1e-6, what=str(c.hash))
    # the batch is not trivially constant: the variations changed the results
    errors = {round(r.metrics["train_loss"], 12) for r in batched}
    assert len(errors) > len(configs) - 2


def test_memory_chunking_does_not_change_results():
    configs = [tiny(optimizer="sam", rho=0.2, seed=s, d=30 + 10 * s) for s in range(4)]
    whole = simulate(configs)
    per_config = bytes_per_config(configs[0], "gram")
    pieces = simulate(configs, memory_bytes=1.5 * per_config)  # one configuration per chunk
    for a, b in zip(whole, pieces):
        assert_results_close(a, b, atol=1e-10)


def test_log_points_per_configuration_in_one_call():
    # log_points shapes the trajectories, so configurations that differ in it run in separate batches
    a = tiny(log_points=6)
    b = a.replace(log_points=3)
    assert group_key(a) != group_key(b)
    batched = simulate([a, b])
    single = simulate([b])[0]
    assert len(single.trajectory["step"]) == 3
    np.testing.assert_array_equal(batched[1].trajectory["step"], single.trajectory["step"])


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_determinism_by_seed(backend):
    cfg = tiny(backend=backend, optimizer="sam", rho=0.2, batch_size=4, unlearn_method="neggrad",
               unlearn_optimizer="sgd")
    first, second = simulate([cfg])[0], simulate([cfg])[0]
    assert_results_close(first, second, atol=0.0)
    other = simulate([cfg.replace(seed=1)])[0]
    assert other.metrics["test_error"] != first.metrics["test_error"] or \
        other.metrics["train_loss"] != first.metrics["train_loss"]
    assert not np.allclose(other.trajectory["train_loss"], first.trajectory["train_loss"])
    assert cfg.hash != cfg.replace(seed=1).hash


@pytest.mark.parametrize("backend", ["gram", "weights"])
def test_float32_agrees_with_float64(backend):
    cfg = tiny(backend=backend, optimizer="sam", rho=0.2, unlearn_method="neggrad", n_test=500)
    a, b = simulate([cfg, cfg.replace(precision="float32")])
    np.testing.assert_allclose(b.trajectory["train_loss"], a.trajectory["train_loss"], rtol=1e-4)
    assert abs(a.metrics["test_error"] - b.metrics["test_error"]) <= 0.01
    assert a.config.hash != b.config.hash
