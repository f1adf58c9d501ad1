"""Empirical bias correction: remove the per-channel mean shift quantization causes in each layer's output.

Rule (Nagel et al., "Data-Free Quantization", 2019, empirical variant): quantize the model as it
will be deployed, run it and the float reference on calibration data, and for every Conv/Gemm
take the per-output-channel mean of (quantized output - float output) over samples and positions;
subtract that shift from the layer's float bias, so onnxruntime's int32 bias absorbs it. The shift
seen by a layer includes what earlier layers left, so the measurement is repeated `rounds` times
(quantize, measure, correct), each round removing what the previous left. Run it after AdaRound:
it corrects the rounding that is actually deployed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from exporter.ptq.activations import for_each_batch
from exporter.ptq.graph import Graph
from exporter.ptq.records import BiasCorrectionRecord, PtqLog


def channel_means(model: onnx.ModelProto, tensors: list[str], batches, optimize: bool = True) -> dict[str, np.ndarray]:
    """Mean over samples and positions of each tensor's channels (axis 1) on `batches`."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def visit(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            axes = tuple(i for i in range(value.ndim) if i != 1)
            total = value.astype(np.float64).sum(axis=axes)
            sums[name] = total if name not in sums else sums[name] + total
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]

    for_each_batch(model, tensors, batches, visit, optimize=optimize)
    return {name: sums[name] / counts[name] for name in sums}


def correct_biases(
    graph: Graph,
    reference: onnx.ModelProto,
    quantize: Callable[[onnx.ModelProto], onnx.ModelProto],
    batches,
    log: PtqLog,
    rounds: int = 2,
) -> None:
    """Correct every layer's bias of `graph` in place against the float `reference` model.

    `quantize(model)` returns the deployable QDQ model of a float model (the static quantizer's own
    call, with its calibration cache), so the shift measured is the one onnxruntime will produce.
    """
    layers = list(graph.layers.values())
    if not layers:
        return
    outputs = [layer.output for layer in layers]
    float_means = channel_means(reference, outputs, batches)
    applied = {layer.node: np.zeros_like(float_means[layer.output]) for layer in layers}
    for _ in range(rounds):
        quantized = quantize(graph.model)
        # quantize_static drops a Relu/Clip after a Conv (the output Q clamps instead), so the Conv
        # writes the activation's tensor name: find each layer's output by node name, pre-activation.
        produced = {node.name: node.output[0] for node in quantized.graph.node}
        names = {layer.node: produced[layer.node] for layer in layers if layer.node in produced}
        quant_means = channel_means(quantized, sorted(set(names.values())), batches, optimize=False)
        for node in list(applied):
            layer = graph.layers[node]
            if node not in names:
                continue
            shift = quant_means[names[node]] - float_means[layer.output]
            layer = graph.set_bias(layer, graph.bias(layer) - shift.astype(np.float32))
            applied[node] += shift
    for node, total in applied.items():
        log.add(
            BiasCorrectionRecord(
                node=node,
                channels=len(total),
                mean_abs_shift=float(np.mean(np.abs(total))),
                max_abs_shift=float(np.max(np.abs(total))),
            )
        )
