"""Graph-side pieces of the float fallback's units: known troublemakers and tensor neighbourhoods.

A unit is a set of nodes kept in float together. This module finds the nodes known to suffer from
int8 without measuring (`troublemakers`), decides when a layer's input quantization is its worst
part (`input_dominated`), and walks the float graph for the nodes that must stay float together to
keep one tensor float (`GraphIndex`). Ranking the units is the search's job
(`exporter.accuracy.fallback`).
"""

from __future__ import annotations

import onnx

from exporter.accuracy.sensitivity import TRANSPARENT_OPS

INPUT_MARGIN_DB = 3.0
"""A layer whose input quantization is within this of its worst part also offers its input tensor as a unit."""
SMALL_CNN_LAYERS = 30


def troublemakers(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes known to suffer from int8 without measuring, with the reason.

    Transformer encoders (a Softmax or a normalization in the graph): Softmax, LayerNormalization,
    activation x activation MatMul, the residual Add before a normalization. Otherwise, a
    convolutional net with at most `SMALL_CNN_LAYERS` weighted layers: its first and last layers.
    """
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ops = {node.op_type for node in graph.node}
    found: dict[str, str] = {}
    if ops & {"Softmax", "LayerNormalization", "SimplifiedLayerNormalization"}:
        for node in graph.node:
            if node.op_type == "Softmax":
                found[node.name] = "softmax of attention: int8 flattens small probabilities"
            elif node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization"):
                found[node.name] = "layer normalization: per-tensor int8 of outlier features"
            elif node.op_type == "MatMul" and not any(i in initializers for i in node.input):
                found[node.name] = "attention product (activation x activation MatMul)"
            elif node.op_type == "Add" and any(
                c.op_type in ("LayerNormalization", "SimplifiedLayerNormalization") for c in consumers.get(node.output[0], [])
            ):
                found[node.name] = "residual Add feeding a normalization (outlier features)"
    weighted = [
        node
        for node in graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose") and any(i in initializers for i in node.input[1:])
    ]
    if "Conv" in ops and not found and 0 < len(weighted) <= SMALL_CNN_LAYERS:
        found.setdefault(weighted[0].name, "first layer of a small convolutional net")
        found.setdefault(weighted[-1].name, "last layer of a small convolutional net")
    return found


def input_dominated(row: dict) -> bool:
    """Is a sensitivity row's input quantization its worst part (within `INPUT_MARGIN_DB`)?"""
    inputs = row.get("input_sqnr_db")
    if inputs is None:
        return False
    others = [v for v in (row.get("weight_sqnr_db"), row.get("output_sqnr_db")) if v is not None]
    return not others or inputs <= min(others) + INPUT_MARGIN_DB


class GraphIndex:
    """Producers and consumers of a float graph, for building tensor units."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = {node.name: node for node in model.graph.node}
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name for init in model.graph.initializer}

    def output_group(self, name: str) -> list[str]:
        """Node `name` and every consumer of its first output downstream through pass-through ops."""
        node = self.nodes.get(name)
        if node is None or not node.output:
            return []
        return list(dict.fromkeys([name, *self._downstream(node.output[0])]))

    def producer_name(self, tensor: str) -> str:
        """The name of the node producing `tensor` ("" for a graph input or initializer)."""
        node = self.producer.get(tensor)
        return node.name if node is not None else ""

    def tensor_groups(self, name: str) -> list[tuple[str, list[str]]]:
        """For each activation input of node `name`: (source tensor, nodes keeping it float).

        Up through pass-through ops to the tensor a real op produced; then its producer, those
        pass-through ops, and every consumer downstream of it through pass-through ops.
        """
        node = self.nodes.get(name)
        groups = []
        for tensor in node.input if node is not None else []:
            if not tensor or tensor in self.initializers:
                continue
            nodes: list[str] = []
            producer = self.producer.get(tensor)
            while producer is not None and producer.op_type in TRANSPARENT_OPS and producer.input:
                tensor = producer.input[0]
                producer = self.producer.get(tensor)
            if producer is not None:
                if producer.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
                    continue
                nodes.append(producer.name)
            nodes.extend(self._downstream(tensor))
            groups.append((tensor, list(dict.fromkeys(nodes))))
        return groups

    def _downstream(self, tensor: str) -> list[str]:
        """Every consumer of `tensor`, and on through the outputs of pass-through ops, in visit order."""
        found: list[str] = []
        frontier, seen = [tensor], set()
        while frontier:
            current = frontier.pop()
            for consumer in self.consumers.get(current, []):
                if consumer.name in seen:
                    continue
                seen.add(consumer.name)
                found.append(consumer.name)
                if consumer.op_type in TRANSPARENT_OPS:
                    frontier.extend(o for o in consumer.output if o)
        return found
