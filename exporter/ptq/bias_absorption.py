"""High-bias absorption: move a always-positive part of a layer's output into the next layer's bias.

Rule (Nagel et al., "Data-Free Quantization", 2019, with calibration statistics instead of
BatchNorm's): for a pair A -> Relu -> B, let c_i = max(0, min(lowest value, mean - 3 std)) of A's
output channel i over the calibration data (the paper's `beta - 3 gamma`, bounded by what was seen). Where A's output is >= c_i, `relu(y) = relu(y - c) + c`, so subtracting c from
A's bias and adding B's response to the constant c to B's bias leaves the function unchanged while
the activation between them loses its constant offset and quantizes with a finer step. B's
response to a constant is `sum(W_B[:, i, ...]) * c_i` only where B sees no zero padding, so B
must be a Gemm or a Conv with all pads 0; a Clip (ReLU6) would need a per-channel bound of
`hi - c_i` and is left alone. Equalization (which scales some channels up) runs first.
"""

from __future__ import annotations

import numpy as np

from exporter.ptq.activations import for_each_batch
from exporter.ptq.equalize import find_pairs
from exporter.ptq.graph import Graph
from exporter.ptq.records import BiasAbsorptionRecord, PtqLog


def absorb_high_biases(graph: Graph, batches, log: PtqLog) -> int:
    """Absorb every eligible pair of `graph` in place (see the module docstring); returns pairs changed."""
    pairs = [
        p
        for p in find_pairs(graph)
        if p.activation == "Relu" and p.first.bias is not None and (p.second.op_type == "Gemm" or not any(p.second.pads))
    ]
    if not pairs:
        return 0
    stats: dict[str, list[np.ndarray]] = {}

    def visit(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            axes = tuple(i for i in range(value.ndim) if i != 1)
            v = value.astype(np.float64)
            found = [v.min(axis=axes), v.sum(axis=axes), (v * v).sum(axis=axes), np.full(v.shape[1], v.size / v.shape[1])]
            if name in stats:
                old = stats[name]
                found = [np.minimum(old[0], found[0])] + [a + b for a, b in zip(old[1:], found[1:])]
            stats[name] = found

    for_each_batch(graph.model, [p.first.output for p in pairs], batches, visit)
    changed = 0
    for pair in pairs:
        low, total, squares, count = stats[pair.first.output]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        c = np.maximum(np.minimum(low, mean - 3.0 * std), 0.0)
        if not np.any(c > 0):
            continue
        graph.set_array(pair.first.bias, (graph.bias(pair.first) - c).astype(np.float32))
        w2 = graph.weight(pair.second)
        if pair.second.depthwise:
            response = w2.reshape(w2.shape[0], -1).sum(axis=1) * c
        else:
            response = w2.reshape(w2.shape[0], w2.shape[1], -1).sum(axis=2).astype(np.float64) @ c
        second = graph.set_bias(pair.second, (graph.bias(pair.second) + response).astype(np.float32))
        pair.second = second
        changed += 1
        log.add(BiasAbsorptionRecord(pair.first.node, pair.second.node, int(np.sum(c > 0)), float(c.max())))
    return changed
