"""Recognise a transformer encoder in a float ONNX graph and name its parts.

Rule: a graph is transformer-style when it has at least one `Softmax`, at least one normalization
(`LayerNormalization`, or the decomposed `ReduceMean -> Sub -> ... -> ReduceMean` pattern), at least
one *attention MatMul* (a `MatMul` whose two inputs are both activations, e.g. Q·Kᵀ and P·V) and at
least one *weight MatMul* (a `MatMul`, or a `Gemm` without `transA`, whose second input is a 2-D
float32 initializer: the Linear layers). Only the weight MatMuls are candidates for int8; Softmax,
normalization, GELU, residual Adds and attention MatMuls stay float (their int8 forms are where
static quantization of encoders breaks, and they are a small share of the time).

Weight MatMuls that read the same activation (Q, K and V after one LayerNorm) form a *group*: they
share one activation quantization and one smoothing scale (`exporter.ptq.smoothquant`).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

NORM_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization")


@dataclass(frozen=True)
class WeightMatMul:
    """A Linear layer as a graph node: `activation` (its input tensor) times initializer `weight`.

    `in_axis` is the weight axis that runs over input channels (0 for MatMul and for Gemm without
    `transB`, 1 for Gemm with `transB=1`); `source` is the op type that produced the activation
    (`LayerNormalization`, `Mul` for a decomposed GELU, `Reshape` after attention, ...).
    """

    node: str
    op_type: str
    activation: str
    weight: str
    in_axis: int
    in_channels: int
    out_channels: int
    source: str


@dataclass(frozen=True)
class TransformerGraph:
    """The parts of a float ONNX graph that decide how it is quantized (see the module docstring)."""

    weight_matmuls: tuple[WeightMatMul, ...]
    attention_matmuls: tuple[str, ...]
    softmaxes: tuple[str, ...]
    norms: tuple[str, ...]

    @property
    def is_transformer(self) -> bool:
        """Softmax, normalization, attention MatMuls and weight MatMuls are all present."""
        return bool(self.softmaxes and self.norms and self.attention_matmuls and self.weight_matmuls)

    def groups(self) -> dict[str, list[WeightMatMul]]:
        """Weight MatMuls keyed by the activation tensor they read, in graph order."""
        grouped: dict[str, list[WeightMatMul]] = {}
        for matmul in self.weight_matmuls:
            grouped.setdefault(matmul.activation, []).append(matmul)
        return grouped

    def matmul(self, node: str) -> WeightMatMul:
        """The weight MatMul called `node`."""
        for matmul in self.weight_matmuls:
            if matmul.node == node:
                return matmul
        raise KeyError(node)


def find_transformer(model: onnx.ModelProto) -> TransformerGraph:
    """Classify the nodes of `model` (see the module docstring); check `.is_transformer` for the verdict."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    constants = set(inits) | {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    weight_matmuls: list[WeightMatMul] = []
    attention: list[str] = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or not node.name:
            continue
        a, b = node.input[0], node.input[1]
        if node.op_type == "MatMul" and a not in constants and b not in constants:
            attention.append(node.name)
            continue
        init = inits.get(b)
        if a in constants or init is None or init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        attrs = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
        if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0):
            continue
        in_axis = 1 if node.op_type == "Gemm" and attrs.get("transB", 0) else 0
        source = producer[a].op_type if a in producer else "input"
        weight_matmuls.append(
            WeightMatMul(
                node=node.name,
                op_type=node.op_type,
                activation=a,
                weight=b,
                in_axis=in_axis,
                in_channels=int(init.dims[in_axis]),
                out_channels=int(init.dims[1 - in_axis]),
                source=source,
            )
        )
    norms = [n.name for n in graph.node if n.op_type in NORM_OPS]
    norms += [n.name for n in graph.node if n.op_type == "ReduceMean" and _starts_decomposed_norm(n, consumers)]
    softmaxes = [n.name for n in graph.node if n.op_type == "Softmax"]
    return TransformerGraph(tuple(weight_matmuls), tuple(attention), tuple(softmaxes), tuple(norms))


def _starts_decomposed_norm(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    """`ReduceMean(x)` feeding a `Sub(x, mean)` whose result reaches a second `ReduceMean` (x - mean)²."""
    for sub in consumers.get(node.output[0], []):
        if sub.op_type != "Sub" or sub.input[0] != node.input[0]:
            continue
        for nxt in consumers.get(sub.output[0], []):
            if nxt.op_type in ("Pow", "Mul") and any(c.op_type == "ReduceMean" for c in consumers.get(nxt.output[0], [])):
                return True
    return False
