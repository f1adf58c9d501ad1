"""Tiny in-process models, one per family the compression passes must handle, and a context maker.

Each family builder returns a seeded model with non-trivial BatchNorm statistics (so folding and
BN-scale importance are really exercised) and its example input. The families:
plain CNN (flatten into a Linear head, a grouped conv), residual net (tied channels across adds,
a projection shortcut), depthwise-separable net with a squeeze-excitation gate, concat net,
and a Linear-only MLP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from exporter.inputs import InputSpec
from exporter.passes import PassContext


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model.eval()


def c(channels: int, w: float) -> int:
    """Channel count `channels` scaled by the width multiplier `w`."""
    return int(channels * w)


class PlainCNN(nn.Module):
    """conv-bn-relu x3 (the middle one grouped), max-pool, flatten of a 4x4 map into Linear, Linear."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, c(16, w), 3, padding=1, bias=False),
            nn.BatchNorm2d(c(16, w)),
            nn.ReLU(),
            nn.Conv2d(c(16, w), c(32, w), 3, padding=1, groups=2, bias=False),
            nn.BatchNorm2d(c(32, w)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c(32, w), c(32, w), 3, padding=1),
            nn.BatchNorm2d(c(32, w)),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(c(32, w) * 4 * 4, c(64, w)), nn.ReLU(), nn.Linear(c(64, w), 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    """ResNet basic block; `project` adds a 1x1 conv shortcut when the width or stride changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetTiny(nn.Module):
    """Stem, two identity blocks, one projection block, global pool, fc."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c(16, w), 3, padding=1, bias=False), nn.BatchNorm2d(c(16, w)), nn.ReLU())
        self.layer1 = nn.Sequential(Block(c(16, w), c(16, w)), Block(c(16, w), c(16, w)))
        self.layer2 = Block(c(16, w), c(32, w), stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c(32, w), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(avgpool(x))))) with 1x1 convs as the fcs."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, 3x3 depthwise, SE gate, 1x1 project, residual add."""

    def __init__(self, channels: int, expand: int, reduced: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.dw = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.se = SqueezeExcite(hidden, reduced)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.dw(self.expand(x))))


class DepthwiseSENet(nn.Module):
    """Stem, a depthwise-separable conv, two inverted-residual blocks with SE, 1x1 head conv, classifier."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c(16, w), 3, 2, 1, bias=False), nn.BatchNorm2d(c(16, w)), nn.ReLU6())
        self.sep = nn.Sequential(
            nn.Conv2d(c(16, w), c(16, w), 3, padding=1, groups=c(16, w), bias=False),
            nn.BatchNorm2d(c(16, w)),
            nn.ReLU6(),
            nn.Conv2d(c(16, w), c(24, w), 1, bias=False),
            nn.BatchNorm2d(c(24, w)),
        )
        self.blocks = nn.Sequential(InvertedResidual(c(24, w), 4, c(8, w)), InvertedResidual(c(24, w), 4, c(8, w)))
        self.head = nn.Sequential(nn.Conv2d(c(24, w), c(64, w), 1, bias=False), nn.BatchNorm2d(c(64, w)), nn.ReLU6())
        self.classifier = nn.Linear(c(64, w), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.sep(self.stem(x))))
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class ConcatNet(nn.Module):
    """Two branches (a 1x1 and a 3x3 conv) concatenated on channels, a fusing conv, pool, fc."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        a, b, s, f = c(16, w), c(32, w), c(16, w), c(32, w)
        self.stem = nn.Sequential(nn.Conv2d(3, s, 3, padding=1, bias=False), nn.BatchNorm2d(s), nn.ReLU())
        self.branch_a = nn.Sequential(nn.Conv2d(s, a, 1, bias=False), nn.BatchNorm2d(a), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(s, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(a + b + s, f, 3, padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU())
        self.fc = nn.Linear(f, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x), x], dim=1)
        x = self.fuse(x)
        return self.fc(x.mean((2, 3)))


class MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear on flat features."""

    def __init__(self, w: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, c(128, w)), nn.ReLU(), nn.Linear(c(128, w), c(64, w)), nn.ReLU(), nn.Linear(c(64, w), 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


FAMILIES: dict[str, tuple[Callable[..., nn.Module], tuple[int, ...]]] = {
    "plain_cnn": (PlainCNN, (2, 3, 16, 16)),
    "residual": (ResNetTiny, (2, 3, 16, 16)),
    "depthwise_se": (DepthwiseSENet, (2, 3, 16, 16)),
    "concat": (ConcatNet, (2, 3, 16, 16)),
    "mlp": (MLP, (2, 32)),
}


def build(family: str, seed: int = 0, w: float = 1.0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A seeded model of `family` at width multiplier `w` in eval mode, and a seeded example input batch.

    Every prunable channel count scales with `w` while inputs and the 10 outputs stay, so a model
    pruned uniformly by 0.5 must have exactly the tensor shapes of the same family at `w=0.5`.
    """
    factory, shape = FAMILIES[family]
    torch.manual_seed(seed)
    model = randomize_bn(factory(w), seed)
    return model, (torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)),)


def make_context(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> PassContext:
    """A pass context with no calibration or validation data."""
    specs = [InputSpec(f"input{i}", tuple(t.shape)) for i, t in enumerate(example_inputs)]
    return PassContext(example_inputs=example_inputs, input_specs=specs, teacher=model)
