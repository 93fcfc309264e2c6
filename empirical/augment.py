"""Device-resident CIFAR batches and batched crop/flip augmentation, without a DataLoader
(docs/protocol.md#data-and-splits).

Images stay uint8 on the device; a batch is gathered by index, augmented as one tensor and converted to float in
[0, 1]. Normalisation is not done here: it is a layer inside the model, which takes the constants below.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

# docs/protocol.md#data-and-splits
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)


def random_crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None,
                     shifts: torch.Tensor | None = None, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop of the zero-padded image (size unchanged, padding ``pad``) then horizontal flip, for a whole batch.

    ``x`` is (B, C, H, W), uint8 or float; the result has the same dtype and shape. With shift (dy, dx) the content
    moves down by dy and right by dx: ``out[b, :, i, j] = x[b, :, i - dy, j - dx]`` (0 outside the image), then
    rows are mirrored where ``flips[b]``. ``shifts`` (B, 2) in [-pad, pad] and ``flips`` (B,) bool are drawn
    uniformly from ``generator`` when not given. One gather, no per-sample loop.
    """
    b, _, h, w = x.shape
    gen_device = generator.device if generator is not None else x.device
    if shifts is None:
        shifts = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=gen_device)
    elif tuple(shifts.shape) != (b, 2) or (b and int(shifts.abs().max()) > pad):  # checked only when user-given
        raise ValueError(f"shifts must be (B, 2) = ({b}, 2) with values in [-{pad}, {pad}]")
    if flips is None:
        flips = torch.randint(0, 2, (b,), generator=generator, device=gen_device).bool()
    elif tuple(flips.shape) != (b,):
        raise ValueError(f"flips must have shape (B,) = ({b},), got {tuple(flips.shape)}")
    shifts, flips = shifts.to(x.device, torch.long), flips.to(x.device, torch.bool)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h, device=x.device)[None, :] + (pad - shifts[:, :1])  # (B, H) rows of the padded image
    cols = torch.arange(w, device=x.device)[None, :] + (pad - shifts[:, 1:])
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class DeviceData:
    """uint8 images (N, 3, 32, 32) and int64 labels resident on one device; batches are built there."""

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                 device: str | torch.device = "cpu", hwc: bool = True):
        """``images`` uint8 (N, H, W, 3) as stored by :mod:`empirical.data` (``hwc``), or (N, 3, H, W) if not."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 of rank 4, got {images.dtype} {tuple(images.shape)}")
        if hwc:
            images = images.permute(0, 3, 1, 2)
        self.device = torch.device(device)
        self.images = images.contiguous().to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(self.device)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, indices: np.ndarray | torch.Tensor | None, batch_size: int, shuffle: bool = False,
                augment: bool = False, generator: torch.Generator | None = None, drop_last: bool = False,
                dtype: torch.dtype = torch.float32,
                labels: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch over ``indices`` (all samples if None): ``(x, y)`` with x float in [0, 1], (B, 3, 32, 32).

        ``shuffle`` permutes the order with ``generator``; ``augment`` applies :func:`random_crop_flip` with the
        same generator; ``drop_last`` drops a final batch smaller than ``batch_size``; ``labels`` (one per image, on
        the device) replaces the stored labels, e.g. relabelled forget samples.
        """
        if labels is not None and labels.shape != self.labels.shape:
            raise ValueError(f"labels must have shape {tuple(self.labels.shape)}, got {tuple(labels.shape)}")
        labels = self.labels if labels is None else labels.to(self.device)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be a positive integer")
        if indices is None:
            idx = torch.arange(len(self), device=self.device)
        elif isinstance(indices, torch.Tensor):  # possibly already on the device (no round trip through numpy)
            idx = indices.to(self.device, torch.long)
        else:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long).to(self.device)
        if shuffle:
            gen_device = generator.device if generator is not None else self.device
            idx = idx[torch.randperm(len(idx), generator=generator, device=gen_device).to(self.device)]
        stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
        for start in range(0, stop, batch_size):
            chunk = idx[start:start + batch_size]
            x = self.images[chunk]
            if augment:
                x = random_crop_flip(x, generator=generator)
            yield x.to(dtype).div_(255), labels[chunk]
