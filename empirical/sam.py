"""The project's one SAM optimizer: generalised (A)SAM with sign, mix and masks (docs/protocol.md#the-sam-optimizer;
the simulator's functional step :func:`simulations.optim.sam_step` is checked against it in
``tests/test_empirical_sam.py``).

With ``g = ∇L(W)`` over the parameters that have a gradient::

    ε       = ρ T² g / ||T g||          T = |W| if adaptive (ASAM) else 1; ONE norm over all parameters, in fp32
    g_final = g + s λ (∇L(W + ε) − g)   s = +1 ("min": λ = 1 is SAM), s = −1 ("max": λ = 1 gives 2g − ∇L(W + ε))
    W       ← base_step(W, g_final ⊙ mask)   weights restored to W before the base optimizer's step

Recommended pattern (BatchNorm running statistics are updated by the first pass only)::

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, weight_decay=5e-4)

    def closure():
        loss = F.cross_entropy(model(x), y)    # bf16 autocast inside is fine: no GradScaler needed
        loss.backward()
        return loss

    loss = opt.step(closure, model=model)      # zero_grad, pass at W, pass at W + ε (BN frozen), base step

or by hand: ``loss.backward(); opt.first_step(zero_grad=True); with disable_running_stats(model):
closure(); opt.second_step(zero_grad=True)``.

``rho = 0`` is the base optimizer bit for bit: ``step`` skips the second pass and ``second_step`` uses the stored
first-pass gradient, so the base optimizer sees exactly the gradient it would have seen without SAM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from simulations.errors import ConfigError


@contextlib.contextmanager
def disable_running_stats(model: nn.Module | None) -> Iterator[None]:
    """Within the block, BatchNorm layers in train mode normalise with batch statistics but leave their running
    mean/var and ``num_batches_tracked`` untouched (``track_running_stats`` is switched off, then restored).
    ``model=None`` does nothing."""
    norms = [] if model is None else [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in norms]
    try:
        for m in norms:
            m.track_running_stats = False
        yield
    finally:
        for m, flag in zip(norms, saved):
            m.track_running_stats = flag


class SAM(torch.optim.Optimizer):
    """Generalised sharpness-aware wrapper around ``base_optimizer_cls(params, **base_kwargs)``.

    ``rho`` ≥ 0 radius, ``adaptive`` ASAM scaling, ``sign`` "min" or "max", ``lamb`` mix λ; all four live in
    the param groups (per-group values allowed; the norm stays global). ``param_groups`` is shared with
    ``base_optimizer``, so learning-rate schedulers act on both.

    Masks (:meth:`set_mask`): entries whose mask is 0 are frozen for the step — their final gradient is zeroed
    *and*, after the base step, their weights and every per-entry base-optimizer state tensor (momentum buffer,
    Adam moments; same shape as the parameter) are put back to their values before the step (0 for state created
    by this step). So weight decay, momentum and Adam moments never move a frozen entry. Per-tensor scalars (Adam's
    step count) still advance. The perturbation ε uses the full, unmasked gradient, like the simulator.
    """

    def __init__(self, params, base_optimizer_cls: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, sign: str = "min", lamb: float = 1.0, **base_kwargs):
        if not rho >= 0:
            raise ConfigError(f"SAM needs rho >= 0 (got {rho}); rho = 0 is the base optimizer")
        if sign not in ("min", "max"):
            raise ConfigError(f"SAM sign must be 'min' or 'max' (got {sign!r})")
        if not lamb >= 0:
            raise ConfigError(f"SAM needs lamb >= 0 (got {lamb}); use sign='max' for the opposite direction")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, sign=sign, lamb=lamb, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # the same dicts: one set of hyperparameters
        self.defaults.update(self.base_optimizer.defaults)
        self._frozen: dict[torch.Tensor, torch.Tensor] = {}  # parameter -> bool tensor, True = no update
        self._scale: dict[torch.Tensor, torch.Tensor] = {}  # parameter -> 0/1 factor on g' (authors' masking)

    # ------------------------------------------------------------------ masks
    def set_mask(self, masks: dict | list, freeze: bool = True) -> None:
        """Restrict updates: ``masks`` maps a parameter to a tensor of its shape, or is a list aligned with the
        parameters in param-group order (None = unmasked). Nonzero entries train, zero entries are frozen.

        ``freeze=False`` is the authors' masking instead (docs/protocol.md item 3): the mask multiplies the gradient at
        W + ε before the mix, ``g_final = g + sλ(M ⊙ g' − g)`` (with ``rho = 0``: ``g_final = M ⊙ g``), and nothing
        is frozen — weight decay and momentum still move masked-out entries."""
        params = [p for group in self.param_groups for p in group["params"]]
        if not isinstance(masks, dict):
            if len(masks) != len(params):
                raise ConfigError(f"mask list has {len(masks)} entries for {len(params)} parameters")
            masks = dict(zip(params, masks))
        known = {id(p) for p in params}
        frozen = {}
        for p, mask in masks.items():
            if mask is None:
                continue
            if id(p) not in known:
                raise ConfigError("mask given for a tensor that is not a parameter of this optimizer")
            if tuple(mask.shape) != tuple(p.shape):
                raise ConfigError(f"mask shape {tuple(mask.shape)} does not match parameter {tuple(p.shape)}")
            frozen[p] = (mask == 0).to(p.device)
        if freeze:
            self._frozen, self._scale = frozen, {}
        else:
            self._frozen, self._scale = {}, {p: (~f).to(p.dtype) for p, f in frozen.items()}

    def clear_mask(self) -> None:
        self._frozen, self._scale = {}, {}

    # ------------------------------------------------------------------ the two passes
    def _with_grad(self, group: dict) -> list[torch.Tensor]:
        return [p for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """``||T g||`` over all parameters with a gradient, as a scalar tensor (no host sync), accumulated in fp32
        (fp64 when a gradient is fp64) whatever the parameters' dtype."""
        grads = []
        for group in self.param_groups:
            params = self._with_grad(group)
            scaled = [p.grad for p in params]
            if group["adaptive"] and params:
                scaled = torch._foreach_mul(scaled, torch._foreach_abs(params))
            grads += scaled
        if not grads:
            return torch.zeros(())
        dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        device = grads[0].device
        norms = torch._foreach_norm(grads, 2, dtype=dtype)
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Store ``g`` and ``W``, then move to ``W + ε`` with ``ε = ρ T² g / ||T g||`` (ε = 0 when g = 0).
        Parameters without a gradient are skipped; groups with ``rho = 0`` are not touched."""
        norm = self.grad_norm()
        inverse = torch.where(norm > 0, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
        for group in self.param_groups:
            params = self._with_grad(group)
            for p in group["params"]:
                if p.grad is None and p in self.state:
                    self.state[p].pop("grad", None)  # no stale g from an earlier step
            if not params:
                continue
            grads = [p.grad for p in params]
            torch._foreach_copy_(self._buffers(params, "grad"), grads)
            if group["rho"] == 0:
                continue
            torch._foreach_copy_(self._buffers(params, "old_p"), params)
            eps = torch._foreach_mul(grads, (group["rho"] * inverse).to(grads[0].device))
            if group["adaptive"]:
                torch._foreach_mul_(eps, torch._foreach_mul(params, params))
            torch._foreach_add_(params, eps)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Set ``p.grad = g + sλ(g' − g)`` (g' = the gradient now in ``p.grad``), restore ``W``, apply the mask, take
        the base optimizer's step. A parameter whose gradient was None in the first pass gets ``grad = None`` (the
        base optimizer skips it); one whose g' is None keeps ``g``; groups with ``rho = 0`` use ``g`` exactly."""
        for group in self.param_groups:
            mix = (1.0 if group["sign"] == "min" else -1.0) * group["lamb"]
            stored, perturbed = [], []
            for p in group["params"]:
                g = self.state[p].get("grad") if p in self.state else None
                if g is None:
                    p.grad = None
                elif p.grad is None or group["rho"] == 0:
                    p.grad = g.clone()
                    if p in self._scale:
                        p.grad.mul_(self._scale[p])
                else:
                    if p in self._scale:
                        p.grad.mul_(self._scale[p])
                    stored.append(g)
                    perturbed.append(p.grad)
            restore = [p for p in group["params"] if p.grad is not None] if group["rho"] > 0 else []
            if restore:
                torch._foreach_copy_(restore, [self.state[p]["old_p"] for p in restore])
            if perturbed:
                # lerp(g', g, 1 − mix) = g + mix (g' − g), exactly g' for mix = 1 and exactly g for mix = 0
                torch._foreach_lerp_(perturbed, stored, 1.0 - mix)
        self._masked_base_step()
        if zero_grad:
            self.zero_grad()

    def _masked_base_step(self) -> None:
        frozen = {p: f for p, f in self._frozen.items() if p.grad is not None}
        before = {}
        for p, f in frozen.items():
            p.grad.masked_fill_(f, 0)
            state = self.base_optimizer.state.get(p, {})
            before[p] = p.clone(), {k: v.clone() for k, v in state.items() if _per_entry(v, p)}
        self.base_optimizer.step()
        for p, (old_p, old_state) in before.items():
            f = frozen[p]
            p.copy_(torch.where(f, old_p, p))
            for key, value in self.base_optimizer.state[p].items():
                if _per_entry(value, p):
                    value.copy_(torch.where(f, old_state.get(key, 0.0), value))

    def _buffers(self, params: list[torch.Tensor], key: str) -> list[torch.Tensor]:
        """Per-parameter scratch tensors (reused between steps; not part of the state dict)."""
        out = []
        for p in params:
            state = self.state[p]
            if key not in state or state[key].shape != p.shape:
                state[key] = torch.empty_like(p)
            out.append(state[key])
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, model: nn.Module | None = None):
        """Both passes: zero the gradients, ``closure()`` at W, :meth:`first_step`, ``closure()`` at W + ε (BatchNorm
        running statistics of ``model`` frozen), :meth:`second_step`. Returns the loss at W. The closure must
        compute the loss and call ``backward()``; it is not needed (and skipped) when every group has rho = 0."""
        if closure is None:
            raise ConfigError("SAM.step needs a closure that computes the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()
        self.first_step(zero_grad=True)
        if any(group["rho"] > 0 for group in self.param_groups):
            with disable_running_stats(model):
                closure()
        self.second_step()
        return loss

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The base optimizer's state dict; its param groups carry rho, adaptive, sign and lamb too."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # torch rebuilds the group dicts on load


def _per_entry(value, p: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == p.shape and value.dim() > 0
