"""Empirical bias correction: remove the per-channel mean shift each quantized layer adds to its output.

Rule (Nagel et al., "Data-Free Quantization", 2019, empirical variant, measured per layer): run the
deployable QDQ model on calibration data and, for every Conv/Gemm, compare its output there
(int8 weights applied to the dequantized int8 input) with the float layer (reference weights)
applied to the same tensor *before* that input's quantizer. The per-output-channel mean of the
difference, over samples and positions, is the bias this layer's own quantization adds (weight
rounding and its input's rounding and clipping); it is subtracted from the layer's float bias, so
onnxruntime's int32 bias absorbs it.

Measuring each layer against its own float twin on the same upstream values, rather than against
the float model, keeps the shifts local: an error made upstream is corrected where it is made, so
every layer can be corrected at once from one pass without over-correcting the layers below
(comparing with the float model end to end makes every downstream layer re-correct what its
upstream layers already fixed). Run it after AdaRound: it corrects the rounding actually deployed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from exporter.ptq.activations import for_each_batch
from exporter.ptq.graph import Graph, Layer
from exporter.ptq.records import BiasCorrectionRecord, PtqLog


def correct_biases(
    graph: Graph,
    reference: onnx.ModelProto,
    quantize: Callable[[onnx.ModelProto], onnx.ModelProto],
    batches,
    log: PtqLog,
) -> None:
    """Correct every layer's bias of `graph` in place (see the module docstring).

    `reference` holds the float weights (the model before rounding); `quantize(model)` returns the
    deployable QDQ model of a float model (the static quantizer's own call with its calibration
    cache), so the shift measured is the one onnxruntime will produce.
    """
    quantized = quantize(graph.model)
    ref = Graph(reference)
    taps = _taps(quantized, graph)
    if not taps:
        return
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    tensors = sorted({t for tap in taps.values() for t in tap})

    def visit(values: dict[str, np.ndarray]) -> None:
        for node, (before_q, output) in taps.items():
            twin = _float_layer(ref, ref.layers[node], values[before_q])
            diff = values[output].astype(np.float64) - twin
            axes = tuple(i for i in range(diff.ndim) if i != 1)
            total = diff.sum(axis=axes)
            sums[node] = total if node not in sums else sums[node] + total
            counts[node] = counts.get(node, 0) + diff.size // diff.shape[1]

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small per-layer convs between onnxruntime runs: see exporter.ptq.adaround
    try:
        for_each_batch(quantized, tensors, batches, visit, optimize=False)
    finally:
        torch.set_num_threads(threads)
    for node, total in sums.items():
        shift = total / counts[node]
        layer = graph.layers[node]
        graph.set_bias(layer, (graph.bias(layer) - shift).astype(np.float32))
        log.add(
            BiasCorrectionRecord(
                node=node,
                channels=len(shift),
                mean_abs_shift=float(np.mean(np.abs(shift))),
                max_abs_shift=float(np.max(np.abs(shift))),
            )
        )


def _taps(quantized: onnx.ModelProto, graph: Graph) -> dict[str, tuple[str, str]]:
    """Per layer found in the QDQ model: (float tensor before its input's QuantizeLinear, its output).

    quantize_static drops a Relu/Clip after a Conv (the output Q clamps instead), so the Conv
    writes the activation's tensor name: outputs are found by node name and are pre-activation.
    """
    producer = {out: node for node in quantized.graph.node for out in node.output}
    found = {}
    for node in quantized.graph.node:
        if node.name not in graph.layers:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue  # the layer's input is not quantized (kept float): nothing local to correct
        found[node.name] = (q.input[0], node.output[0])
    return found


def _float_layer(ref: Graph, layer: Layer, x: np.ndarray) -> np.ndarray:
    """The reference float layer (weights and bias of `ref`) applied to `x`, float64."""
    import torch
    import torch.nn.functional as F

    producer = ref.producer(layer.input)
    if producer is not None and producer.op_type in ("Relu", "Clip"):
        # quantize_static removed this activation (the Q clamps), so the tensor before the Q is
        # pre-activation in the QDQ model: apply the activation the float layer sees.
        from exporter.ptq.equalize import clip_bounds

        bounds = (0.0, np.inf) if producer.op_type == "Relu" else clip_bounds(ref, producer)
        if bounds is not None:
            x = np.clip(x, *bounds)
    w = torch.from_numpy(ref.weight(layer).astype(np.float32))
    b = torch.from_numpy(ref.bias(layer).astype(np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        if layer.op_type == "Gemm":
            y = xt.reshape(len(xt), -1) @ w.T + b
        elif w.ndim == 3:
            y = F.conv1d(F.pad(xt, (layer.pads[0], layer.pads[1])), w, b, layer.strides, 0, layer.dilations, layer.group)
        else:
            padded = F.pad(xt, (layer.pads[1], layer.pads[3], layer.pads[0], layer.pads[2]))
            y = F.conv2d(padded, w, b, layer.strides, 0, layer.dilations, layer.group)
    return y.double().numpy()
