"""One training step as a callable ``step(x, y) -> loss`` (a device tensor, no host sync): eager, or captured once as
a CUDA graph and replayed for every batch (docs/protocol.md#speed).

A ResNet-18 step at batch 256 on an H100 is a few milliseconds of GPU work spread over several hundred kernels
(twice that for SAM, plus the foreach/fused optimizer kernels). Launching them from Python costs a sizeable share of
that time; a CUDA graph launches the whole step — forward, backward, both SAM passes and the optimizer update — with
one call.

How :class:`GraphedStep` keeps the graphed run equal to the eager one:

* the first ``warmup`` calls are ordinary eager steps (on a side stream when capturing). They are real training
  steps, not throw-away ones, so the trajectory is the eager trajectory; they also create the optimizer's momentum
  buffers and SAM's scratch buffers and let cuDNN pick its algorithms before anything is captured;
* the next call of the full batch shape allocates static input buffers, captures one step on them (capturing
  records kernels without running them), copies the batch in and replays. Every later batch of that shape is copied
  into the static buffers and replayed; a batch of another shape (the last, partial batch of an epoch) runs eagerly;
* everything that changes between steps lives in device memory the graph reads at replay: the learning rate is a
  0-dim device tensor that the schedule fills in place (the optimizer is built with a tensor ``lr`` and the fused
  SGD kernel for this), the data is copied into the static buffers, and the augmentation is drawn outside the graph.

``capture=False`` runs all of this bookkeeping except the capture itself (the "replay" is the eager step on the static
buffers), so a CPU test can check it against the plain eager loop. If a capture fails, the step says why on stderr,
records it in :attr:`GraphedStep.status` and goes on eagerly from the same state (a capture runs no kernels).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA. The cast cache is off: each weight is cast once per forward anyway, and the SAM pass at
    W + ε must never see weights cast at W (the cache lives until the outermost autocast block ends)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda",
                          cache_enabled=False)


def steps_in_bf16(bf16: bool, optimizer: str, sam_bf16: bool = False) -> bool:
    """Whether training steps autocast to bf16 (CUDA only): SGD steps when ``bf16``; SAM/ASAM steps only with
    ``sam_bf16`` too — the SAM correction g(W+ε) − g(W) is a small difference of two gradients that bf16 blurs
    (docs/protocol.md#precision: cosine with fp32 0.29 at ρ=0.02 on a CPU), so SAM computes in fp32/TF32 by default."""
    return bf16 and (optimizer == "sgd" or sam_bf16)


def optimizer_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                   objective: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One step on ``objective()`` (a scalar loss): both passes for :class:`empirical.sam.SAM` (BatchNorm statistics
    frozen in the perturbed one), a plain backward and step otherwise. Returns the loss at W, detached."""
    from .sam import SAM

    optimizer.zero_grad(set_to_none=True)
    if isinstance(optimizer, SAM):
        def closure():
            loss = objective()
            loss.backward()
            return loss

        return optimizer.step(closure, model=model).detach()
    loss = objective()
    loss.backward()
    optimizer.step()
    return loss.detach()


def eager_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, bf16: bool = True,
               label_smoothing: float = 0.0) -> Step:
    """One step of SGD (or of :class:`empirical.sam.SAM`, both passes) on cross-entropy; returns the loss at W."""
    def loss_of(x, y):
        with autocast(device, bf16):
            return F.cross_entropy(model(x), y, label_smoothing=label_smoothing)

    return lambda x, y: optimizer_step(optimizer, model, lambda: loss_of(x, y))


class GraphedStep:
    """Wrap an eager ``step``: ``warmup`` eager calls, then one capture for batches of ``batch_size`` and replays.

    ``status`` is "warming up", "captured" (or "rehearsed" when ``capture=False``), or "eager: <why>" after a failed
    capture. ``replays`` and ``eager_calls`` count what ran.
    """

    def __init__(self, step: Step, batch_size: int, warmup: int = 3, capture: bool = True):
        if warmup < 1:
            raise ValueError(f"warmup={warmup}: at least one eager step must run before a capture")
        if capture and not torch.cuda.is_available():
            raise RuntimeError("CUDA graph capture needs a CUDA device; use capture=False to rehearse on a CPU")
        self.step, self.batch_size, self.warmup, self.capture = step, batch_size, warmup, capture
        self.status = "warming up"
        self.replays = self.eager_calls = 0
        self._full_calls = 0
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._graph = None
        self._loss: torch.Tensor | None = None
        self._side = torch.cuda.Stream() if capture else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.batch_size or self.status.startswith("eager"):
            return self._eager(x, y)
        self._full_calls += 1
        if self._full_calls <= self.warmup:
            return self._eager(x, y)
        if self._static is None:
            self._static = (torch.empty_like(x), torch.empty_like(y))
            if self.capture and not self._record():
                return self._eager(x, y)
            self.status = "captured" if self.capture else "rehearsed"
        static_x, static_y = self._static
        if static_x.shape != x.shape or static_x.stride() != x.stride() or static_y.shape != y.shape:
            return self._eager(x, y)  # e.g. another memory format than the captured one
        static_x.copy_(x)
        static_y.copy_(y)
        if self.capture:
            self._graph.replay()
        else:
            self._loss = self.step(static_x, static_y)
        self.replays += 1
        return self._loss.clone()  # the graph overwrites its output at the next replay

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.eager_calls += 1
        if self._side is None:
            return self.step(x, y)
        # eager steps on a side stream, as for warm-up before a capture (no stream-capture state leaks onto the
        # default stream); the default stream waits for the step before anything reuses its memory
        current = torch.cuda.current_stream()
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            loss = self.step(x, y)
        current.wait_stream(self._side)
        return loss

    def _record(self) -> bool:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        static_x, static_y = self._static
        try:
            with torch.cuda.graph(graph):
                loss = self.step(static_x, static_y)
        except Exception as exc:  # noqa: BLE001 - any capture failure: say so, then train eagerly
            torch.cuda.synchronize()
            self.status = f"eager: capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            print(f"cuda graphs: {self.status}; continuing without graphs", file=sys.stderr, flush=True)
            self._static = None
            return False
        self._graph, self._loss = graph, loss
        return True


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, *, bf16: bool = True,
              label_smoothing: float = 0.0, compile: bool = False, cuda_graphs: bool = False,
              batch_size: int = 0, capture: bool | None = None) -> Step:
    """The training step of a run: eager, with ``torch.compile`` of the model's forward, or graphed.

    ``capture`` (graphed steps only): None captures on CUDA; False rehearses without capturing (CPU tests)."""
    step = eager_step(model, optimizer, device, bf16, label_smoothing)
    if compile:
        model.forward = torch.compile(model.forward)
    if not cuda_graphs:
        return step
    return GraphedStep(step, batch_size, capture=device.type == "cuda" if capture is None else capture)
