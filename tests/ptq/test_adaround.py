"""AdaRound's weights sit on onnxruntime's int8 grid, and the quantized file holds exactly those integers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.ptq.graph import Graph
from exporter.ptq.weight_grid import weight_grid
from tests.ptq.conftest import quantize


def test_rounded_weights_are_on_the_grid_and_in_the_quantized_file(block_onnx, calib_images, tmp_path):
    out, info = quantize(block_onnx, tmp_path / "ada", calib_images, adaround=True)
    scheme = info_scheme()
    records = {r.node: r for r in info.ptq_log.of("adaround")}
    assert sum(r.flipped for r in records.values()) > 0  # some weights really round the other way
    assert all(r.output_mse_optimized <= r.output_mse_nearest for r in records.values())
    assert any(r.output_mse_optimized < 0.95 * r.output_mse_nearest for r in records.values())

    rounded = Graph.load(info.quantized_from)
    original = Graph.load(block_onnx)
    quantized = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(out)).graph.initializer}
    for node, layer in rounded.layers.items():
        w = rounded.weight(layer)
        grid = weight_grid(w, scheme)
        q = grid.quantize(w)
        np.testing.assert_allclose(grid.dequantize(q), w, rtol=0, atol=1e-6 * np.abs(w).max())  # on the grid
        stored = quantized[f"{layer.weight}_quantized"]
        stored = stored.T if layer.op_type == "Gemm" and layer.weight_axis == 1 else stored
        np.testing.assert_array_equal(stored.astype(np.int64), q.astype(np.int64))  # onnxruntime kept them
        if records.get(node) is not None and records[node].flipped:
            nearest = weight_grid(original.weight(layer), scheme).quantize(original.weight(layer))
            assert int(np.sum(q != nearest)) == records[node].flipped


def info_scheme():
    import dataclasses

    from targets import get_target

    return dataclasses.replace(get_target("cpu-int8").quantization, reduce_range=False)
