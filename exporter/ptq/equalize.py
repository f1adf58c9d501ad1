"""Cross-layer equalization (CLE) on the float ONNX graph, ReLU6-safe and depthwise-aware.

Rule (Nagel et al., "Data-Free Quantization", 2019): for two layers A -> act -> B where `act` is
positively homogeneous (`act(x / s) = act(x) / s` for s > 0: Relu, LeakyRelu, or nothing), divide
A's output channel i (weights and bias) by s_i and multiply B's input channel i by s_i. The float
function is unchanged and, with `s_i = sqrt(r_A,i / r_B,i)` (r = the channel's max |weight|),
both channels end with the same range sqrt(r_A,i r_B,i), so per-channel int8 of B (whose whole
output channel shares one scale) no longer wastes bits on a few wide input channels. A depthwise
B (one weight slice per channel) and a depthwise A both fit, so MobileNet's conv -> dw -> pw
chains are balanced by iterating over all pairs until the factors settle (`rounds`).

ReLU6 (`Clip(x, 0, hi)`) is not homogeneous: `clip(x / s, 0, hi) != clip(x, 0, hi) / s`. AIMET and
Quark replace ReLU6 by ReLU before CLE, which changes the float function wherever an activation
saturates. Here the Clip is kept and the factors are bounded instead, per channel, from the
calibration data: a channel whose pre-activation reaches the bound (with `HEADROOM`) keeps s = 1
(its clip still acts exactly as before); any other channel gets s_i >= HEADROOM * max_i / hi, so
its scaled values never reach the bound and the Clip stays inactive on it, as it was. The float
function is unchanged on every calibration sample and the Clip keeps onnxruntime's Q/DQ fusion.

Pairs: A and B are Conv/Gemm layers (`exporter.ptq.graph`), A's output (and the activation's)
feeds only the next node, and B is a plain (group 1) or depthwise Conv, or a Gemm after a Gemm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from exporter.ptq.activations import for_each_batch
from exporter.ptq.graph import Graph, Layer
from exporter.ptq.records import EqualizationRecord, PtqLog, SkippedRecord

HEADROOM = 1.1  # a scaled channel's calibration max stays below bound / HEADROOM
HOMOGENEOUS = ("Relu", "LeakyRelu")
MIN_RANGE = 1e-8


@dataclass
class Pair:
    """A -> activation -> B, with the Clip's upper bound when the activation is a ReLU6-style Clip."""

    first: Layer
    second: Layer
    activation: str  # "none", "Relu", "LeakyRelu", "Clip"
    clip_high: float | None = None


def find_pairs(graph: Graph) -> list[Pair]:
    """Every A -> [act] -> B pair of the graph that CLE can scale exactly (see the module docstring)."""
    pairs = []
    for layer in graph.layers.values():
        tensor, activation, high = layer.output, "none", None
        if graph.is_graph_output(tensor) or len(graph.consumers(tensor)) != 1:
            continue
        follower = graph.consumers(tensor)[0]
        if follower.op_type in HOMOGENEOUS or follower.op_type == "Clip":
            if follower.op_type == "Clip":
                bounds = clip_bounds(graph, follower)
                if bounds is None or bounds[0] != 0.0 or not np.isfinite(bounds[1]) or bounds[1] <= 0:
                    continue
                high = bounds[1]
            activation = follower.op_type
            tensor = follower.output[0]
            if graph.is_graph_output(tensor) or len(graph.consumers(tensor)) != 1:
                continue
            follower = graph.consumers(tensor)[0]
        second = graph.layers.get(follower.name)
        if second is None or second.input != tensor or not _compatible(graph, layer, second):
            continue
        pairs.append(Pair(layer, second, activation, high))
    return pairs


def clip_bounds(graph: Graph, node: onnx.NodeProto) -> tuple[float, float] | None:
    """(min, max) of a Clip from its attributes (opset < 11) or constant inputs; None when not constant."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
    for index, default in ((1, None), (2, None)):
        if len(node.input) > index and node.input[index]:
            value = _constant(graph, node.input[index])
            if value is None:
                return None
            if index == 1:
                low = value
            else:
                high = value
    return float(low), float(high)


def equalize(graph: Graph, batches, log: PtqLog, rounds: int = 8) -> list[Pair]:
    """Equalize every pair of `graph` in place (see the module docstring); returns the pairs scaled.

    `batches` (feed dicts) give each Clip-bounded channel's pre-activation maximum; records of the
    factors (and of pairs left alone) go to `log`.
    """
    pairs = find_pairs(graph)
    if not pairs:
        return []
    bounded = [p for p in pairs if p.activation == "Clip"]
    channel_max = _channel_max(graph, [p.first.output for p in bounded], batches) if bounded else {}
    before = {p.first.node: _out_ranges(graph, p.first) for p in pairs}
    total = {p.first.node: np.ones(len(before[p.first.node])) for p in pairs}
    for _ in range(rounds):
        largest_change = 0.0
        for pair in pairs:
            s = _factors(graph, pair, channel_max.get(pair.first.output), total[pair.first.node])
            _apply(graph, pair, s)
            total[pair.first.node] *= s
            largest_change = max(largest_change, float(np.max(np.abs(np.log(s)))))
        if largest_change < 1e-3:
            break
    for pair in pairs:
        s = total[pair.first.node]
        r0, r1 = before[pair.first.node], _out_ranges(graph, pair.first)
        log.add(
            EqualizationRecord(
                node=pair.first.node,
                next_node=pair.second.node,
                activation=pair.activation,
                channels=len(s),
                scale_min=float(s.min()),
                scale_median=float(np.median(s)),
                scale_max=float(s.max()),
                range_ratio_before=float(r0.min() / max(r0.max(), MIN_RANGE)),
                range_ratio_after=float(r1.min() / max(r1.max(), MIN_RANGE)),
            )
        )
        if pair.activation == "Clip":
            saturated = int(np.sum(s == 1.0))
            if saturated == len(s):
                log.add(SkippedRecord(pair.first.node, "equalization", f"every channel reaches the Clip bound {pair.clip_high:g}"))
    return pairs


def _factors(graph: Graph, pair: Pair, pre_max: np.ndarray | None, applied: np.ndarray) -> np.ndarray:
    r1 = _out_ranges(graph, pair.first)
    r2 = _in_ranges(graph, pair.second)
    s = np.ones_like(r1)
    ok = (r1 > MIN_RANGE) & (r2 > MIN_RANGE)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    if pair.activation == "Clip":
        high = float(pair.clip_high)
        if pre_max is None:
            return np.ones_like(r1)
        current = pre_max / applied  # the channel's calibration max in the already-scaled graph
        saturated = HEADROOM * pre_max >= high
        s = np.maximum(s, HEADROOM * current / high)
        s[saturated] = 1.0
    return s


def _apply(graph: Graph, pair: Pair, s: np.ndarray) -> None:
    first, second = pair.first, pair.second
    w1 = graph.weight(first)
    graph.set_weight(first, w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1)))
    if first.bias is not None:
        graph.set_array(first.bias, graph.bias(first) / s)
    w2 = graph.weight(second)
    if second.depthwise:
        w2 = w2 * s.reshape((-1,) + (1,) * (w2.ndim - 1))
    else:
        w2 = w2 * s.reshape((1, -1) + (1,) * (w2.ndim - 2))
    graph.set_weight(second, w2)


def _out_ranges(graph: Graph, layer: Layer) -> np.ndarray:
    w = graph.weight(layer)
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1).astype(np.float64)


def _in_ranges(graph: Graph, layer: Layer) -> np.ndarray:
    w = graph.weight(layer)
    if layer.depthwise:
        return np.abs(w).reshape(w.shape[0], -1).max(axis=1).astype(np.float64)
    return np.abs(w).swapaxes(0, 1).reshape(w.shape[1], -1).max(axis=1).astype(np.float64)


def _compatible(graph: Graph, first: Layer, second: Layer) -> bool:
    channels = graph.weight(first).shape[0]
    w2 = graph.weight(second)
    if second.op_type == "Gemm":
        return first.op_type == "Gemm" and w2.shape[1] == channels
    if second.depthwise:
        return w2.shape[0] == channels == second.group and w2.shape[1] == 1
    return second.group == 1 and first.op_type == "Conv" and w2.shape[1] == channels


def _channel_max(graph: Graph, tensors: list[str], batches) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            axes = tuple(i for i in range(value.ndim) if i != 1)
            peak = value.max(axis=axes).astype(np.float64)
            found[name] = peak if name not in found else np.maximum(found[name], peak)

    for_each_batch(graph.model, tensors, batches, visit)
    return found


def _constant(graph: Graph, name: str) -> float | None:
    if graph.is_initializer(name):
        return float(np.asarray(graph.array(name)).reshape(-1)[0])
    producer = graph.producer(name)
    if producer is not None and producer.op_type == "Constant":
        from onnx import numpy_helper

        for attr in producer.attribute:
            if attr.name == "value":
                return float(numpy_helper.to_array(attr.t).reshape(-1)[0])
    return None
