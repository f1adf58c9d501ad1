"""End-to-end sensitivity of one MatMul group: the float model with only that group in simulated int8.

Rule: the group's activation gets `QuantizeLinear -> DequantizeLinear` with its calibrated range
(static) or `DynamicQuantizeLinear -> DequantizeLinear` (dynamic), and its weights are replaced by
their int8 grid values, stored in float; everything else stays float. Running that model and the
float one on held calibration samples gives the output cosine loss this group alone causes, which
ranks the groups far better than their local SQNR (an error in the FFN output projection reaches
the embedding almost unchanged, one in a query projection is mostly absorbed by the softmax).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.ptq.transformer_error import WeightGrid
from exporter.ptq.transformer_plan import GroupChoice


def with_group_in_int8(model: onnx.ModelProto, group: GroupChoice, mode: str, ranges: dict[str, tuple[float, float]],
                       grid: WeightGrid) -> onnx.ModelProto:
    """A copy of (smoothed) `model` whose MatMuls of `group` read fake-quantized input and weights."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    members = {m.node for m in group.matmuls}
    index = min(i for i, node in enumerate(graph.node) if node.name in members)
    first = graph.node[index]
    tensor = first.input[0]
    faked = f"{tensor}.probe_fq"
    if mode == "static":
        low, high = ranges[tensor]
        low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / 255.0 if high > low else 1.0
        zero = int(np.clip(np.round(-low / scale), 0, 255))
        graph.initializer.extend([
            numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{tensor}.probe_scale"),
            numpy_helper.from_array(np.array(zero, dtype=np.uint8), f"{tensor}.probe_zero"),
        ])
        nodes = [
            onnx.helper.make_node("QuantizeLinear", [tensor, f"{tensor}.probe_scale", f"{tensor}.probe_zero"],
                                  [f"{tensor}.probe_q"], name=f"{tensor}.probe_quantize"),
            onnx.helper.make_node("DequantizeLinear", [f"{tensor}.probe_q", f"{tensor}.probe_scale", f"{tensor}.probe_zero"],
                                  [faked], name=f"{tensor}.probe_dequantize"),
        ]
    else:
        outs = [f"{tensor}.probe_q", f"{tensor}.probe_scale", f"{tensor}.probe_zero"]
        nodes = [
            onnx.helper.make_node("DynamicQuantizeLinear", [tensor], outs, name=f"{tensor}.probe_quantize"),
            onnx.helper.make_node("DequantizeLinear", outs, [faked], name=f"{tensor}.probe_dequantize"),
        ]
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    inits = {init.name: init for init in graph.initializer}
    for matmul in group.matmuls:
        node = next(n for n in graph.node if n.name == matmul.node)
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        in_out = w.T if matmul.in_axis == 1 else w
        quantized = grid.fake_quant(in_out)
        name = f"{matmul.weight}.probe_fq"
        graph.initializer.append(numpy_helper.from_array(quantized.T if matmul.in_axis == 1 else quantized, name))
        node.input[0] = faked
        node.input[1] = name
    return copy


def group_losses(model: onnx.ModelProto, groups: list[GroupChoice], ranges: dict[str, tuple[float, float]],
                 grid: WeightGrid, loss: Callable[[onnx.ModelProto], float]) -> dict[str, float]:
    """`loss(model with only that group in int8)` for each quantized group, keyed by the group's tensor."""
    return {
        g.tensor: loss(with_group_in_int8(model, g, g.treatment, ranges, grid))
        for g in groups
        if g.treatment in ("static", "dynamic")
    }
