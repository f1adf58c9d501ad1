"""Shape references in `samples.architectures`: exact parameter counts, module names, output shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samples.architectures import DigitsCNN, mobilenet_v2, resnet18


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def test_resnet18_has_torchvisions_parameter_count() -> None:
    assert count_parameters(resnet18(num_classes=1000)) == 11_689_512


def test_mobilenet_v2_has_torchvisions_parameter_count() -> None:
    assert count_parameters(mobilenet_v2(num_classes=1000, width_mult=1.0)) == 3_504_872


def test_digits_cnn_parameter_count() -> None:
    # conv 144+32, 4608+64, 18432+128; linear 65600 + 650
    assert count_parameters(DigitsCNN(num_classes=10)) == 89_658


def test_resnet18_module_names_match_torchvision() -> None:
    names = dict(resnet18().named_modules())
    for name in ("conv1", "bn1", "layer1.0.conv1", "layer1.1.bn2", "layer2.0.downsample.0", "layer4.0.downsample.1", "fc"):
        assert name in names, name
    assert "layer1.0.downsample" not in names or names["layer1.0.downsample"] is None
    assert isinstance(names["layer3.0.downsample.0"], nn.Conv2d)
    assert names["layer3.0.downsample.0"].kernel_size == (1, 1)
    assert names["fc"].in_features == 512


def test_mobilenet_v2_module_names_match_torchvision() -> None:
    names = dict(mobilenet_v2().named_modules())
    assert isinstance(names["features.0.0"], nn.Conv2d)
    # t == 1 block: depthwise conv block, projection conv, BN
    assert names["features.1.conv.0.0"].groups == 32
    assert isinstance(names["features.1.conv.1"], nn.Conv2d)
    # t == 6 block: expansion, depthwise, projection, BN
    assert names["features.2.conv.0.0"].out_channels == 96
    assert names["features.2.conv.1.0"].groups == 96
    assert isinstance(names["features.2.conv.3"], nn.BatchNorm2d)
    assert isinstance(names["features.18.0"], nn.Conv2d) and names["features.18.0"].out_channels == 1280
    assert isinstance(names["classifier.0"], nn.Dropout)
    assert isinstance(names["classifier.1"], nn.Linear) and names["classifier.1"].in_features == 1280


def test_mobilenet_v2_residuals_only_where_shapes_allow() -> None:
    blocks = [m for m in mobilenet_v2().features if hasattr(m, "use_res_connect")]
    assert len(blocks) == 17
    assert sum(b.use_res_connect for b in blocks) == 10


@pytest.mark.parametrize("build", [resnet18, mobilenet_v2], ids=["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("size", [32, 64])
def test_forward_shape_on_small_inputs(build, size: int) -> None:
    torch.manual_seed(0)
    model = build(num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


def test_in_channels_and_width_options() -> None:
    model = resnet18(num_classes=4, in_channels=1, width=16).eval()
    assert model.conv1.in_channels == 1 and model.fc.in_features == 128
    with torch.no_grad():
        assert model(torch.randn(2, 1, 40, 40)).shape == (2, 4)
    mobile = mobilenet_v2(num_classes=3, width_mult=0.5, in_channels=1).eval()
    with torch.no_grad():
        assert mobile(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_digits_cnn_forward_shape() -> None:
    model = DigitsCNN(num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(5, 1, 16, 16)).shape == (5, 10)
    names = dict(model.named_modules())
    assert isinstance(names["features.0"], nn.Conv2d) and isinstance(names["classifier.2"], nn.Linear)
