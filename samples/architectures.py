"""Reference architectures written out in plain PyTorch (no torchvision).

`DigitsCNN` is the small model of the bundled digits sample. `resnet18` and `mobilenet_v2`
reproduce torchvision's shapes exactly (same module names, same parameter counts:
11,689,512 and 3,504,872 for 1000 classes) so tests and benchmarks can use realistic graphs
without the dependency. Weights are randomly initialised the way torchvision does it;
no pretrained weights are provided.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DigitsCNN", "resnet18", "mobilenet_v2", "BasicBlock", "ResNet", "InvertedResidual", "MobileNetV2"]


class DigitsCNN(nn.Module):
    """A small CNN for 1x16x16 grayscale digits (89,658 parameters for 10 classes).

    `features`: three conv3x3+BN+ReLU stages, the last two followed by 2x2 max-pooling
    (16x16 -> 8x8 -> 4x4); `classifier`: Linear(64*4*4 -> 64), ReLU, Linear(64 -> classes).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (N, 1, 16, 16) batch in [0, 1] to (N, num_classes) logits."""
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --- ResNet-18 -----------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block: conv3x3+BN+ReLU, conv3x3+BN, add the shortcut, ReLU.

    `downsample` (1x1 conv + BN) projects the shortcut when the stride or width changes.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet built from `BasicBlock`s: conv7x7/2 + maxpool stem, four stages, avgpool, fc.

    Stage i has `layers[i]` blocks of width `width * 2**i`; stages 2-4 start with stride 2.
    Adaptive average pooling makes any input of at least 32x32 valid.
    """

    def __init__(self, layers: list[int], num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(width, layers[0], stride=1)
        self.layer2 = self._make_stage(width * 2, layers[1], stride=2)
        self.layer3 = self._make_stage(width * 4, layers[2], stride=2)
        self.layer4 = self._make_stage(width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * BasicBlock.expansion, num_classes)
        _init_like_torchvision(self)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_planes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        stage = [BasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * BasicBlock.expansion
        stage += [BasicBlock(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an (N, C, H, W) image batch to (N, num_classes) logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, in_channels: int = 3, width: int = 64) -> nn.Module:
    """ResNet-18 with torchvision's module names; 11,689,512 parameters at the defaults."""
    return ResNet([2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, width=width)


# --- MobileNetV2 ---------------------------------------------------------------------------


def _make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never going more than 10% below it."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, with "same" padding; children named `0`, `1`, `2`."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (skipped when t == 1), depthwise 3x3, linear 1x1 projection.

    The input is added back when the block keeps both resolution (stride 1) and width.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block forward pass, residual when shapes allow."""
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# Each row: expansion t, output channels c, repeats n, first stride s.
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2: conv3x3/2 stem, the [t, c, n, s] table of inverted residuals, 1x1 conv to 1280,
    adaptive average pooling, then `classifier` = Dropout(0.2) + Linear.

    Channel counts are scaled by `width_mult` and rounded with `_make_divisible(..., 8)`; the last
    channel count is only ever scaled up.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, 8)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), 8)
        features: list[nn.Module] = [ConvBNReLU6(in_channels, input_channel, stride=2)]
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            output_channel = _make_divisible(c * width_mult, 8)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        _init_like_torchvision(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an (N, C, H, W) image batch to (N, num_classes) logits."""
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3) -> nn.Module:
    """MobileNetV2 with torchvision's module names; 3,504,872 parameters at the defaults."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels)


def _init_like_torchvision(model: nn.Module, linear_std: float | None = None) -> None:
    """Kaiming-normal (fan_out) convs, unit/zero batch norms; linears N(0, linear_std) if given, else PyTorch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)
