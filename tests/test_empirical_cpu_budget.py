"""The CPU-scale protocol's economies (docs/protocol-cpu.md), each pinned to what it may and may not change:
unlearning steps per epoch, the record without accuracies, the retain sample of the evaluation, per-optimizer
pretraining settings, and the evaluation batch and memory layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_empirical_trainer import fixture_root, tiny  # noqa: F401 - the shared generated CIFAR fixture
from test_empirical_unlearn import params_of, pretrained, quick  # noqa: F401 - the shared pretrained tiny model

from empirical.config import make_config
from empirical.evaluate import describe, evaluate, load_run, retain_subset
from empirical.metrics import eval_batch_size, model_layout, model_outputs, shadow_in_indices
from empirical.models import build_model
from empirical.protocol import PRETRAIN_PRESETS, make_plan, parse_train_overrides, train_settings
from empirical.trainer import train
from empirical.unlearn import unlearn, unlearn_identity
from simulations.config import ConfigError

CPU = torch.device("cpu")


# --- unlearning: steps per epoch -------------------------------------------------------------------------------------

def test_steps_per_epoch_stops_each_phase_after_that_many_batches(pretrained, tmp_path):  # noqa: F811
    split = np.load(pretrained / "split.npz")
    full = -(-len(split["retain"]) // 64)  # NegGrad's phase is one pass over R at batch 64
    assert full > 3
    rec = unlearn(quick(method="neggrad", steps_per_epoch=3), pretrained, tmp_path / "three", progress=False)
    assert rec["steps"] == 3
    rec = unlearn(quick(method="neggrad", epochs=2, steps_per_epoch=2), pretrained, tmp_path / "two", progress=False)
    assert rec["steps"] == 4  # per epoch, not in all
    rec = unlearn(quick(method="neggrad"), pretrained, tmp_path / "all", progress=False)
    assert rec["steps"] == full  # 0: the whole pass
    rec = unlearn(quick(method="neggrad", steps_per_epoch=10 * full), pretrained, tmp_path / "more", progress=False)
    assert rec["steps"] == full  # a limit above the pass changes nothing
    assert all(torch.equal(a, b) for a, b in zip(params_of(tmp_path / "all").values(),
                                                 params_of(tmp_path / "more").values()))
    # SCRUB has two phases in its first epochs (max over F, min over R): the limit applies to each
    rec = unlearn(quick(method="scrub", steps_per_epoch=1, scrub_msteps=1), pretrained, tmp_path / "scrub",
                  progress=False)
    assert rec["steps"] == 2


def test_steps_per_epoch_is_part_of_the_identity_only_when_set(pretrained):  # noqa: F811
    plain, limited = quick(method="neggrad"), quick(method="neggrad", steps_per_epoch=5)
    assert unlearn_identity(plain, pretrained)["config"] != unlearn_identity(limited, pretrained)["config"]
    assert unlearn_identity(limited, pretrained) == unlearn_identity(quick(method="neggrad", steps_per_epoch=5),
                                                                     pretrained)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        quick(method="neggrad", steps_per_epoch=-1)


def test_record_without_accuracy_holds_the_same_model(pretrained, tmp_path):  # noqa: F811
    a = unlearn(quick(method="rl"), pretrained, tmp_path / "a", progress=False)
    b = unlearn(quick(method="rl"), pretrained, tmp_path / "b", progress=False, record_accuracy=False)
    assert b["accuracy"] is None and set(a["accuracy"]) == {"retain", "forget", "test", "val"}
    assert json.loads((tmp_path / "b" / "record.json").read_text())["accuracy"] is None
    assert all(torch.equal(x, y) for x, y in zip(params_of(tmp_path / "a").values(),
                                                 params_of(tmp_path / "b").values()))
    assert b["source_accuracy"] == a["source_accuracy"] and b["steps"] == a["steps"]


# --- evaluation: the retain sample -----------------------------------------------------------------------------------

def test_retain_subset_is_a_seeded_sorted_sample_of_r():
    retain = np.arange(100, 400, 3)
    s = retain_subset(retain, 40, seed=5)
    assert len(s) == 40 and len(np.unique(s)) == 40 and np.all(np.diff(s) > 0) and np.isin(s, retain).all()
    assert np.array_equal(s, retain_subset(retain[::-1], 40, seed=5))  # the order of R does not matter
    assert not np.array_equal(s, retain_subset(retain, 40, seed=6))
    assert np.array_equal(retain_subset(retain, 1000, seed=5), retain)  # >= |R|: all of R
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="retain_sample"):
            retain_subset(retain, bad, seed=0)


def test_describe_on_a_retain_sample_measures_exactly_those_images(pretrained):  # noqa: F811
    model, prepared, _ = load_run(pretrained, CPU)
    n = 70
    full = describe(model, prepared, CPU, mia_features=("confidence",), wp_points=30)
    part = describe(model, prepared, CPU, mia_features=("confidence",), wp_points=30, retain_sample=n)
    keep = retain_subset(prepared.retain_idx.numpy(), n, 0)
    by_hand = model_outputs(model, prepared.data, torch.as_tensor(keep), CPU)
    assert part["accuracy"]["retain"] == pytest.approx(by_hand.accuracy)
    assert part["retain_evaluated"] == {"images": n, "of": len(prepared.retain_idx), "sample_seed": 0}
    assert full["retain_evaluated"] == {"images": len(prepared.retain_idx), "of": len(prepared.retain_idx),
                                        "sample_seed": None}
    for k in ("forget", "test", "val"):  # the other sets are untouched
        assert part["accuracy"][k] == full["accuracy"][k]
    # the MIA's shadow-in set is drawn from the sample: with |sample| < |test| it is the whole sample, so the
    # efficacy equals one computed by hand with the sample as shadow-in
    from empirical.metrics import mia_efficacy

    test = model_outputs(model, prepared.test, torch.arange(len(prepared.test)), CPU)
    forget = model_outputs(model, prepared.data, prepared.forget_idx, CPU)
    shadow = shadow_in_indices(keep, len(test.labels), 0)
    assert np.array_equal(shadow, keep)
    mia = mia_efficacy((by_hand.probs, by_hand.labels), (test.probs, test.labels), (forget.probs, forget.labels),
                       features=("confidence",), seed=0)
    assert part["mia_efficacy"]["confidence"] == mia["confidence"]


def test_evaluation_refuses_a_reference_of_other_retain_images(fixture_root, pretrained, tmp_path):  # noqa: F811
    retrain = tmp_path / "retrain"
    train(tiny(fixture_root, epochs=1, split_file=str(pretrained / "split.npz")), retrain, stage="retrain",
          progress=False)
    kw = dict(device="cpu", wp_points=30, mia_features=("confidence",))
    model, prepared, _ = load_run(retrain, CPU)
    ref_full = describe(model, prepared, CPU, mia_features=("confidence",), wp_points=30)
    with pytest.raises(ConfigError, match="other retain images"):
        evaluate(pretrained, retrain, None, reference=ref_full, retain_sample=50, **kw)
    ok = evaluate(pretrained, retrain, None, retain_sample=50, **kw)
    assert ok["unlearned"]["retain_evaluated"]["images"] == ok["retrained"]["retain_evaluated"]["images"] == 50
    with pytest.raises(ConfigError, match="retain-sample"):
        evaluate(pretrained, retrain, None, retain_sample=-1, **kw)


# --- the protocol: per-optimizer training settings, the retain sample -------------------------------------------------

def test_scoped_training_settings_reach_only_their_optimizer(tmp_path):
    overrides = parse_train_overrides(["lr=0.3", "sam.epochs=7", "sgd.width=8"])
    assert overrides == {"lr": 0.3, "sam.epochs": 7, "sgd.width": 8}
    assert train_settings("smoke", overrides, "sam") == {"lr": 0.3, "epochs": 7}
    assert train_settings("smoke", overrides, "sgd") == {"lr": 0.3, "width": 8}
    plan = make_plan(tmp_path / "p", "smoke", "sgd,sam", "high", "neggrad", "sgd", overrides)
    sam, sgd, retrain = plan.pretrain_config("sam"), plan.pretrain_config("sgd"), plan.retrain_config("high")
    assert (sam.epochs, sam.width, sam.lr) == (7, make_config("smoke").width, 0.3)
    assert (sgd.epochs, sgd.width) == (make_config("smoke").epochs, 8)
    assert (retrain.epochs, retrain.width, retrain.optimizer) == (sgd.epochs, 8, "sgd")  # the SGD recipe
    # the cpu preset's SAM epochs, below the user's settings
    cpu = make_plan(tmp_path / "c", "cpu", "sgd,sam", "high", "neggrad", "sgd", {})
    assert cpu.pretrain_config("sam").epochs == PRETRAIN_PRESETS["cpu"]["sam"]["epochs"] != make_config("cpu").epochs
    assert cpu.pretrain_config("sgd").epochs == cpu.retrain_config("high").epochs == make_config("cpu").epochs
    assert make_plan(tmp_path / "c", "cpu", "sam", "high", "neggrad", "sgd",
                     {"epochs": 3}).pretrain_config("sam").epochs == 3
    assert make_plan(tmp_path / "c", "cpu", "sam", "high", "neggrad", "sgd",
                     {"epochs": 3, "sam.epochs": 4}).pretrain_config("sam").epochs == 4
    assert cpu.retain_sample == 5000 and make_plan(tmp_path / "c", "cpu", "sam", "high", "neggrad", "sgd", {},
                                                   retain_sample=0).retain_sample == 0
    assert plan.retain_sample == 0 and "retain_sample" not in plan.identity()
    assert cpu.identity()["retain_sample"] == 5000


def test_scoped_training_settings_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="not a pretraining optimizer"):
        parse_train_overrides(["adam.epochs=3"])
    with pytest.raises(ConfigError, match="chosen by the protocol"):
        parse_train_overrides(["sam.optimizer=sgd"])
    with pytest.raises(ConfigError):
        parse_train_overrides(["sam.epochz=3"])
    with pytest.raises(ConfigError, match="not among --pretrain"):
        make_plan(tmp_path / "p", "smoke", "sgd", "high", "neggrad", "sgd", {"asam.epochs": 3})
    with pytest.raises(ConfigError, match="epochs"):  # a bad scoped value fails before anything runs
        make_plan(tmp_path / "p", "smoke", "sgd,sam", "high", "neggrad", "sgd", {"sam.epochs": 0})
    with pytest.raises(ConfigError, match="retain-sample"):
        make_plan(tmp_path / "p", "smoke", "sgd", "high", "neggrad", "sgd", {}, retain_sample=-2)
    assert not (tmp_path / "p").exists()


# --- evaluation batch and layout --------------------------------------------------------------------------------------

def test_evaluation_batch_and_layout_do_not_change_the_outputs(pretrained):  # noqa: F811
    assert eval_batch_size(torch.device("cpu")) == 256 and eval_batch_size(torch.device("cuda")) == 1024
    model, prepared, _ = load_run(pretrained, CPU)
    idx = prepared.retain_idx[:150]
    base = model_outputs(model, prepared.data, idx, CPU, batch_size=150)
    small = model_outputs(model, prepared.data, idx, CPU, batch_size=7)
    assert np.allclose(base.probs, small.probs, atol=1e-5) and np.array_equal(base.labels, small.labels)
    x = torch.rand(2, 3, 32, 32)
    plain = build_model("resnet18", 10, width=8)
    assert model_layout(plain)(x).is_contiguous()
    cl = build_model("resnet18", 10, width=8).to(memory_format=torch.channels_last)
    out = model_layout(cl)(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert torch.equal(out, x)  # the same values, another memory format
    cl.load_state_dict(model.state_dict())
    converted = model_outputs(cl, prepared.data, idx, CPU, batch_size=150)
    assert np.allclose(base.probs, converted.probs, atol=1e-5)
    assert np.array_equal(base.probs.argmax(1), converted.probs.argmax(1))


def test_the_report_label_names_every_epoch_count():
    from empirical.report import epochs_text

    same = {"pretrain_sgd": {"epochs": 12}, "pretrain_sam": {"epochs": 12}, "retrain_high": {"epochs": 12}}
    assert epochs_text(same) == "12 epochs"
    mixed = {**same, "pretrain_sam": {"epochs": 18}}
    assert epochs_text(mixed) == "12 epochs (SAM pretraining 18)"
    assert epochs_text({**mixed, "retrain_low": {"epochs": 9}}) == \
        "12 epochs (SAM pretraining 18, retrain_low 9)"


# --- the local scheduler follows the stages' dependencies, not the waves ----------------------------------------------

class _Clock:
    """A fake executor: a job of stage S finishes after ``durations[S]`` polls of the scheduler."""

    def __init__(self, durations, fail=None):
        self.durations, self.fail, self.now, self.log, self.in_flight, self.most = durations, fail, 0, [], 0, 0

    def submit(self, call, stage, arg):
        clock = self
        clock.in_flight += 1
        clock.most = max(clock.most, clock.in_flight)
        clock.log.append(("start", stage, arg, clock.now))

        class Job:
            end = clock.now + clock.durations.get(stage, 1)
            reported = False

            def done(self):
                clock.now += 1  # every poll advances the clock
                if clock.now >= self.end and not self.reported:
                    self.reported = True
                    clock.in_flight -= 1
                    clock.log.append(("end", stage, arg, clock.now))
                return clock.now >= self.end

            def result(self):
                if clock.fail == (stage, arg):
                    raise RuntimeError(f"{stage} {arg} failed")
                return f"{stage}{arg}"
        return Job()


def test_local_jobs_start_when_their_own_stages_are_done(tmp_path):
    from empirical.cluster import _run_graph, dependencies

    plan = make_plan(tmp_path / "p", "smoke", "sgd,sam", "high,low", "neggrad", "sgd,sam", {})
    nodes = dependencies(plan)
    assert len(nodes) == 2 + 1 + 2 + 8 + 1 and nodes[-1][0] == ("summary", ())
    clock = _Clock({"pretrain": 3, "retrain": 4, "unlearn": 2})
    clock.durations = {**clock.durations}
    sam_long = {("pretrain", ("sam",)): 40}

    def duration(stage, arg):
        return sam_long.get((stage, arg), clock.durations.get(stage, 1))

    original = clock.submit

    def submit(call, stage, arg):
        clock.durations = {**clock.durations, stage: duration(stage, arg)}
        return original(call, stage, arg)

    clock.submit = submit
    values = _run_graph(clock, None, nodes, workers=2, poll=0)
    assert values[-1] == "summary()" and clock.most == 2
    start = {(s, a): t for kind, s, a, t in clock.log if kind == "start"}
    end = {(s, a): t for kind, s, a, t in clock.log if kind == "end"}
    for (stage, arg), needs in nodes:  # nothing starts before what it needs has ended
        assert all(end[nodes[n][0]] <= start[(stage, arg)] for n in needs)
    # no barrier: the retrains and the SGD model's unlearning runs go on while SAM is still pretraining
    assert start[("retrain", ("high",))] < end[("pretrain", ("sam",))]
    assert start[("unlearn", ("sgd", "high", "neggrad", "sgd"))] < end[("pretrain", ("sam",))]
    for job in plan.unlearn_jobs():  # each after its own pretraining and its own forget set's retrain
        assert start[("unlearn", job)] >= max(end[("pretrain", (job[0],))], end[("retrain", (job[1],))])


def test_a_failed_local_job_stops_what_needs_it_and_is_raised(tmp_path):
    from empirical.cluster import _run_graph, dependencies

    plan = make_plan(tmp_path / "p", "smoke", "sgd", "high,low", "neggrad", "sgd", {})
    clock = _Clock({"retrain": 3}, fail=("retrain", ("low",)))
    with pytest.raises(RuntimeError, match="retrain"):
        _run_graph(clock, None, dependencies(plan), workers=2, poll=0)
    started = [(s, a) for kind, s, a, _ in clock.log if kind == "start"]
    assert ("unlearn", ("sgd", "low", "neggrad", "sgd")) not in started and ("summary", ()) not in started
    assert clock.in_flight == 0  # the jobs running at the failure were waited for


def test_the_protocol_command_line_takes_scoped_settings_and_the_retain_sample(tmp_path, capsys):
    from empirical.__main__ import main

    never = tmp_path / "never"
    assert main(["protocol", "--preset", "cpu", "--pretrain", "sgd,sam", "--forget", "high", "--methods", "neggrad",
                 "--set", "sam.epochs=20", "--set", "lr=0.05", "--retain-sample", "0", "--print-config",
                 "--out", str(never)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pretrain"]["sam"]["config"]["epochs"] == 20 and shown["pretrain"]["sgd"]["config"]["epochs"] == 12
    assert shown["pretrain"]["sam"]["config"]["lr"] == shown["retrain"]["high"]["config"]["lr"] == 0.05
    assert main(["protocol", "--preset", "cpu", "--pretrain", "sgd", "--set", "sam.epochs=20", "--print-config",
                 "--out", str(never)]) == 2
    assert "not among --pretrain" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["protocol", "--preset", "cpu", "--retain-sample", "-1", "--print-config", "--out", str(never)])
    assert bad.value.code == 2 and "integer >= 0" in capsys.readouterr().err
    assert not never.exists()
