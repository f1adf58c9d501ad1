"""A MobileNetV3-Small-shaped net (hard-swish, SE gates with hard-sigmoid, depthwise 3x3/5x5),
trained here to tell which of the 18 bundled photos a 96x96 crop comes from.

Layer table of MobileNetV3-Small (Howard et al. 2019, Table 2) at width 1.0; 18 classes.
Trained for EPOCHS epochs on 2,400 crops (AdamW, one-cycle), so it has real trained weight
and activation statistics; inputs use ImageNet normalisation.
"""

from __future__ import annotations

from torch import nn

from .common import ZooModel
from .training import photo_patches, trained_classifier

EPOCHS = 5
SIZE = 96

# kernel, expanded channels, out channels, squeeze-excite, activation, stride
SMALL_CONFIG = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _act(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hswish" else nn.ReLU()


class SqueezeExcite(nn.Module):
    """SE gate: global average pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid, scale the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = _divisible(channels / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        """x * gate(x)."""
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class Bneck(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expand, depthwise kxk, optional SE, 1x1 project, residual when shapes match."""

    def __init__(self, inp: int, kernel: int, exp: int, out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != inp:
            layers += [nn.Conv2d(inp, exp, 1, bias=False), nn.BatchNorm2d(exp), _act(act)]
        layers += [nn.Conv2d(exp, exp, kernel, stride, kernel // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), _act(act)]
        if se:
            layers.append(SqueezeExcite(exp))
        layers += [nn.Conv2d(exp, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        """Block output, plus the input when the block keeps the shape."""
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small: stem 3x3/2 hard-swish, 11 bnecks, 1x1 576 conv, pool, 1024 hidden, classifier."""

    def __init__(self, num_classes: int = 18, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
        inp = 16
        for kernel, exp, out, se, act, stride in SMALL_CONFIG:
            layers.append(Bneck(inp, kernel, exp, out, se, act, stride))
            inp = out
        layers += [nn.Conv2d(inp, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(1024, num_classes)
        )

    def forward(self, x):
        """(N, 3, H, W) ImageNet-normalised images -> (N, num_classes) logits."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build() -> ZooModel:
    """Train MobileNetV3-Small on photo patches and package it with 300 calib / 200 val labelled crops."""
    import torch

    torch.manual_seed(0)
    split = photo_patches(SIZE, train=2400)
    model = MobileNetV3Small(num_classes=18)
    return trained_classifier(
        "mobilenet_v3_photos", model, split, epochs=EPOCHS, lr=3e-3, trained_on="2,400 labelled photo crops",
        what="MobileNetV3-Small-shaped net (hard-swish, SE + hard-sigmoid, depthwise 3x3/5x5), 3x96x96, 18 classes",
        output_kind="logits (18 classes: which bundled photo the crop is from)",
        model_class="benchmarks.zoo.mobilenet_v3_photos:MobileNetV3Small",
        notes="real labels; ImageNet normalisation",
    )
