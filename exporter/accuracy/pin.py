"""Keep float layers float at run time, not only in the file.

onnxruntime >= 1.21 has a graph optimizer, `WeightBiasQuantization` (level 1, on by default), that
quantizes the float weights (per tensor, symmetric int8) and bias of a Conv / ConvTranspose / Gemm
whose input comes from a DequantizeLinear with a scalar scale and whose output runs into a
QuantizeLinear (through Relu/Clip, after QDQ propagation through MaxPool/Reshape/Transpose/...).
A layer excluded from quantization with `nodes_to_exclude` therefore often runs in int8 anyway,
with a coarser scheme than the quantizer would have used.

Two ways to keep such a layer float, both exact:

- `pin_by_per_axis_input` (what the mixed-precision search uses): the layer reads its input through a
  per-axis copy of the DequantizeLinear (the same scale and zero point repeated per channel). The
  optimizer wants a scalar input scale, so it leaves the layer alone, and the layer keeps its float
  bias initializer, so onnxruntime's NCHWc and Conv+activation fusions still apply to it.
- `pin_float_layers`: the bias through a DequantizeLinear of an int32 copy with a scale of
  max|bias| / 2**30 (relative error below 1e-9; a zero bias when the layer had none). onnxruntime
  does not constant-fold DequantizeLinear in QDQ models, so the layer stays a float Conv/Gemm, but
  a computed bias also stops the NCHWc layout: measured on a MobileNetV3-shaped net, its float
  depthwise convs ran about twice as slow as with the per-axis input.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm")
_INT32_STEPS = 2.0**30


def runtime_requantized(model: onnx.ModelProto, excluded: set[str] | None = None) -> list[str]:
    """Float Conv/ConvTranspose/Gemm nodes (of `excluded`, or all) onnxruntime would quantize on load.

    Conservative reading of `WeightBiasQuantization`'s conditions: input 0 from a DequantizeLinear
    with a scalar scale; the weight a float initializer (or dequantized, with a bias); the bias
    absent or a 1-D initializer. The output-path condition is not checked (QDQ propagation makes
    it hard to predict), so a listed layer may in fact be left alone; pinning it costs nothing.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    victims = []
    for node in graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        if excluded is not None and node.name not in excluded:
            continue
        source = producer.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear" or len(source.input) < 2:
            continue
        scale = initializers.get(source.input[1])
        if scale is None or any(d != 1 for d in scale.dims):
            continue
        weight_dq = producer.get(node.input[1])
        weight_dq = weight_dq if weight_dq is not None and weight_dq.op_type == "DequantizeLinear" else None
        weight = initializers.get(node.input[1])
        if weight_dq is None and (weight is None or weight.data_type != onnx.TensorProto.FLOAT):
            continue
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if has_bias:
            bias = initializers.get(node.input[2])
            if bias is None or len(bias.dims) != 1:
                continue
        if weight_dq is not None and not has_bias:
            continue
        if weight_dq is not None:
            continue  # the weight is quantized already: the layer is not a float layer
        victims.append(node.name)
    return victims


def pin_float_layers(model: onnx.ModelProto, layers: list[str]) -> list[str]:
    """Give each named float layer a dequantized int32 bias (see the module docstring), in place.

    Returns the names of the layers changed; layers without a float weight initializer are skipped.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    names = {node.name: node for node in graph.node}
    changed = []
    for layer in layers:
        node = names.get(layer)
        if node is None or node.op_type not in LAYER_OPS or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if len(node.input) > 2 and node.input[2] and node.input[2] in initializers:
            bias = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
        elif len(node.input) > 2 and node.input[2]:
            continue  # a computed bias: the optimizer already leaves this layer alone
        else:
            bias = np.zeros(_output_channels(node, weight), dtype=np.float64)
        largest = float(np.max(np.abs(bias))) if bias.size else 0.0
        scale = np.float32(largest / _INT32_STEPS if largest > 0 else 1.0)
        quantized = np.round(bias / float(scale)).astype(np.int32)
        base = f"{layer}_float_bias"
        graph.initializer.extend(
            [numpy_helper.from_array(quantized, base + "_int32"), numpy_helper.from_array(np.array(scale, dtype=np.float32), base + "_scale")]
        )
        graph.node.append(
            helper.make_node("DequantizeLinear", [base + "_int32", base + "_scale"], [base], name=base + "_DequantizeLinear")
        )
        inputs = list(node.input) + [""] * (3 - len(node.input))
        inputs[2] = base
        node.input[:] = inputs
        changed.append(layer)
    if changed:
        _sort_topologically(graph)
    return changed


def pin_by_per_axis_input(model: onnx.ModelProto, layers: list[str]) -> list[str]:
    """Feed each named float layer through a per-axis copy of its input DequantizeLinear, in place.

    Returns the names of the layers changed; a layer whose input channel count cannot be read from
    its float weight, or whose input is not a scalar-scale DequantizeLinear of constants, is skipped.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    names = {node.name: node for node in graph.node}
    changed = []
    for layer in layers:
        node = names.get(layer)
        if node is None or node.op_type not in LAYER_OPS or node.input[1] not in initializers:
            continue
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
            continue
        scale = initializers.get(dq.input[1])
        zero = initializers.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        if scale is None or (len(dq.input) > 2 and dq.input[2] and zero is None):
            continue
        channels = _input_channels(node, numpy_helper.to_array(initializers[node.input[1]]))
        if channels is None:
            continue
        base = f"{layer}_per_axis_input"
        scales = np.full(channels, numpy_helper.to_array(scale).reshape(-1)[0], dtype=numpy_helper.to_array(scale).dtype)
        inputs = [dq.input[0], base + "_scale"]
        new = [numpy_helper.from_array(scales, base + "_scale")]
        if zero is not None:
            zeros = numpy_helper.to_array(zero)
            new.append(numpy_helper.from_array(np.full(channels, zeros.reshape(-1)[0], dtype=zeros.dtype), base + "_zero_point"))
            inputs.append(base + "_zero_point")
        graph.initializer.extend(new)
        graph.node.append(helper.make_node("DequantizeLinear", inputs, [base], name=base + "_DequantizeLinear", axis=1))
        node.input[0] = base
        changed.append(layer)
    if changed:
        _sort_topologically(graph)
    return changed


def _input_channels(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and weight.ndim >= 3:
        return int(weight.shape[1] * attrs.get("group", 1))
    if node.op_type == "ConvTranspose" and weight.ndim >= 3:
        return int(weight.shape[0])
    if node.op_type == "Gemm" and weight.ndim == 2 and not attrs.get("transA", 0):
        return int(weight.shape[1] if attrs.get("transB", 0) else weight.shape[0])
    return None


def _output_channels(node: onnx.NodeProto, weight: np.ndarray) -> int:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return int(weight.shape[0])
    if node.op_type == "ConvTranspose":
        return int(weight.shape[1] * attrs.get("group", 1))
    return int(weight.shape[0] if attrs.get("transB", 0) else weight.shape[1])


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so every node follows the producers of its inputs (new DQ nodes were appended)."""
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progress = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progress = True
            else:
                rest.append(node)
        if not progress:  # a cycle or an outer-scope input: keep the remaining order as it was
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
