"""The units of mixed precision: each quantized compute node of a QDQ model, with its PyTorch module.

A *unit* is one node of the int8 QDQ model that is not a QuantizeLinear/DequantizeLinear and touches
quantized data (an input from a DequantizeLinear, or an output into a QuantizeLinear): a Conv with
its weight and activation Q/DQ, an Add, a Mul of an SE gate, a HardSigmoid... Each unit can run in
int8 or in float independently (`exporter.accuracy.mixed`); onnxruntime fuses a unit with its Q/DQ
into one kernel (QLinearConv, QLinearMul...), which is what the latency measurement times.

onnxruntime's pre-processing leaves some nodes unnamed (an inlined HardSwish); `name_unnamed_nodes`
gives them stable names so that they can be units, profiled and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Unit:
    """One quantized node: `name` (ONNX node name), `op_type`, `module` (PyTorch path or ""), `weighted`
    (it has quantized constant inputs: weights), `depthwise` (a Conv with one input channel per group)."""

    name: str
    op_type: str
    module: str = ""
    weighted: bool = False
    depthwise: bool = False

    @property
    def label(self) -> str:
        """What a person reads: the module path with the op, or the node name."""
        return f"{self.module} ({self.op_type})" if self.module else f"{self.name} ({self.op_type})"


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name `<op_type>_<n>` (in place); returns how many were named."""
    taken = {node.name for node in model.graph.node if node.name}
    count = 0
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        count += 1
    return count


def quantized_units(model: onnx.ModelProto) -> list[Unit]:
    """The units of a QDQ model, in graph order (see the module docstring)."""
    from exporter.accuracy.modules import node_module_map

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    modules = node_module_map(model)
    units = []
    for node in graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "Constant" or not node.name:
            continue
        sources = [producer.get(name) for name in node.input if name]
        dq_inputs = [s for s in sources if s is not None and s.op_type == "DequantizeLinear"]
        q_outputs = [c for out in node.output for c in consumers.get(out, []) if c.op_type == "QuantizeLinear"]
        if not dq_inputs and not q_outputs:
            continue
        weighted = any(dq.input[0] in initializers for dq in dq_inputs) and node.op_type in WEIGHTED_OPS
        units.append(Unit(node.name, node.op_type, modules.get(node.name, ""), weighted, _depthwise(node, producer, initializers)))
    return units


def _depthwise(node: onnx.NodeProto, producer: dict, initializers: dict) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = node.input[1]
    source = producer.get(weight)
    if source is not None and source.op_type == "DequantizeLinear":
        weight = source.input[0]
    init = initializers.get(weight)
    return group > 1 and init is not None and len(init.dims) == 4 and init.dims[1] == 1
