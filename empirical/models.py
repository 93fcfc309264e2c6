"""CIFAR networks of the empirical protocol (docs/protocol.md#models).

CIFAR-style ResNets (3×3 stride-1 stem, no max-pool; He et al. 2016 blocks) and VGG-16 with batch norm, each with
the dataset's normalisation as its first layer, so every model takes float images in [0, 1] (uint8 is accepted and
divided by 255). ``width`` is the stem's channel count: stages have ``width, 2·width, 4·width, 8·width`` channels,
so ``width = 64`` is the standard model and ``width = 8–16`` a narrow one for CPU tests.

Every model exposes ``features(x)`` (penultimate, globally pooled features, ``feature_dim`` wide: the entanglement
metrics and UMAP of §3 read them) and ``forward(x) = classifier(features(x))``.

    >>> model = build_model("resnet18", num_classes=10, width=64)     # 11.17M parameters
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from simulations.errors import ConfigError

# docs/protocol.md#data-and-splits: per-channel mean and std of the training images, applied inside the model
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel; mean and std are buffers (saved with the model, moved with ``.to``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():  # uint8 images straight from a GPU-resident data set
            x = x.float().div_(255)
        return (x - self.mean) / self.std


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity, or a 1×1 projection (with BN) when the shape changes (option B of He et al.)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(cin, cout, 1, stride))


class BasicBlock(nn.Module):
    """``relu(bn(conv3×3(relu(bn(conv3×3(x))))) + shortcut(x))`` (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(*_conv_bn(cin, planes, 3, stride), nn.ReLU(inplace=True),
                                      *_conv_bn(planes, planes, 3))
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (carries the stride) → 1×1 expand to ``4·planes``, plus shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.residual = nn.Sequential(*_conv_bn(cin, planes, 1), nn.ReLU(inplace=True),
                                      *_conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
                                      *_conv_bn(planes, out, 1))
        self.shortcut = _shortcut(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class _Classifier(nn.Module):
    """Shared tail: ``forward = classifier(features(x))`` and He (fan-out) initialisation of the convolutions."""

    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _init_weights(self) -> None:
        # convolutions: Kaiming normal (fan_out, ReLU gain) as in He et al. / torchvision; BN: γ = 1, β = 0;
        # the linear classifier keeps PyTorch's default (Kaiming-uniform) initialisation
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


class ResNet(_Classifier):
    """CIFAR ResNet: normalise → conv3×3 (stride 1, ``width`` channels) → BN → ReLU → four stages of ``blocks[k]``
    blocks with ``width·2^k`` planes (stride 2 from the second stage) → global average pool → linear."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: Sequence[int], num_classes: int,
                 width: int, normalize: Normalize):
        super().__init__()
        self.normalize = normalize
        self.stem = nn.Sequential(*_conv_bn(3, width, 3), nn.ReLU(inplace=True))
        stages, cin = [], width
        for k, count in enumerate(blocks):
            planes = width * 2**k
            layers = []
            for i in range(count):
                layers.append(block(cin, planes, stride=2 if (k > 0 and i == 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(self.normalize(x))))


# VGG-16 channel plan in units of ``width`` ("M" = 2×2 max-pool): 64-64-M-128-128-M-256×3-M-512×3-M-512×3-M
_VGG16_PLAN = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")


class VGG(_Classifier):
    """CIFAR VGG-16-bn: normalise → 13 × (conv3×3 → BN → ReLU) with five max-pools (32 → 1 pixel) → pool → one
    linear layer (the CIFAR variant's classifier, ``8·width`` features in)."""

    def __init__(self, plan: Sequence[int | str], num_classes: int, width: int, normalize: Normalize):
        super().__init__()
        self.normalize = normalize
        layers: list[nn.Module] = []
        cin = 3
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [*_conv_bn(cin, width * int(item), 3), nn.ReLU(inplace=True)]
                cin = width * int(item)
        self.body = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)
        self._init_weights()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(self.normalize(x)))


Builder = Callable[[int, int, Normalize], nn.Module]

ARCHITECTURES: dict[str, Builder] = {
    "resnet18": lambda classes, width, norm: ResNet(BasicBlock, (2, 2, 2, 2), classes, width, norm),
    "resnet34": lambda classes, width, norm: ResNet(BasicBlock, (3, 4, 6, 3), classes, width, norm),
    "resnet50": lambda classes, width, norm: ResNet(Bottleneck, (3, 4, 6, 3), classes, width, norm),
    "vgg16_bn": lambda classes, width, norm: VGG(_VGG16_PLAN, classes, width, norm),
}


def build_model(arch: str, num_classes: int, width: int = 64, dataset: str = "cifar10") -> nn.Module:
    """The network ``arch`` (a key of :data:`ARCHITECTURES`) with ``num_classes`` outputs, stem width ``width`` and
    the normalisation of ``dataset`` (a key of :data:`NORMALIZATION`) as its first layer."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if dataset not in NORMALIZATION:
        raise ConfigError(f"no normalisation for dataset {dataset!r}; choose one of {sorted(NORMALIZATION)} "
                          "or add its mean and std to empirical.models.NORMALIZATION")
    if num_classes < 1 or width < 1:
        raise ConfigError(f"num_classes and width must be positive (got {num_classes}, {width})")
    return ARCHITECTURES[arch](num_classes, width, Normalize(*NORMALIZATION[dataset]))
