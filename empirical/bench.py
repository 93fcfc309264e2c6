"""Epoch time of our trainer vs a DataLoader/fp32 baseline (a script, not a test): prints a table, writes JSON.

    python -m empirical.bench [--out FILE.json] [--steps 60] [--quick]

ResNet-18 on CIFAR-10, SGD and SAM at batch 256 and 512, epochs of 50,000 images as in the H100 anchor of
docs/protocol.md#speed (a pretraining epoch here has 45,000). *Ours*: uint8 images resident on the device, batched
crop/flip there, bf16 autocast, channels_last, fused SGD, eager and with the step captured as a CUDA graph (CUDA only).
*Baseline* (the authors' style): a torch DataLoader with per-sample CPU crop/flip, fp32, torch's default SGD. Each is
timed over ``--steps`` steps after warm-up with CUDA events and scaled to one epoch. Anchor on one H100 with such a
baseline: SGD 2.7 s, SAM 5.5 s per epoch at batch 256; target SGD <= 0.8 s and SAM <= 1.6 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from simulations.provenance import atomic_write_json, provenance

from .config import TrainConfig
from .steps import GraphedStep, make_step, optimizer_step, steps_in_bf16
from .trainer import build_optimizer, resolve_device

EPOCH_IMAGES = 50_000  # the anchor's epoch (docs/protocol.md#speed); our 45k split trains 10 % faster per epoch


class _CpuAugmented(torch.utils.data.Dataset):
    """Per-sample CPU crop (pad 4) and flip, as torchvision transforms would do it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        img = np.pad(self.images[i], ((4, 4), (4, 4), (0, 0)))
        dy, dx = self.rng.integers(0, 9, size=2)
        img = img[dy:dy + 32, dx:dx + 32]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return x, int(self.labels[i])


def flops_per_image(model: torch.nn.Module, device: torch.device) -> float:
    """Forward multiply-adds x 2 of conv and linear layers for one 32x32 image (training ~ 3x forward)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1] * 2
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features * 2

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                        torch.nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, 3, 32, 32, device=device))
    for h in handles:
        h.remove()
    return float(total)


def _timer(device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return lambda: (end.record(), torch.cuda.synchronize(), start.elapsed_time(end) / 1000)[-1]
    began = time.perf_counter()
    return lambda: time.perf_counter() - began


def time_ours(cfg: TrainConfig, images, labels, steps: int, device) -> float:
    from .augment import DeviceData
    from .models import build_model

    data = DeviceData(images, labels, device)
    model = build_model(cfg.arch, 10, cfg.width, "cifar10").to(device)
    if cfg.channels_last:  # as the trainer: channels_last on CPUs too (docs/protocol.md#speed)
        model = model.to(memory_format=torch.channels_last)
    step = make_step(model, build_optimizer(cfg, model, device), device,
                     bf16=steps_in_bf16(cfg.bf16, cfg.optimizer, cfg.sam_bf16), compile=cfg.compile,
                     cuda_graphs=cfg.cuda_graphs, batch_size=cfg.batch_size)
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.arange(len(labels), device=device)

    def endless():
        while True:
            yield from data.batches(idx, cfg.batch_size, shuffle=True, augment=True, generator=gen, drop_last=True)

    batches = endless()
    model.train()
    for _ in range(5):
        x, y = next(batches)
        step(x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x, y)
    if isinstance(step, GraphedStep) and step.capture and step.status != "captured":
        raise RuntimeError(step.status)
    stop = _timer(device)
    for _ in range(steps):
        x, y = next(batches)
        step(x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x, y)
    return stop() / steps * (EPOCH_IMAGES / cfg.batch_size)


def time_baseline(cfg: TrainConfig, images, labels, steps: int, device, workers: int) -> float:
    from .models import build_model

    loader = torch.utils.data.DataLoader(_CpuAugmented(images, labels), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    model = build_model(cfg.arch, 10, cfg.width, "cifar10").to(device)
    opt = build_optimizer(cfg.replace(bf16=False), model, device, fused=False)
    model.train()
    it = iter(loader)

    def one():
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer_step(opt, model, lambda: F.cross_entropy(model(x), y))  # fp32, no autocast: the baseline

    for _ in range(5):
        one()
    stop = _timer(device)
    for _ in range(steps):
        one()
    return stop() / steps * (EPOCH_IMAGES / cfg.batch_size)


def check_graphs(device: torch.device, optimizer: str = "sam", steps: int = 8, batch_size: int = 64, width: int = 16,
                 capture: bool | None = None, seed: int = 0) -> dict:
    """Train two identical narrow ResNet-18s on the same random batches, one with the eager step and one with the
    graphed step (:class:`empirical.steps.GraphedStep`, warm-up 2, one partial batch after the capture), under a
    learning rate that halves every step, and compare. A graph that read a stale learning rate, stale inputs or
    stale buffers would drift far apart; the eager/graphed difference should be rounding (cuDNN may pick other
    algorithms; bf16 autocast as in training). ``capture=False`` rehearses it exactly on a CPU."""
    from .models import build_model

    capture = device.type == "cuda" if capture is None else capture
    cfg = TrainConfig(optimizer=optimizer, lr=0.2, rho=0.05, cuda_graphs=True, batch_size=batch_size,
                      device=device.type)
    gen = torch.Generator().manual_seed(seed)
    sizes = [batch_size] * (steps - 1)
    sizes.insert(4, batch_size // 2 + 1)  # a partial batch after the capture
    batches = [(torch.rand(b, 3, 32, 32, generator=gen).to(device), torch.randint(0, 10, (b,), generator=gen)
                .to(device)) for b in sizes]
    if cfg.channels_last and device.type == "cuda":
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    trained = []
    for graphed in (False, True):
        torch.manual_seed(seed)
        model = build_model("resnet18", 10, width, "cifar10").to(device)
        if cfg.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        model.train()
        initial = [p.detach().float().cpu().clone() for p in model.parameters()]
        opt = build_optimizer(cfg, model, device)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 ** k)
        step = make_step(model, opt, device, bf16=steps_in_bf16(cfg.bf16, cfg.optimizer, cfg.sam_bf16),
                         cuda_graphs=graphed, batch_size=batch_size,
                         capture=capture)
        losses = []
        for x, y in batches:
            losses.append(step(x, y))
            schedule.step()
        status = step.status if isinstance(step, GraphedStep) else "eager"
        trained.append((torch.stack(losses).float().cpu(), [p.detach().float().cpu() for p in model.parameters()],
                        status))
    (loss_a, params_a, _), (loss_b, params_b, status) = trained
    flat = lambda ps: torch.cat([p.reshape(-1) for p in ps])  # noqa: E731
    update = float((flat(params_a) - flat(initial)).norm())
    diff = float((flat(params_a) - flat(params_b)).norm())
    return {"optimizer": optimizer, "steps": len(batches), "status": status, "update_norm": update,
            "param_diff_norm": diff, "diff_over_update": diff / max(update, 1e-30),
            "max_loss_abs_diff": float((loss_a - loss_b).abs().max())}


def run(steps: int = 60, quick: bool = False, workers: int = 8, data_root: str | None = None) -> dict:
    cfg0 = TrainConfig(width=8 if quick else 64)
    device = resolve_device(cfg0)
    from .data import load_cifar

    arrays = load_cifar("cifar10", data_root, limit_per_class=100 if quick else None)
    images, labels = arrays.train_x, arrays.train_y
    from .models import build_model

    fpi = flops_per_image(build_model("resnet18", 10, cfg0.width, "cifar10").to(device), device)
    record = {"device": provenance(str(device))["device"], "provenance": provenance(str(device)), "steps": steps,
              "quick": quick, "flops_per_image_forward": fpi, "data_source": arrays.source}
    for batch in (256, 512):
        for opt in ("sgd", "sam"):
            cfg = cfg0.replace(batch_size=min(batch, len(labels)), optimizer=opt)
            ours = time_ours(cfg, images, labels, steps, device)
            base = time_baseline(cfg, images, labels, max(5, steps // 3), device, 0 if quick else workers)
            passes = 2 if opt == "sam" else 1
            tflops = 3 * fpi * passes * EPOCH_IMAGES / ours / 1e12
            suffix = "" if batch == 256 else f"_b{batch}"
            record.update({f"{opt}_epoch_s{suffix}": ours, f"baseline_{opt}_epoch_s{suffix}": base,
                           f"{opt}_tflops{suffix}": tflops, f"{opt}_speedup{suffix}": base / ours})
            if device.type == "cuda":  # the same step captured once as a CUDA graph and replayed
                try:
                    graphed = time_ours(cfg.replace(cuda_graphs=True), images, labels, steps, device)
                except Exception as exc:  # noqa: BLE001 - report, keep the eager numbers
                    record[f"{opt}_graphs_error{suffix}"] = f"{type(exc).__name__}: {exc}"[:300]
                else:
                    record.update({f"{opt}_graphs_epoch_s{suffix}": graphed,
                                   f"{opt}_graphs_tflops{suffix}": 3 * fpi * passes * EPOCH_IMAGES / graphed / 1e12,
                                   f"{opt}_graphs_speedup{suffix}": base / graphed})
    return record


def table_rows(record: dict) -> list[str]:
    """One line per optimizer, batch and step kind (eager, CUDA graphs) of a :func:`run` record."""
    rows = []
    for batch, suffix in ((256, ""), (512, "_b512")):
        for opt in ("sgd", "sam"):
            base = record[f"baseline_{opt}_epoch_s{suffix}"]
            for kind, key in ((opt, opt), (f"{opt}+graphs", f"{opt}_graphs")):
                if f"{key}_epoch_s{suffix}" in record:
                    rows.append(f"{kind:10s} {batch:6d} {record[f'{key}_epoch_s{suffix}']:13.3f} {base:9.3f} "
                                f"{record[f'{key}_speedup{suffix}']:8.2f} {record[f'{key}_tflops{suffix}']:8.1f}")
                elif f"{key}_error{suffix}" in record:
                    rows.append(f"{kind:10s} {batch:6d} failed: {record[f'{key}_error{suffix}'][:80]}")
    return rows


def sam_correction_cosine(device: torch.device, rho: float = 0.1, adaptive: bool = False, width: int = 64,
                          batch_size: int = 256, seed: int = 0) -> float:
    """Cosine between the SAM correction ``g(W+ε) − g(W)`` computed under bf16 autocast and in fp32, on a ResNet-18 at
    its seeded initialisation and one random batch (docs/protocol.md#precision: 0.29 at ρ=0.02, 0.75 at ρ=0.1, 0.27 for
    ASAM ρ=0.1, measured on a CPU). ε = ρ T² g / ||T g|| from each precision's own g, as the optimizer does.
    1 = faithful."""
    from .models import build_model
    from .sam import disable_running_stats

    torch.manual_seed(seed)
    model = build_model("resnet18", 10, width, "cifar10").to(device).train()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(batch_size, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    params = list(model.parameters())

    def grads(bf16: bool) -> list[torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), disable_running_stats(model):
            loss = F.cross_entropy(model(x), y)
        return [g.float() for g in torch.autograd.grad(loss, params)]

    def correction(bf16: bool) -> torch.Tensor:
        g = grads(bf16)
        saved = [p.detach().clone() for p in params]
        scale = [p.detach().abs() if adaptive else torch.ones_like(p) for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s * gi) for s, gi in zip(scale, g)]))
        eps = [rho * s * s * gi / norm for s, gi in zip(scale, g)]
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.add_(e)
        try:
            g2 = grads(bf16)
        finally:
            with torch.no_grad():
                for p, old in zip(params, saved):
                    p.copy_(old)
        return torch.cat([(b - a).reshape(-1) for a, b in zip(g, g2)])

    exact, rounded = correction(False), correction(True)
    return float(torch.nn.functional.cosine_similarity(exact, rounded, dim=0))


def cpu_ratio(width: int = 16, batch_size: int = 128, steps: int = 20, rounds: int = 2,
              data_root: str | None = None, per_class: int = 500) -> dict:
    """CPU epoch time (45,000 images) of our trainer's step — uint8 data resident, batched crop/flip, channels_last,
    fp32 on a CPU — against the plain loop: a DataLoader with per-sample crop/flip in this process (no workers: the
    2-core machine has no core to spare), NCHW, fp32; the same ResNet-18, SGD at batch ``batch_size``. Measured in
    one run, alternating ours and the baseline ``rounds`` times; the ratio is the median of the per-round ratios."""
    from .data import load_cifar

    device = torch.device("cpu")
    arrays = load_cifar("cifar10", data_root, limit_per_class=per_class)
    cfg = TrainConfig(width=width, batch_size=batch_size, optimizer="sgd", bf16=False, device="cpu")
    scale = 45_000 / EPOCH_IMAGES
    ours, base = [], []
    for _ in range(rounds):
        ours.append(scale * time_ours(cfg, arrays.train_x, arrays.train_y, steps, device))
        base.append(scale * time_baseline(cfg.replace(channels_last=False), arrays.train_x, arrays.train_y, steps,
                                          device, 0))
    ratios = [b / o for o, b in zip(ours, base)]
    return {"device": provenance("cpu")["device"], "torch_threads": torch.get_num_threads(), "width": width,
            "batch_size": batch_size, "steps_per_round": steps, "rounds": rounds,
            "ours_epoch_s_45k": ours, "baseline_epoch_s_45k": base, "ratios": ratios,
            "ratio_median": float(np.median(ratios)), "provenance": provenance("cpu")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empirical.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the baseline")
    parser.add_argument("--quick", action="store_true", help="narrow model, 1,000 images: a smoke check on a CPU")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cpu", action="store_true",
                        help="the CPU comparison: width-16 ResNet-18, batch 128, ours vs the plain loop (cpu_ratio)")
    args = parser.parse_args(argv)
    if args.cpu:
        record = cpu_ratio(steps=args.steps, data_root=args.data_root)
        print(f"device: {record['device']} ({record['torch_threads']} torch threads)")
        print(f"ours {', '.join(f'{t:.1f}' for t in record['ours_epoch_s_45k'])} s/epoch, baseline "
              f"{', '.join(f'{t:.1f}' for t in record['baseline_epoch_s_45k'])} s/epoch (45k images); ratio "
              f"baseline/ours {record['ratio_median']:.2f}")
        if args.out:
            atomic_write_json(args.out, record)
            print(f"wrote {args.out}")
        return 0
    record = run(args.steps, args.quick, args.workers, args.data_root)
    print(f"device: {record['device']}")
    print(f"{'':10s} {'batch':>6s} {'ours s/epoch':>13s} {'baseline':>9s} {'speedup':>8s} {'TFLOP/s':>8s}")
    for line in table_rows(record):
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

