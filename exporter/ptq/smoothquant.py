"""SmoothQuant on the ONNX graph: move activation outliers into the weights of the Linear layers that read them.

Rule (Xiao et al., 2023): for a group of weight MatMuls reading activation X (K channels, last axis),
    s_j = max|X_j|^alpha / max_over_group|W_j,:|^(1 - alpha)
and the graph computes (X / s) · (diag(s) W) instead of X · W: each weight's input-channel rows are
multiplied by s, and X is divided by s in the LayerNorm that writes it when only the group reads it
(pre-LN blocks: gain and bias divided by s), else by a `Mul(X, 1/s)` node put in front of the group. In float this is the same
function (up to rounding); for int8 it evens out the per-channel activation ranges (one per-tensor
scale then fits every channel) at the cost of wider per-channel weight ranges. `alpha` = 0.5
balances the two; it is chosen per group by measured error (`exporter.ptq.transformer_plan`).
The `Mul` is a float elementwise op on one activation, a negligible share of the MatMul time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.ptq.transformer_graph import WeightMatMul

SCALE_LIMITS = (1e-4, 1e4)


@dataclass(frozen=True)
class SmoothingRecord:
    """SmoothQuant applied to the group reading `tensor` (first MatMul `node`, all of them in `nodes`).

    `scale_*` summarise s; `outlier_ratio_before/after` is the activation's largest per-channel
    absolute maximum over its median one (1 = flat), before and after division by s; `folded_into`
    names the LayerNorm whose gain and bias took 1/s (pre-LN blocks), empty when a `Mul` was inserted.
    """

    node: str
    nodes: tuple[str, ...]
    tensor: str
    alpha: float
    scale_min: float
    scale_median: float
    scale_max: float
    outlier_ratio_before: float
    outlier_ratio_after: float
    folded_into: str = ""
    algorithm: str = "smoothquant"


def weight_in_out(model_weights: dict[str, np.ndarray], matmul: WeightMatMul) -> np.ndarray:
    """The MatMul's weight laid out (in_channels, out_channels)."""
    w = model_weights[matmul.weight]
    return w.T if matmul.in_axis == 1 else w


def smoothing_scales(act_absmax: np.ndarray, weights: Iterable[np.ndarray], alpha: float) -> np.ndarray:
    """Per-input-channel s for `alpha` from activation and (in, out) weight absolute maxima; 1 where undefined."""
    w_absmax = np.max(np.stack([np.abs(w).max(axis=1) for w in weights]), axis=0)
    act = np.asarray(act_absmax, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.power(act, alpha) / np.power(w_absmax.astype(np.float64), 1.0 - alpha)
    s = np.where((act > 0) & (w_absmax > 0) & np.isfinite(s), s, 1.0)
    return np.clip(s, *SCALE_LIMITS).astype(np.float32)


def outlier_ratio(absmax: np.ndarray) -> float:
    """Largest per-channel absolute maximum over the median one."""
    median = float(np.median(absmax))
    return float(np.max(absmax) / median) if median > 0 else float("inf")


def apply_smoothing(model: onnx.ModelProto, group: list[WeightMatMul], scales: np.ndarray, alpha: float,
                    act_absmax: np.ndarray) -> SmoothingRecord:
    """Insert `Mul(X, 1/s)` before the group and scale its weights' input rows by s (in place); returns the record."""
    graph = model.graph
    tensor = group[0].activation
    inits = {init.name: init for init in graph.initializer}
    members = {m.node for m in group}
    norm = _foldable_norm(model, tensor, members)
    if norm is not None:  # LayerNorm read only by the group: divide its gain and bias by s, no Mul needed
        for name in norm.input[1:3]:
            if name:
                value = numpy_helper.to_array(inits[name]).astype(np.float32)
                inits[name].CopyFrom(numpy_helper.from_array((value / scales).astype(np.float32), name))
    else:
        names = {node.name for node in graph.node}
        mul_name = _unique(f"{group[0].node}.smooth", names)
        inverse_name = _unique(f"{tensor}.smooth_inverse_scale", set(inits))
        smoothed = _unique(f"{tensor}.smoothed", {o for n in graph.node for o in n.output})
        graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inverse_name))
        first = min(i for i, node in enumerate(graph.node) if node.name in members)
        for node in graph.node:
            if node.name in members:
                node.input[0] = smoothed
        graph.node.insert(first, onnx.helper.make_node("Mul", [tensor, inverse_name], [smoothed], name=mul_name))
    for matmul in group:
        init = inits[matmul.weight]
        w = numpy_helper.to_array(init).astype(np.float32)
        shape = (-1, 1) if matmul.in_axis == 0 else (1, -1)
        init.CopyFrom(numpy_helper.from_array((w * scales.reshape(shape)).astype(np.float32), matmul.weight))
    return SmoothingRecord(
        node=group[0].node,
        nodes=tuple(m.node for m in group),
        tensor=tensor,
        alpha=float(alpha),
        scale_min=float(scales.min()),
        scale_median=float(np.median(scales)),
        scale_max=float(scales.max()),
        outlier_ratio_before=round(outlier_ratio(act_absmax), 3),
        outlier_ratio_after=round(outlier_ratio(act_absmax / scales), 3),
        folded_into=norm.name if norm is not None else "",
    )


def _foldable_norm(model: onnx.ModelProto, tensor: str, members: set[str]) -> onnx.NodeProto | None:
    """The `LayerNormalization` writing `tensor` when only `members` read it (pre-LN blocks) and it owns its gain/bias."""
    graph = model.graph
    producer = next((n for n in graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "LayerNormalization" or producer.output[0] != tensor:
        return None
    if any(o.name == tensor for o in graph.output):
        return None
    readers = [n for n in graph.node if tensor in n.input]
    if {n.name for n in readers} != members:
        return None
    inits = {init.name for init in graph.initializer}
    params = [name for name in producer.input[1:3] if name]
    if not params or any(p not in inits for p in params):
        return None
    uses = sum(name in params for n in graph.node for name in n.input)
    return producer if uses == len(params) else None


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate
