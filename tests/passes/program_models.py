"""Small models with the graph structures compression passes must follow on a `torch.export` program.

Every model takes a batch of 1x16x16 images (the bundled digits sample) and returns 10 logits, and
builds with no arguments, so `--model-class tests.passes.program_models:<Name>` rebuilds it from a state dict.
The structures, one model each: ResNet basic blocks (residual additions, a projection shortcut),
MobileNetV2 inverted residuals (depthwise convs), a ResNeXt bottleneck (groups=4), a MobileNetV3
squeeze-excitation gate (hardswish, hardsigmoid), Inception/DenseNet concatenation, ShuffleNet
channel shuffles (V1 view/transpose/view, V2 chunk and concat), flatten into a Linear (with the batch
size read from the tensor, and with a hard-coded feature count), a pre-norm transformer block
(timm-style fused qkv attention, GELU MLP, LayerNorm; and with torch's `nn.MultiheadAttention`), a
conv block called twice, and a model-library style net whose `forward` branches on shapes and
attributes, which `torch.fx.symbolic_trace` rejects.

`with_dead_channels` zeroes every odd output channel of every layer but the classifier head (and
neutralises the BatchNorms after them), so those channels carry exact zeros through the whole
network: pruning half the channels by L1 norm must then remove exactly them and leave the function
unchanged, which makes "the pruned model computes what the original did" a test with a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

IMAGE_SHAPE = (1, 16, 16)
NUM_CLASSES = 10


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation), torchvision's Conv2dNormActivation layout (names 0, 1, 2)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# -- residual (ResNet) -------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 conv+BN, shortcut added (projected when shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResidualCNN(nn.Module):
    """Stem, an identity BasicBlock, a projecting BasicBlock (stride 2), global pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- depthwise (MobileNetV2) -------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn(cin, hidden, 1, act=nn.ReLU6),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class InvertedResidualNet(nn.Module):
    """A MobileNetV2 in miniature: stem, three inverted residuals (two with skip), 1x1 head conv, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, act=nn.ReLU6),
            InvertedResidual(16, 16, 1, 4),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            conv_bn(24, 64, 1, act=nn.ReLU6),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# -- grouped (ResNeXt) -------------------------------------------------------------------------------


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce, 3x3 grouped conv (groups=4), 1x1 expand, residual add, ReLU."""

    def __init__(self, channels: int, width: int, groups: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + x)


class GroupedNet(nn.Module):
    """Stem, a ResNeXt bottleneck, a grouped conv that widens (32 -> 64, groups=4), pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 32)
        self.block = ResNeXtBottleneck(32, 64, groups=4)
        self.widen = conv_bn(32, 64, 3, stride=2, groups=4)
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.widen(self.block(self.stem(x)))
        return self.fc(x.mean((2, 3)))


# -- squeeze-excitation (MobileNetV3) ----------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation with MobileNetV3's activations: x * hardsigmoid(fc2(relu(fc1(pool(x)))))."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class SEBlock(nn.Module):
    """MobileNetV3 bneck: 1x1 expand (hardswish), 3x3 depthwise (hardswish), SE gate, 1x1 project, residual."""

    def __init__(self, channels: int, hidden: int, squeeze: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv_bn(channels, hidden, 1, act=nn.Hardswish),
            conv_bn(hidden, hidden, 3, groups=hidden, act=nn.Hardswish),
            SqueezeExcitation(hidden, squeeze),
            conv_bn(hidden, channels, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SEGateNet(nn.Module):
    """Stem (hardswish), an SE bneck with residual, 1x1 head conv, MobileNetV3's two-Linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, stride=2, act=nn.Hardswish),
            SEBlock(16, 32, 8),
            conv_bn(16, 48, 1, act=nn.Hardswish),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(48, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- concatenation (Inception, DenseNet) -------------------------------------------------------------


class InceptionModule(nn.Module):
    """Three branches (1x1; 1x1 then 3x3; 3x3 max-pool then 1x1) concatenated along the channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1 = conv_bn(cin, 8, 1)
        self.branch2 = nn.Sequential(conv_bn(cin, 8, 1), conv_bn(8, 16, 3))
        self.branch3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class DenseLayer(nn.Module):
    """DenseNet layer: pre-activation BN-ReLU-conv on the concatenated input; its output is appended to it."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], 1)


class ConcatNet(nn.Module):
    """Stem, an Inception module (8+16+8 channels), a dense layer (+16), a BN-ReLU-1x1 transition, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.inception = InceptionModule(16)
        self.dense = DenseLayer(32, 16)
        self.transition = nn.Sequential(nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 32, 1, bias=False), nn.AvgPool2d(2))
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.dense(self.inception(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- channel shuffle (ShuffleNet V1 and V2) ----------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNet shuffle: view as (n, groups, c/groups, h, w), swap axes 1 and 2, view back."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnitV1(nn.Module):
    """ShuffleNet V1 unit: grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1, residual add, ReLU."""

    def __init__(self, channels: int, hidden: int, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.gconv1 = conv_bn(channels, hidden, 1, groups=groups)
        self.dwconv = conv_bn(hidden, hidden, 3, groups=hidden, act=None)
        self.gconv2 = conv_bn(hidden, channels, 1, groups=groups, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.gconv1(x), self.groups)
        return F.relu(x + self.gconv2(self.dwconv(out)))


class ShuffleUnitV2(nn.Module):
    """ShuffleNet V2 unit (stride 1): split the channels in two, transform one half, concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(
            conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, act=None), conv_bn(half, half, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


class ShuffleNet(nn.Module):
    """Stem, a V1 unit (groups=4), a V2 unit, 1x1 head conv, pool, fc."""

    # The V1 shuffle sends channel g*8+i to i*4+g: odd channels of gconv1 land where (p // 4) is odd.
    dead_channels = {"unit1.dwconv": lambda n: [p for p in range(n) if (p // 4) % 2]}

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(1, 16)
        self.unit1 = ShuffleUnitV1(16, 32, groups=4)
        self.unit2 = ShuffleUnitV2(16)
        self.conv5 = conv_bn(16, 32, 1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.unit2(self.unit1(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


# -- flatten into a Linear ---------------------------------------------------------------------------


class _FlattenBase(nn.Module):
    """Two conv stages with max-pooling (16x16 -> 4x4), then a 512 -> 64 -> 10 MLP on the flattened map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, NUM_CLASSES)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class FlattenNet(_FlattenBase):
    """Flattens with the batch size read from the tensor: `x.view(x.size(0), -1)`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(x.view(x.size(0), -1))


class FixedViewNet(_FlattenBase):
    """Flattens with a hard-coded feature count: `x.view(-1, 32 * 4 * 4)` (old tutorials and LeNet ports)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(x.view(-1, 32 * 4 * 4))


# -- transformer -------------------------------------------------------------------------------------


class Attention(nn.Module):
    """timm's ViT attention: one fused qkv Linear split into heads, scaled dot product, softmax, out projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    """timm's transformer MLP: fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Each of the 16 image rows is a token: Linear embedding + position embedding, one block, final norm, mean pool, head."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(16, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 16, dim))
        self.blocks = nn.Sequential(TransformerBlock(dim, heads, hidden))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.flatten(1, 2)) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


class MHABlock(nn.Module):
    """torchvision's ViT encoder block: `nn.MultiheadAttention` (fused in-projection, no `.weight` of its own), GELU MLP."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MHATransformer(TinyTransformer):
    """`TinyTransformer` with torch's own `nn.MultiheadAttention` (as torchvision's ViT) instead of timm's."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(MHABlock())


# -- a layer called twice ----------------------------------------------------------------------------


class SharedConvNet(nn.Module):
    """One conv block applied twice in a loop (weights shared across calls, as in recurrent refinement nets)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU())
        self.head_conv = conv_bn(16, 32, 1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(2):
            x = self.body(x)
        return self.fc(self.head_conv(x).mean((2, 3)))


# -- a convolution whose weight is computed in forward -----------------------------------------------


class ScaledConv(nn.Module):
    """A conv whose weight is scaled per output channel in `forward` (as weight-standardised or quantization-aware
    convs do): the program holds an aten convolution over a computed tensor, not a layer with its own weight."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(cout, cin, 3, 3) * (2.0 / (9 * cin)) ** 0.5)
        self.register_buffer("gain", torch.linspace(0.5, 1.5, cout).reshape(cout, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel * self.gain, padding=1)


class ComputedWeightNet(nn.Module):
    """Stem, a `ScaledConv` (+BN, ReLU), a 3x3 conv, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.scaled = ScaledConv(16, 32)
        self.bn = nn.BatchNorm2d(32)
        self.head = conv_bn(32, 32)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(F.relu(self.bn(self.scaled(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


# -- model-library style: Python control flow in forward ---------------------------------------------


class LibraryBlock(nn.Module):
    """A MnasNet/EfficientNet block as model libraries write it (ReLU, as timm's mnasnet): optional parts chosen in `forward`."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool) -> None:
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        self.use_res = stride == 1 and cin == cout
        self.conv_pw = conv_bn(cin, hidden, 1) if self.has_expand else nn.Identity()
        self.conv_dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = SqueezeExcitation(hidden, max(4, cin // 2)) if se else None
        self.conv_pwl = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.drop_path_rate = 0.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.has_expand:
            x = self.conv_pw(x)
        x = self.conv_dw(x)
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.use_res and x.shape[1] == shortcut.shape[1]:
            if self.training and self.drop_path_rate > 0:
                keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop_path_rate
                x = x * keep / (1 - self.drop_path_rate)
            x = x + shortcut
        return x


class LibraryStyleNet(nn.Module):
    """A timm-like net: resizes large inputs, loops over `self.blocks`, picks its pooling by a string attribute."""

    def __init__(self, global_pool: str = "avg") -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.blocks = nn.ModuleList([
            LibraryBlock(16, 16, 1, 1, se=False),
            LibraryBlock(16, 24, 2, 4, se=True),
            LibraryBlock(24, 24, 1, 4, se=True),
        ])
        self.conv_head = conv_bn(24, 64, 1)
        self.global_pool = global_pool
        self.classifier = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 32:
            x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv_head(x)
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        else:
            x = x.amax((2, 3))
        return self.classifier(x)


class TwoInputNet(nn.Module):
    """Image and a 4-value side input: a conv masked by the image's own bright pixels, the pooled features concatenated
    with the side input into the classifier (channels meet values that no layer produced)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = conv_bn(1, 16)
        self.body = conv_bn(16, 32)
        self.fc = nn.Linear(32 + 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        y = self.body(self.image(x) * (x > 0.1).float())
        return self.fc(torch.cat([y.mean((2, 3)), extra], 1))


MODELS: dict[str, type[nn.Module]] = {
    "residual": ResidualCNN,
    "depthwise": InvertedResidualNet,
    "grouped": GroupedNet,
    "se_gate": SEGateNet,
    "concat": ConcatNet,
    "channel_shuffle": ShuffleNet,
    "flatten": FlattenNet,
    "fixed_view": FixedViewNet,
    "transformer": TinyTransformer,
    "torch_attention": MHATransformer,
    "shared_layer": SharedConvNet,
    "computed_weight": ComputedWeightNet,
    "control_flow": LibraryStyleNet,
}
"""Structure name -> model class (all build with no arguments)."""


# -- weights -----------------------------------------------------------------------------------------


def seeded(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    """`cls()` with seeded weights and random (deterministic) BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = cls()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        for name, param in model.named_parameters():
            if name.endswith("pos_embed"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


def head_name(model: nn.Module) -> str:
    """The qualified name of the last Linear (the classifier head, whose outputs are the model's)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def dead_indices(model: nn.Module, name: str, size: int) -> list[int]:
    """The channels of layer `name` that `with_dead_channels` zeroes: the odd ones, unless the model says otherwise.

    A model whose channels are permuted on the way (a channel shuffle) lists, in its `dead_channels`
    attribute, the layers after the permutation with the indices the odd channels were moved to.
    """
    rules = getattr(model, "dead_channels", {})
    for prefix, rule in rules.items():
        if name == prefix or name.startswith(prefix + "."):
            return list(rule(size))
    return list(range(1, size, 2))


def with_dead_channels(model: nn.Module) -> nn.Module:
    """Zero every odd output channel of every Conv/Linear except the head, and make the BatchNorms pass those zeros.

    Every activation in these models maps 0 to 0 (ReLU, ReLU6, hardswish, GELU), max/avg pooling
    keeps a zero channel zero, a gate multiplies it, and concatenating even-sized parts keeps odd
    positions odd; so the odd channels of every feature map are exactly zero and the even ones carry
    the whole function. Pruning half of each layer by L1 norm removes exactly the dead channels.
    """
    head = head_name(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and name != head:
                dead = dead_indices(model, name, module.weight.shape[0])
                module.weight[dead] = 0.0
                if module.bias is not None:
                    module.bias[dead] = 0.0
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                dead = dead_indices(model, name, module.num_features)
                module.bias[dead] = 0.0
                module.running_mean[dead] = 0.0
    return model.eval()


# -- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digits:
    """The bundled digits data: (N, 1, 16, 16) float32 images in [0, 1] and int64 labels."""

    inputs: np.ndarray
    labels: np.ndarray


def digits_split(name: str) -> Digits:
    """One split of the digits sample: 'calib' and 'val' (300 each, from samples/digits) or 'train' (1197)."""
    if name in ("calib", "val"):
        data = np.load(Path(__file__).resolve().parents[2] / "samples" / "digits" / f"{name}.npz")
        return Digits(data["input"], data["labels"])
    from samples.make_sample import load_digits_16x16, split_digits

    split = split_digits(*load_digits_16x16())[name]
    return Digits(split.inputs, split.labels)


def train_on_digits(model: nn.Module, epochs: int = 8, seed: int = 0) -> nn.Module:
    """Train `model` with Adam on the digits training split (a few seconds for these sizes); eval mode after."""
    train = digits_split("train")
    inputs, labels = torch.from_numpy(train.inputs), torch.from_numpy(train.labels)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=shuffle).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, data: Digits) -> float:
    """Top-1 accuracy of `model` on `data`."""
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.inputs)).argmax(1).numpy()
    return float((predicted == data.labels).mean())


# -- saving ------------------------------------------------------------------------------------------


def save_program(model: nn.Module, path: Path, batch: int = 2) -> Path:
    """`torch.export` the model with a dynamic batch axis (as a user would) and `torch.export.save` it to `path`."""
    example = torch.rand(batch, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    dim = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes={"x": {0: dim}})
    torch.export.save(program, str(path))
    return path


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """`torch.save` the model's state dict to `path`."""
    torch.save(model.state_dict(), str(path))
    return path
