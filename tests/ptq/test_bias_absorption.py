"""High-bias absorption keeps the float function and removes the constant offset between layers."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from exporter.ptq.activations import CalibrationBatches, for_each_batch
from exporter.ptq.bias_absorption import absorb_high_biases
from exporter.ptq.graph import Graph
from exporter.ptq.records import PtqLog
from tests.ptq.conftest import run
from tests.ptq.nets import ArrayReader, export, images


class HighBias(nn.Module):
    """conv3x3 (large positive biases) -> ReLU -> conv1x1 (unpadded) -> GAP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.a.bias.copy_(torch.linspace(0, 20, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))).mean(dim=(2, 3))


def test_absorption_preserves_the_function_and_shrinks_the_activation(calib_images, val_images, tmp_path):
    path = export(HighBias().eval(), tmp_path / "high_bias.onnx")
    graph = Graph.load(path)
    log = PtqLog()
    assert absorb_high_biases(graph, CalibrationBatches(ArrayReader(calib_images), 64), log) == 1
    out = tmp_path / "absorbed.onnx"
    onnx.save(graph.model, str(out))

    # exact wherever the activation stays above the absorbed constant (all of the calibration data);
    # held-out images may dip below it on a rare pixel
    np.testing.assert_allclose(run(out, calib_images), run(path, calib_images), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run(out, val_images), run(path, val_images), rtol=2e-3, atol=2e-3)
    (record,) = log.records
    assert record.channels_absorbed >= 4 and record.max_absorbed > 10.0
    layer = graph.layers[record.node]
    lows = []
    for_each_batch(graph.model, [layer.output], [{"input": calib_images}], lambda v: lows.append(v[layer.output].min(axis=(0, 2, 3))))
    assert np.all(lows[0] <= 1e-4)  # every channel now reaches zero: no constant offset left to quantize
