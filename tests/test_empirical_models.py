"""CIFAR models of the empirical pipeline (docs/protocol.md#models): shapes, normalisation inside the model,
channels_last + bf16 autocast, the standard parameter count, initialisation and bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from empirical.models import ARCHITECTURES, NORMALIZATION, Normalize, build_model
from simulations.config import ConfigError

# penultimate width at stem width w: 8w for BasicBlock ResNets and VGG, 4 · 8w for the Bottleneck ResNet-50
FEATURE_MULTIPLE = {"resnet18": 8, "resnet34": 8, "resnet50": 32, "vgg16_bn": 8}


def test_registry_lists_the_spec_architectures():
    assert set(ARCHITECTURES) == set(FEATURE_MULTIPLE)


@pytest.mark.parametrize("arch", sorted(FEATURE_MULTIPLE))
@pytest.mark.parametrize("classes", [10, 100])
def test_shapes_of_logits_and_features(arch, classes):
    torch.manual_seed(0)
    model = build_model(arch, classes, width=8, dataset="cifar100" if classes == 100 else "cifar10")
    x = torch.rand(2, 3, 32, 32)
    logits, feats = model(x), model.features(x)
    assert logits.shape == (2, classes)
    assert feats.shape == (2, FEATURE_MULTIPLE[arch] * 8) == (2, model.feature_dim)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model.classifier(feats), logits)  # forward = classifier(features)


@pytest.mark.parametrize("arch", sorted(FEATURE_MULTIPLE))
def test_channels_last_bf16_autocast(arch):
    torch.manual_seed(0)
    model = build_model(arch, 10, width=8)
    x = torch.rand(2, 3, 32, 32)
    reference = model(x)
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 10)
    out.float().sum().backward()  # gradients reach the fp32 weights
    assert model.classifier.weight.grad.dtype == torch.float32
    # bf16 keeps ~3 significant digits, compounded over depth: the logits agree with fp32 in direction only
    assert nn.functional.cosine_similarity(out.float().flatten(), reference.flatten(), dim=0) > 0.95


def test_normalisation_is_the_first_layer_with_the_dataset_statistics():
    for dataset, (mean, std) in NORMALIZATION.items():
        model = build_model("resnet18", 10, width=8, dataset=dataset)
        first = next(iter(model.children()))
        assert isinstance(first, Normalize)
        torch.testing.assert_close(first.mean.flatten(), torch.tensor(mean))
        torch.testing.assert_close(first.std.flatten(), torch.tensor(std))
        assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())  # saved with the model
    norm = Normalize(*NORMALIZATION["cifar10"])
    mean_image = norm.mean.expand(1, 3, 32, 32)
    assert norm(mean_image).abs().max() < 1e-7
    torch.testing.assert_close(norm(mean_image + norm.std), torch.ones(1, 3, 32, 32))
    # uint8 images are scaled to [0, 1] first
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(norm(x), norm(x.float() / 255))


def test_resnet18_has_the_standard_parameter_count():
    model = build_model("resnet18", 10, width=64)
    count = sum(p.numel() for p in model.parameters())
    assert count == 11_173_962  # the usual CIFAR ResNet-18 (kuangliu/pytorch-cifar): 11.17M


def test_kaiming_initialisation_of_convolutions():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=16)
    conv = model.stages[2][0].residual[0]  # 3×3, 32 -> 64 channels
    expected = math.sqrt(2.0 / (conv.out_channels * 9))  # He normal, fan_out mode
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bn)


def test_unknown_architecture_or_dataset_is_a_clear_error():
    with pytest.raises(ConfigError, match="resnet18") as err:
        build_model("resnet19", 10)
    assert isinstance(err.value, ValueError) and "vgg16_bn" in str(err.value)
    with pytest.raises(ConfigError, match="cifar100"):
        build_model("resnet18", 10, dataset="imagenet")
    with pytest.raises(ConfigError, match="positive"):
        build_model("resnet18", 0)
