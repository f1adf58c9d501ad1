"""The float ONNX graph as the PTQ algorithms see it: quantizable layers, their weights, their consumers.

Rule: a *layer* is a `Conv` (1-D or 2-D, explicit pads, no `auto_pad`) or a `Gemm` whose weight
(input 1) and bias (input 2, optional) are float32 initializers used by that node only. Those are
the nodes onnxruntime's `quantize_static` gives per-channel int8 weights (axis 0 for Conv, and for
Gemm axis 0 with `transB=1`, axis 1 otherwise). Everything else is left alone by the algorithms.

`Graph` wraps one `onnx.ModelProto` and edits its initializers in place; the algorithms only
change initializer values (and, for equalization, may turn a `Clip(0, 6)` into a `Relu`), so the
node list, names and Q/DQ placement that onnxruntime produces later stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class Layer:
    """One quantizable Conv/Gemm node: names of its weight and bias initializers and its geometry.

    `weight_axis` is the per-channel axis onnxruntime quantizes along; `group` is the Conv group
    count (1 for Gemm); `depthwise` is True for a Conv with one input channel per group and
    group == output channels.
    """

    node: str
    op_type: str
    input: str
    output: str
    weight: str
    bias: str | None
    weight_axis: int
    group: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]

    @property
    def depthwise(self) -> bool:
        """One input channel per group and as many groups as output channels (MobileNet-style)."""
        return self.op_type == "Conv" and self.group > 1


class Graph:
    """Read and edit a float ONNX model's layers (see the module docstring for what a layer is)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._inits = {init.name: init for init in model.graph.initializer}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        self._producer: dict[str, onnx.NodeProto] = {}
        self._outputs = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for name in node.input:
                self._consumers.setdefault(name, []).append(node)
            for name in node.output:
                self._producer[name] = node
        self.layers: dict[str, Layer] = {}
        for node in model.graph.node:
            layer = self._layer(node)
            if layer is not None:
                self.layers[layer.node] = layer

    @classmethod
    def load(cls, model: onnx.ModelProto | str | Path) -> "Graph":
        """Wrap a model, loading it from a path first when given one."""
        return cls(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))

    # --- reading -------------------------------------------------------------------------------

    def array(self, name: str) -> np.ndarray:
        """The value of initializer `name` as a numpy array (a copy)."""
        return numpy_helper.to_array(self._inits[name]).copy()

    def is_initializer(self, name: str) -> bool:
        """True when `name` is an initializer of the graph."""
        return name in self._inits

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        """Nodes reading `tensor`."""
        return self._consumers.get(tensor, [])

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        """The node writing `tensor` (None for graph inputs and initializers)."""
        return self._producer.get(tensor)

    def is_graph_output(self, tensor: str) -> bool:
        """True when `tensor` is one of the model's outputs."""
        return tensor in self._outputs

    def weight(self, layer: Layer) -> np.ndarray:
        """The layer's weight with the output channel first: Conv as stored, Gemm as (out, in)."""
        w = self.array(layer.weight)
        return w.T.copy() if layer.op_type == "Gemm" and layer.weight_axis == 1 else w

    def bias(self, layer: Layer) -> np.ndarray:
        """The layer's bias (zeros when it has none)."""
        if layer.bias is None:
            return np.zeros(self.weight(layer).shape[0], dtype=np.float32)
        return self.array(layer.bias)

    # --- writing -------------------------------------------------------------------------------

    def set_array(self, name: str, value: np.ndarray) -> None:
        """Replace initializer `name`'s value (same name, dtype float32)."""
        init = self._inits[name]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))

    def set_weight(self, layer: Layer, value: np.ndarray) -> None:
        """Write an output-channel-first weight back in the layer's own layout."""
        if layer.op_type == "Gemm" and layer.weight_axis == 1:
            value = value.T
        self.set_array(layer.weight, value)

    def set_bias(self, layer: Layer, value: np.ndarray) -> Layer:
        """Write the bias, creating a bias initializer when the layer had none; returns the updated layer."""
        if layer.bias is not None:
            self.set_array(layer.bias, value)
            return layer
        name = f"{layer.node}.ptq_bias"
        init = numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
        self.model.graph.initializer.append(init)
        self._inits[name] = self.model.graph.initializer[-1]
        node = self.node(layer.node)
        if len(node.input) < 3:
            node.input.append(name)
        else:
            node.input[2] = name  # an empty optional input
        updated = Layer(**{**layer.__dict__, "bias": name})
        self.layers[layer.node] = updated
        return updated

    def node(self, name: str) -> onnx.NodeProto:
        """The node called `name`."""
        for node in self.model.graph.node:
            if node.name == name:
                return node
        raise KeyError(name)

    # --- helpers -------------------------------------------------------------------------------

    def _layer(self, node: onnx.NodeProto) -> Layer | None:
        if node.op_type not in ("Conv", "Gemm") or not node.name or len(node.input) < 2:
            return None
        weight = node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        for name in (weight, bias):
            if name is None:
                continue
            init = self._inits.get(name)
            if init is None or init.data_type != onnx.TensorProto.FLOAT or len(self._consumers.get(name, [])) != 1:
                return None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return None
            if len(self._inits[weight].dims) != 2:
                return None
            axis = 0 if attrs.get("transB", 0) else 1
            return Layer(node.name, "Gemm", node.input[0], node.output[0], weight, bias, axis, 1, (), (), (), ())
        dims = list(self._inits[weight].dims)
        if len(dims) not in (3, 4) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        spatial = len(dims) - 2
        kernel = tuple(attrs.get("kernel_shape", dims[2:]))
        return Layer(
            node=node.name,
            op_type="Conv",
            input=node.input[0],
            output=node.output[0],
            weight=weight,
            bias=bias,
            weight_axis=0,
            group=int(attrs.get("group", 1)),
            kernel=tuple(int(k) for k in kernel),
            strides=tuple(int(s) for s in attrs.get("strides", [1] * spatial)),
            pads=tuple(int(p) for p in attrs.get("pads", [0] * 2 * spatial)),
            dilations=tuple(int(d) for d in attrs.get("dilations", [1] * spatial)),
        )
