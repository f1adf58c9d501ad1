"""Cross-layer equalization keeps the float function (ReLU6 included) and balances depthwise channel ranges."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from exporter.ptq.activations import CalibrationBatches
from exporter.ptq.equalize import HEADROOM, equalize, find_pairs
from exporter.ptq.graph import Graph
from exporter.ptq.records import PtqLog
from tests.ptq.conftest import run
from tests.ptq.nets import ArrayReader, export, imbalanced_mobile_block


def test_equalization_preserves_the_float_function(block_onnx, calib_images, val_images, tmp_path):
    graph = Graph.load(block_onnx)
    log = PtqLog()
    pairs = equalize(graph, CalibrationBatches(ArrayReader(calib_images), 64), log)
    out = tmp_path / "cle.onnx"
    onnx.save(graph.model, str(out))

    before, after = run(block_onnx, val_images), run(out, val_images)
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-4 * np.abs(before).max())
    # conv->clip->dw, dw->clip->pw, pw->relu->dw, dw->clip->pw
    assert [(p.first.op_type, p.activation, p.second.depthwise) for p in pairs] == [
        ("Conv", "Clip", True), ("Conv", "Clip", False), ("Conv", "Relu", True), ("Conv", "Clip", False)
    ]
    depthwise = [r for r in log.of("equalization") if graph.layers[r.node].depthwise]
    assert all(r.range_ratio_before < 0.02 and r.range_ratio_after > 0.5 for r in depthwise)


def test_saturating_relu6_channels_keep_their_scale(calib_images, val_images, tmp_path):
    net = imbalanced_mobile_block(spread=30.0)
    with torch.no_grad():
        net.stem.weight[:4].mul_(20.0)  # four stem channels now hit the ReLU6 bound often
    path = export(net, tmp_path / "saturating.onnx")
    graph = Graph.load(path)
    stem = find_pairs(graph)[0]
    batches = CalibrationBatches(ArrayReader(calib_images), 64)
    pre = run_pre_activation(path, stem.first.output, calib_images)
    log = PtqLog()
    equalize(graph, batches, log)
    out = tmp_path / "cle.onnx"
    onnx.save(graph.model, str(out))

    np.testing.assert_allclose(run(out, val_images), run(path, val_images), rtol=1e-3, atol=1e-4)
    after = Graph(graph.model).weight(stem.first)
    before = Graph.load(path).weight(stem.first)
    saturating = HEADROOM * pre >= 6.0
    assert saturating[:4].all()
    np.testing.assert_array_equal(after[saturating], before[saturating])  # s = 1: clip acts as before
    assert not np.allclose(after[~saturating], before[~saturating])


def run_pre_activation(path, tensor: str, array: np.ndarray) -> np.ndarray:
    """Per-channel maximum of `tensor` over `array`."""
    from exporter.ptq.activations import for_each_batch

    model = onnx.load(str(path))
    peaks = []
    for_each_batch(model, [tensor], [{"input": array}], lambda v: peaks.append(v[tensor].max(axis=(0, 2, 3))))
    return peaks[0]
