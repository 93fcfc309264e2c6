"""The graphed training step (CUDA graphs), rehearsed on a CPU: everything but the capture itself must reproduce the
eager loop exactly — warm-up steps, static buffers, the partial last batch, the tensor learning rate filled by the
schedule, losses that are not overwritten, resumption — and a failed capture must fall back to eager training."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from test_empirical_trainer import fixture_root, tiny  # noqa: F401 - the shared generated CIFAR fixture

import empirical.trainer as trainer_module
from empirical.config import TrainConfig
from empirical.models import build_model
from empirical.steps import GraphedStep, eager_step, make_step
from empirical.trainer import CHECKPOINT, build_optimizer, train
from simulations.config import ConfigError

CPU = torch.device("cpu")


def _batches(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, 32, 32, generator=gen), torch.randint(0, 10, (b,), generator=gen)) for b in sizes]


def _setup(optimizer: str):
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4, "cifar10")
    cfg = TrainConfig(optimizer=optimizer, lr=0.05, rho=0.05, cuda_graphs=True, device="cpu", bf16=False)
    opt = build_optimizer(cfg, model, CPU)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, schedule


def _train(step, schedule, batches):
    losses = []
    for x, y in batches:
        losses.append(step(x, y))
        schedule.step()
    return torch.stack(losses)


def _state(model, opt):
    out = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, s in enumerate(opt.state_dict()["state"].values()):
        out.update({f"opt.{i}.{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)})
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_rehearsed_graph_step_equals_the_eager_loop_bit_for_bit(optimizer):
    sizes = [16, 16, 16, 16, 7, 16, 16, 16, 5]  # partial batches before and after the capture
    batches = _batches(sizes)
    model_a, opt_a, sched_a = _setup(optimizer)
    assert torch.is_tensor(opt_a.param_groups[0]["lr"])  # the schedule fills it in place
    lr_tensor = opt_a.param_groups[0]["lr"]
    eager_losses = _train(eager_step(model_a, opt_a, CPU, bf16=False), sched_a, batches)
    assert opt_a.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.05 / 10)

    model_b, opt_b, sched_b = _setup(optimizer)
    step = GraphedStep(eager_step(model_b, opt_b, CPU, bf16=False), batch_size=16, warmup=2, capture=False)
    graph_losses = _train(step, sched_b, batches)

    assert torch.equal(eager_losses, graph_losses)  # also: every returned loss is its own tensor
    assert len(set(graph_losses.tolist())) == len(sizes)
    a, b = _state(model_a, opt_a), _state(model_b, opt_b)
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert step.status == "rehearsed"
    assert (step.replays, step.eager_calls) == (5, 4)  # 2 warm-up + 2 partial eager; 5 full batches replayed


def test_failed_capture_falls_back_to_eager_training(monkeypatch, capsys):
    """Fake the CUDA API so that the capture itself is refused, as a real capture of an unsupported op is."""

    class FakeStream:
        def wait_stream(self, other):
            pass

    def refused(graph):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", refused)
    batches = _batches([8] * 5)
    model_a, opt_a, sched_a = _setup("sgd")
    eager_losses = _train(eager_step(model_a, opt_a, CPU, bf16=False), sched_a, batches)
    model_b, opt_b, sched_b = _setup("sgd")
    step = GraphedStep(eager_step(model_b, opt_b, CPU, bf16=False), batch_size=8, warmup=2, capture=True)
    losses = _train(step, sched_b, batches)
    assert step.status.startswith("eager: capture failed (RuntimeError: operation not permitted")
    assert "continuing without graphs" in capsys.readouterr().err
    assert torch.equal(losses, eager_losses) and (step.replays, step.eager_calls) == (0, 5)
    for (k, v), w in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(v, w), k


def test_capture_needs_cuda_and_a_warmup():
    step = eager_step(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), CPU)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            GraphedStep(step, 4)
    with pytest.raises(ValueError, match="warmup"):
        GraphedStep(step, 4, warmup=0, capture=False)
    assert not isinstance(make_step(torch.nn.Linear(2, 2), torch.optim.SGD([torch.zeros(1)], lr=0.1), CPU),
                          GraphedStep)


def test_trainer_with_rehearsed_graphs_matches_eager_and_resumes(fixture_root, tmp_path, monkeypatch):  # noqa: F811
    # batch 50 on 540 training images: 10 full batches (graphed after 3 warm-up steps) and a partial one per epoch
    cfg = tiny(fixture_root, optimizer="sam", epochs=2, batch_size=50, cuda_graphs=True)
    rec = train(cfg, tmp_path / "graphs", progress=False, graph_capture=False)
    assert rec["step_mode"] == "cuda graphs: rehearsed (17 replays, 5 eager steps)"
    # the same configuration (tensor learning rate included) with the plain eager step: identical training.
    # (A float lr instead of the float32 tensor changes the last bits, and this tiny task amplifies them.)
    with monkeypatch.context() as m:
        m.setattr(trainer_module, "make_step", lambda *a, **kw: make_step(*a, **{**kw, "cuda_graphs": False}))
        eager = train(cfg, tmp_path / "eager", progress=False, graph_capture=False)
    assert eager["step_mode"] == "eager"
    assert eager["train_loss"] == rec["train_loss"] and eager["test_acc"] == rec["test_acc"]
    # resumption with a tensor learning rate: interrupted + resumed equals uninterrupted, bit for bit
    assert train(cfg, tmp_path / "parts", progress=False, max_epochs=1, graph_capture=False) == {
        "stopped_at_epoch": 1}
    train(cfg, tmp_path / "parts", progress=False, graph_capture=False)
    a = torch.load(tmp_path / "graphs" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "parts" / CHECKPOINT, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert json.loads((tmp_path / "parts" / "record.json").read_text())["train_loss"] == rec["train_loss"]


def test_graph_options_refused_where_they_cannot_run(fixture_root, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="compile and cuda_graphs"):
        TrainConfig(compile=True, cuda_graphs=True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda_graphs=true needs a CUDA device"):
            train(tiny(fixture_root, cuda_graphs=True), tmp_path / "cpu", progress=False)
        assert not (tmp_path / "cpu").exists()  # refused before anything was written


def test_a_scheduler_that_replaces_the_lr_tensor_is_put_right():
    from empirical.trainer import _keep_lr_tensors

    model, opt, _ = _setup("sgd")
    captured = [g["lr"] for g in opt.param_groups]
    opt.param_groups[0]["lr"] = torch.tensor(0.0123)  # what an older LRScheduler.step does
    _keep_lr_tensors(opt, captured)
    assert opt.param_groups[0]["lr"] is captured[0] and float(captured[0]) == pytest.approx(0.0123)


def test_graph_check_is_exact_in_rehearsal_and_sees_stale_inputs(monkeypatch):
    from empirical import bench

    for optimizer in ("sgd", "sam"):
        report = bench.check_graphs(CPU, optimizer, steps=6, batch_size=8, width=4, capture=False)
        assert report["status"] == "rehearsed" and report["update_norm"] > 0
        assert report["diff_over_update"] == 0.0 and report["max_loss_abs_diff"] == 0.0

    def stale_make_step(*args, cuda_graphs=False, **kw):  # a broken "graph": replays the first batch it saw
        step = make_step(*args, **kw)
        if not cuda_graphs:
            return step
        seen = []

        def replay(x, y):
            seen.append((x, y))
            return step(*seen[0]) if x.shape == seen[0][0].shape else step(x, y)

        return replay

    monkeypatch.setattr(bench, "make_step", stale_make_step)
    report = bench.check_graphs(CPU, "sgd", steps=6, batch_size=8, width=4, capture=False)
    assert report["diff_over_update"] > 0.05
