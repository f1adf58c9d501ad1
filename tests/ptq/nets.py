"""Seeded depthwise-separable test nets for the PTQ tests, exported to float ONNX in-process.

`imbalanced_mobile_block()` is the CLE paper's failure case built by hand: a conv -> ReLU6 ->
depthwise -> ReLU6 -> pointwise stack whose depthwise channels have output ranges spread over two
orders of magnitude, compensated exactly in the pointwise weights. The float function is an
ordinary classifier; per-tensor int8 activations after the depthwise conv crush the small channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn


class MobileBlockNet(nn.Module):
    """conv3x3 -> ReLU6 -> dw3x3 -> ReLU6 -> pw1x1 -> ReLU -> dw3x3 -> ReLU6 -> pw1x1 -> GAP -> Linear."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.dw1 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw1 = nn.Conv2d(c, 2 * c, 1)
        self.dw2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.pw2 = nn.Conv2d(2 * c, 2 * c, 1)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes) logits."""
        x = torch.clamp(self.stem(x), 0, 6)
        x = torch.clamp(self.dw1(x), 0, 6)
        x = torch.relu(self.pw1(x))
        x = torch.clamp(self.dw2(x), 0, 6)
        x = self.pw2(x)
        return self.head(x.mean(dim=(2, 3)))


def imbalanced_mobile_block(seed: int = 0, spread: float = 100.0) -> MobileBlockNet:
    """A `MobileBlockNet` whose depthwise output channels span `spread`x in range, compensated downstream."""
    torch.manual_seed(seed)
    net = MobileBlockNet().eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for dw, pw in ((net.dw1, net.pw1), (net.dw2, net.pw2)):
            channels = dw.out_channels
            a = torch.tensor(np.exp(rng.uniform(np.log(1.0 / spread), 0.0, channels)), dtype=torch.float32)
            dw.weight.mul_(a.view(-1, 1, 1, 1))
            dw.bias.mul_(a)
            pw.weight.div_(a.view(1, -1, 1, 1))
        net.head.weight.mul_(4.0)
    return net


def images(count: int, seed: int, size: int = 16) -> np.ndarray:
    """Smooth random images (low-frequency noise), float32 (count, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(count, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.randn(count, 3, size, size, generator=g)).numpy().astype(np.float32)


def export(net: nn.Module, path: Path, size: int = 16) -> Path:
    """Export `net` to a float ONNX file with input `input` and a dynamic batch axis."""
    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx

    export_onnx(net, [InputSpec("input", (1, 3, size, size))], path, opset=18, dynamic_batch=True, exporter="dynamo")
    onnx.checker.check_model(str(path))
    return path


class ArrayReader:
    """onnxruntime's CalibrationDataReader protocol over one array, `batch` samples at a time, rewindable."""

    def __init__(self, array: np.ndarray, batch: int = 16, name: str = "input") -> None:
        self.array, self.batch, self.name, self.position = array, batch, name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.array):
            return None
        feed = {self.name: self.array[self.position : self.position + self.batch]}
        self.position += self.batch
        return feed

    def rewind(self) -> None:
        self.position = 0

    def __iter__(self):
        while (feed := self.get_next()) is not None:
            yield feed
