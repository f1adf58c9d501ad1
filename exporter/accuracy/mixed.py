"""Build a mixed-precision model: the plain int8 QDQ model with a set of units turned back to float.

Working on the int8 model itself (not re-quantizing with `nodes_to_exclude`) keeps everything the
quantizer did for the int8 part (calibrated ranges, equalized and rounded weights, corrected
biases) and costs no calibration. For each float unit:

1. each quantized constant input (weight, bias) is replaced by the float model's value when the
   unit's weights are within one quantization step of it (the same tensor, only rounded, by nearest
   or AdaRound), the bias included (a bias corrected for int8 error is wrong for a float layer);
   otherwise by its dequantized value. With PTQ, the float model is the *equalized* one
   (`ptq_reference.onnx`), consistent with its int8 neighbours;
2. each activation input is read in float straight from its producer when that producer is float
   too (a float unit, a node that was never quantized, or a graph input), skipping the
   QuantizeLinear/DequantizeLinear pair; from an int8 producer it keeps the DequantizeLinear;
3. a Relu/Clip the quantizer folded into the output QuantizeLinear (its range did the clipping) is
   put back on the float path, taken from the float model;
4. Q/DQ nodes and constants nobody reads any more are removed;
5. float Conv/Gemm layers that still read a DequantizeLinear are pinned float for run time
   (`exporter.accuracy.pin.pin_by_per_axis_input`: onnxruntime would otherwise re-quantize their
   weights when loading); one the per-axis input cannot pin gets the int32-bias pin.
"""

from __future__ import annotations

import copy
from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from exporter.accuracy.units import QDQ_OPS, quantized_units

FOLDED_ACTIVATIONS = ("Relu", "Clip")


def folded_activations(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Relu/Clip nodes of the float model that the quantizer removed, keyed by the tensor they produced.

    The quantizer keeps the activation's output name on the layer before it, so a tensor made by a
    Relu/Clip in the float model and by another op in the quantized one marks a folded activation.
    """
    quant_producer = {out: node for node in quant_model.graph.node for out in node.output}
    found = {}
    for node in float_model.graph.node:
        if node.op_type in FOLDED_ACTIVATIONS and node.output:
            made_by = quant_producer.get(node.output[0])
            if made_by is not None and made_by.op_type not in FOLDED_ACTIVATIONS:
                found[node.output[0]] = node
    return found


def float_units(
    quant_model: onnx.ModelProto,
    names: Iterable[str],
    folded: dict[str, onnx.NodeProto] | None = None,
    float_model: onnx.ModelProto | None = None,
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `quant_model` with the units `names` in float (see the module docstring).

    `folded` (from `folded_activations`) and `float_model` (for a folded Clip's bounds) restore the
    activations the quantizer folded. Returns the model and the layers pinned float.
    """
    from exporter.accuracy.pin import pin_by_per_axis_input, pin_float_layers, runtime_requantized

    model = copy.deepcopy(quant_model)
    graph = model.graph
    chosen = set(names)
    units = {u.name for u in quantized_units(model)}
    unknown = chosen - {n.name for n in graph.node}
    if unknown:
        raise ValueError(f"no node named {sorted(unknown)[0]!r} in the quantized model")
    folded = folded or {}
    initializers = {init.name: init for init in graph.initializer}
    float_inits = {init.name: init for init in float_model.graph.initializer} if float_model is not None else {}
    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    dequantized: dict[tuple[str, bool], str] = {}
    restored: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def is_float_source(tensor: str) -> bool:
        node = producer.get(tensor)
        return node is None or node.name in chosen or (node.name not in units and node.op_type not in QDQ_OPS)

    def float_constant(dq: onnx.NodeProto, exact: bool) -> str:
        key = (dq.output[0], exact)
        if key not in dequantized:
            original = dq.input[0].removesuffix("_quantized")
            name = original + ("_float" if exact else "_dequantized")
            while name in initializers:
                name += "_"
            value = numpy_helper.to_array(float_inits[original]) if exact else _dequantize(dq, initializers)
            tensor = numpy_helper.from_array(value.astype(np.float32), name)
            graph.initializer.append(tensor)
            initializers[name] = tensor
            dequantized[key] = name
        return dequantized[key]

    def float_activation(tensor: str) -> str:
        """`tensor` as the float graph had it: through its folded Relu/Clip when there was one."""
        act = folded.get(tensor)
        if act is None:
            return tensor
        if tensor not in restored:
            node = copy.deepcopy(act)
            node.name = f"{act.name or act.op_type}_restored"
            node.input[0] = tensor
            node.output[:] = [tensor + "_restored"]
            for extra in node.input[1:]:
                if extra and extra not in initializers and extra in float_inits:
                    graph.initializer.append(copy.deepcopy(float_inits[extra]))
                    initializers[extra] = float_inits[extra]
            new_nodes.append(node)
            restored[tensor] = node.output[0]
        return restored[tensor]

    def source_of(dq: onnx.NodeProto) -> str | None:
        """The float tensor behind an activation DequantizeLinear(QuantizeLinear(T)), else None."""
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return None
        return q.input[0]

    # 1-2: the float units' inputs.
    for node in graph.node:
        if node.name not in chosen:
            continue
        constants = [producer.get(n) for n in node.input if n and producer.get(n) is not None]
        constants = [dq for dq in constants if dq.op_type == "DequantizeLinear" and dq.input[0] in initializers]
        weights = [dq for dq in constants if len(initializers[dq.input[0]].dims) >= 2]
        exact = bool(weights) and all(_rounds_to(dq, initializers, float_inits) for dq in weights) and all(
            dq.input[0].removesuffix("_quantized") in float_inits for dq in constants)
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if not name or dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in initializers:
                node.input[index] = float_constant(dq, exact)
                continue
            source = source_of(dq)
            if source is not None and is_float_source(source):
                node.input[index] = float_activation(source)
    # Nodes that were never quantized and graph outputs behind a Q/DQ pair of a float producer.
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] in initializers:
            continue
        source = source_of(node)
        if source is None or not is_float_source(source) or producer.get(source) is None:
            continue
        for consumer in graph.node:
            if consumer.name in units or consumer.op_type in QDQ_OPS:
                continue
            consumer.input[:] = [float_activation(source) if i == node.output[0] else i for i in consumer.input]
        if node.output[0] in graph_outputs:
            new_nodes.append(helper.make_node("Identity", [float_activation(source)], [node.output[0]], name=node.output[0] + "_float"))
            node.output[0] = node.output[0] + "_unused"
    graph.node.extend(new_nodes)
    _remove_dead(graph)
    _topological_sort(graph)
    victims = runtime_requantized(model, chosen)
    pinned = pin_by_per_axis_input(model, victims)
    pinned += pin_float_layers(model, [v for v in victims if v not in pinned])
    if pinned:
        _remove_dead(graph)
    return model, pinned


def _rounds_to(dq: onnx.NodeProto, initializers: dict, float_inits: dict) -> bool:
    """Is the float model's tensor behind this constant DequantizeLinear within one step of it?"""
    original = float_inits.get(dq.input[0].removesuffix("_quantized"))
    if original is None:
        return False
    value = numpy_helper.to_array(original).astype(np.float64)
    dequantized = _dequantize(dq, initializers)
    if value.shape != dequantized.shape:
        return False
    step = _scale(dq, initializers, value.ndim)
    return bool(np.all(np.abs(value - dequantized) <= 1.01 * step + 1e-12))


def _scale(dq: onnx.NodeProto, initializers: dict, ndim: int) -> np.ndarray:
    scale = numpy_helper.to_array(initializers[dq.input[1]]).astype(np.float64)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and ndim > 1:
        shape = [1] * ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return scale


def _dequantize(dq: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> np.ndarray:
    values = numpy_helper.to_array(initializers[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(initializers[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if np.ndim(scale) == 1 and values.ndim > 1:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
    return (values - zero) * scale


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop Q/DQ/Identity nodes whose outputs nobody reads, then initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in (*QDQ_OPS, "Identity") and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _topological_sort(graph: onnx.GraphProto) -> None:
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
