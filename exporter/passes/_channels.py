"""Which channels of a traced model must be removed together: the dependency analysis behind `prune`.

Every Conv/Linear output starts a *channel space* (its output channels). Walking the fx graph in
order, each tensor carries a `Layout`: along which dimension its channels lie and which spaces (in
which order, repeated how many times) make up that dimension. The rules, by case:

- element-wise ops, BatchNorm, pooling, resizing: the layout passes through unchanged;
- adding or multiplying two tensors (residual additions, squeeze-excitation gates) *ties* their
  spaces: tied spaces must keep the same channel indices;
- concatenation along the channels joins layouts; flatten/reshape into a Linear keeps the layout
  with each channel now covering several consecutive features;
- a depthwise conv follows its input space; a grouped conv requires its spaces to lose the same
  number of channels from every group;
- a Conv/Linear input is a *consumer*: its weight loses the matching input columns.

Anything the rules do not cover (an unknown op or module touching channels, slicing or reducing
over channels, a hard-coded reshape size, a shared layer, reaching the model output) *blocks* the
spaces involved, with a reason: those layers keep all their channels and are reported as skipped.
Nothing is ever guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from exporter.passes._graph import call_counts, shape_of, trace

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = nn.modules.batchnorm._BatchNorm
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.ELU, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
)  # fmt: skip
_ELEMENTWISE = {
    "relu", "relu_", "relu6", "sigmoid", "sigmoid_", "tanh", "tanh_", "gelu", "silu", "hardswish",
    "hardsigmoid", "leaky_relu", "elu", "mish", "softplus", "hardtanh", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "clamp", "clamp_", "clip", "abs", "neg", "exp", "sqrt", "rsqrt", "square",
    "contiguous", "clone", "detach", "float", "half", "to", "type_as", "erf",
}  # fmt: skip
_BINARY = {
    "add", "sub", "mul", "truediv", "div", "iadd", "isub", "imul", "itruediv", "add_", "sub_", "mul_",
    "div_", "true_divide", "maximum", "minimum", "pow",
}  # fmt: skip
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "interpolate", "upsample",
}  # fmt: skip
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_SIZED_RESHAPE = {"view", "reshape", "unflatten"}  # take sizes that may be hard-coded numbers
_REDUCE = {"mean", "sum", "amax", "amin"}
_WEIGHTED = {"conv1d", "conv2d", "conv3d", "convolution", "linear", "batch_norm", "layer_norm", "embedding"}
"""aten calls of layers that `program_graph.lift` left as calls (their weights are not plain parameters)."""
_QUERY = {"size", "dim", "numel", "getattr", "assert"}  # read a property; the result is not a channel tensor
_TORCH_MODULES = ("torch", "torch.nn.functional", "torch.functional", "_operator", "operator", "builtins")
_ATEN_NAMES = {
    "_to_copy": "to", "alias": "clone", "lift_fresh_copy": "clone", "_unsafe_view": "view",
    "constant_pad_nd": "pad", "sym_size": "size", "sym_numel": "numel", "sym_stride": "size",
    "split_with_sizes": "split", "unsafe_split": "split", "_softmax": "softmax", "_log_softmax": "log_softmax",
    "upsample_nearest1d": "interpolate", "upsample_nearest2d": "interpolate", "upsample_nearest3d": "interpolate",
    "upsample_bilinear2d": "interpolate", "upsample_linear1d": "interpolate", "upsample_bicubic2d": "interpolate",
    "upsample_trilinear3d": "interpolate", "clamp_min": "clamp", "clamp_max": "clamp", "relu6": "relu6",
    "_assert_tensor_metadata": "assert", "_assert_scalar": "assert", "sym_constrain_range_for_size": "assert",
    "rsub": "sub",
}  # fmt: skip
"""aten operator names (as in a torch.export graph) that mean the same as a name the rules know."""


@dataclass(frozen=True)
class Segment:
    """`length` channels of `space` (None: channels that can never be pruned), each spanning `inner` positions."""

    space: int | None
    length: int
    inner: int = 1


@dataclass(frozen=True)
class Layout:
    """How dimension `dim` of a tensor is made of channel segments, in order."""

    dim: int
    segments: tuple[Segment, ...]

    def at(self, dim: int) -> Layout:
        """The same segments along another dimension."""
        return Layout(dim, self.segments)

    def spaces(self) -> list[int]:
        """The prunable spaces this layout mentions."""
        return [s.space for s in self.segments if s.space is not None]


@dataclass
class Spaces:
    """Channel spaces joined by union-find; a joined group shares its kept indices and constraints."""

    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)
    producers: list[list[str]] = field(default_factory=list)

    def new(self, size: int, producer: str, groups: int = 1) -> int:
        """A new space of `size` channels written by the layer `producer`."""
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.groups.append(groups)
        self.reasons.append([])
        self.producers.append([producer])
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        """The root of the group `space` belongs to."""
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: int, b: int) -> None:
        """Tie two spaces of equal size: they will keep the same channel indices."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert self.size[ra] == self.size[rb], "tied spaces must have equal sizes"
        self.parent[rb] = ra
        self.groups[ra] = math.lcm(self.groups[ra], self.groups[rb])
        self.reasons[ra] += [r for r in self.reasons[rb] if r not in self.reasons[ra]]
        self.producers[ra] += self.producers[rb]

    def block(self, space: int, reason: str) -> None:
        """Mark the group of `space` as unprunable, giving the reason."""
        root = self.find(space)
        if reason not in self.reasons[root]:
            self.reasons[root].append(reason)

    def constrain(self, space: int, groups: int) -> None:
        """Require the group of `space` to lose equally many channels from each of `groups` chunks."""
        root = self.find(space)
        self.groups[root] = math.lcm(self.groups[root], groups)

    def roots(self) -> list[int]:
        """Every group root, in creation order."""
        return [s for s in range(len(self.parent)) if self.find(s) == s]


@dataclass
class ChannelGraph:
    """Result of the analysis: the spaces and, per layer name, the layout each side of it follows.

    `producers`: Conv/Linear whose output channels are a space. `outputs`: BatchNorm and depthwise
    convs whose output channels (dim 0 of the weight) follow a layout. `inputs`: Conv/Linear and
    depthwise convs whose input channels follow a layout.
    """

    spaces: Spaces
    producers: dict[str, int]
    outputs: dict[str, Layout]
    inputs: dict[str, Layout]
    sized_reshapes: list[SizedReshape] = field(default_factory=list)


@dataclass(frozen=True)
class SizedReshape:
    """A reshape in an editable graph whose hard-coded size at `position` counts the channels of `layout`."""

    node: fx.Node
    position: int
    layout: Layout


def analyze(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ChannelGraph:
    """Trace `model` and work out its channel spaces, their ties, constraints and blocking reasons.

    Raises `exporter.passes._graph.TraceFailure` if the model cannot be traced.
    """
    graph_module = trace(model, example_inputs)
    return _Analyzer(graph_module, editable=graph_module is model).run()


class _Analyzer:
    def __init__(self, graph_module: fx.GraphModule, editable: bool = False) -> None:
        self.gm = graph_module
        self.modules = dict(graph_module.named_modules())
        self.calls = call_counts(graph_module.graph)
        self.spaces = Spaces()
        self.result = ChannelGraph(self.spaces, {}, {}, {})
        self.layouts: dict[fx.Node, Any] = {}
        self.shared: set[str] = set()
        self.editable = editable  # the graph is the model's own: hard-coded reshape sizes can be rewritten

    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            if node.op == "call_module":
                out = self.module(node, self.modules[node.target])
            elif node.op in ("call_function", "call_method"):
                out = self.function(node, _op_name(node))
            elif node.op == "output":
                self.block_args(node, "its channels reach the model output, whose shape must not change")
                out = None
            else:
                out = None
            if out is not None:
                self.layouts[node] = out
        return self.result

    # -- helpers -------------------------------------------------------------------------------

    def layout(self, arg: Any) -> Layout | None:
        found = self.layouts.get(arg) if isinstance(arg, fx.Node) else None
        return found if isinstance(found, Layout) else None

    def block(self, layout: Any, reason: str) -> None:
        for item in layout if isinstance(layout, tuple) else (layout,):
            if isinstance(item, Layout):
                for space in item.spaces():
                    self.spaces.block(space, reason)

    def block_args(self, node: fx.Node, reason: str) -> None:
        for arg in _arg_nodes(node):
            self.block(self.layouts.get(arg), reason)

    def tie(self, a: Layout, b: Layout, reason: str) -> None:
        """Join two layouts that must keep the same channels; block both if their structures differ."""
        same = len(a.segments) == len(b.segments) and all(
            (x.length, x.inner) == (y.length, y.inner) for x, y in zip(a.segments, b.segments)
        )
        if not same:
            self.block(a, reason)
            self.block(b, reason)
            return
        for x, y in zip(a.segments, b.segments):
            if x.space is not None and y.space is not None:
                self.spaces.union(x.space, y.space)
            elif x.space is not None or y.space is not None:
                self.block(Layout(0, (x, y)), reason)

    # -- modules -------------------------------------------------------------------------------

    def module(self, node: fx.Node, module: nn.Module) -> Any:
        name = node.target
        x = self.layout(node.args[0]) if node.args else None
        has_params = any(True for _ in module.parameters(recurse=False))
        if has_params and self.calls[name] > 1:
            self.block_args(node, f"it goes into '{name}', which is called more than once (shared weights)")
            if isinstance(module, (*_CONV, nn.Linear)) and name not in self.shared:
                self.shared.add(name)
                space = self.spaces.new(_out_size(module), name)
                self.spaces.block(space, f"'{name}' is called more than once (shared weights)")
            return None
        if isinstance(module, _CONV):
            return self.conv(node, name, module, x)
        if isinstance(module, nn.Linear):
            in_shape = shape_of(node.args[0])
            if x is not None:
                if in_shape is not None and x.dim == len(in_shape) - 1:
                    self.result.inputs[name] = x
                else:
                    self.block(x, f"it reaches Linear '{name}' along a dimension other than its features")
            space = self.spaces.new(module.out_features, name)
            self.result.producers[name] = space
            out_shape = shape_of(node)
            return Layout(len(out_shape) - 1, (Segment(space, module.out_features),)) if out_shape else None
        if isinstance(module, _NORM):
            if x is not None and x.dim == 1:
                self.result.outputs[name] = x
                return x
            self.block(x, f"it reaches {type(module).__name__} '{name}' along a dimension other than 1")
            return None
        if isinstance(module, _ELEMENTWISE_MODULES):
            return x
        if isinstance(module, _SPATIAL_MODULES):
            return self.spatial(node, x)
        if isinstance(module, nn.Flatten | nn.Unflatten):
            return self.reshape(node, x, sizes=None)
        if isinstance(module, nn.Softmax | nn.LogSoftmax):
            return self.softmax(node, x, module.dim)
        self.block_args(node, f"it goes into {type(module).__name__} '{name}', which the pruner cannot resize")
        return None

    def conv(self, node: fx.Node, name: str, conv: nn.Module, x: Layout | None) -> Layout | None:
        if x is not None and x.dim != 1:
            self.block(x, f"it reaches conv '{name}' along a dimension other than 1")
            x = None
        if conv.groups == conv.in_channels and conv.groups > 1:
            # Depthwise: output channel c*k+j reads only input channel c, so it follows its input.
            if x is None:
                return None
            multiplier = conv.out_channels // conv.in_channels
            out = Layout(1, tuple(Segment(s.space, s.length, s.inner * multiplier) for s in x.segments))
            self.result.inputs[name] = x
            self.result.outputs[name] = out
            return out
        if x is not None:
            if conv.groups > 1:
                only = x.segments[0] if len(x.segments) == 1 else None
                if only is None or only.space is None or only.inner != 1:
                    self.block(x, f"it reaches grouped conv '{name}' mixed with other channels")
                    x = None
                else:
                    self.spaces.constrain(only.space, conv.groups)
            if x is not None:
                self.result.inputs[name] = x
        space = self.spaces.new(conv.out_channels, name, groups=conv.groups)
        self.result.producers[name] = space
        return Layout(1, (Segment(space, conv.out_channels),))

    # -- functions and methods -----------------------------------------------------------------

    def function(self, node: fx.Node, op: str | None) -> Any:
        carried = [a for a in _arg_nodes(node) if a in self.layouts]
        if not carried:
            return None
        x = self.layout(node.args[0]) if node.args else None
        if op in _QUERY:
            if shape_of(node) is not None:  # e.g. `x.T`: a tensor whose channels we do not follow
                self.block_args(node, f"'{node.name}' reads it as another tensor ({node.args[1:]})")
            return None
        if op in _ELEMENTWISE:
            others = [a for a in carried if a is not node.args[0]]
            if others and op != "type_as":
                self.block_args(node, f"'{node.name}' ({op}) combines it with another tensor")
                return None
            return x
        if op in _BINARY:
            return self.binary(node)
        if op in _SPATIAL:
            return self.spatial(node, x)
        if op in _RESHAPE:
            return self.reshape(node, x, sizes=_sizes(node) if op in _SIZED_RESHAPE else None)
        if op in ("expand", "expand_as"):
            return self.expand(node, x, sizes=_sizes(node) if op == "expand" else None)
        if op in _REDUCE:
            return self.reduce(node, x)
        if op in ("softmax", "log_softmax"):
            return self.softmax(node, x, _arg(node, 1, "dim", None))
        if op in ("permute", "transpose"):
            return self.permute(node, x, op)
        if op == "t":
            return x.at(1 - x.dim) if x is not None and len(shape_of(node) or ()) == 2 else x
        if op == "slice":
            return self.slice(node, x)
        if op == "select":
            return self.select(node, x)
        if op in ("cat", "concat", "concatenate"):
            return self.cat(node)
        if op in ("chunk", "split"):
            return self.chunk(node, x)
        if op == "getitem":
            return self.getitem(node)
        if op == "pad":
            return self.pad(node, x)
        where = _module_path(node)
        inside = f" in '{where}'" if where else ""
        if op in _WEIGHTED:
            self.block_args(
                node, f"it goes into '{node.name}' ({op}{inside}), whose weight is computed in the graph rather than "
                "a parameter of its own, so the layer cannot be resized",
            )  # fmt: skip
            return None
        self.block_args(node, f"it goes through '{node.name}' ({op or node.target}{inside}), which the pruner cannot follow")
        return None

    def binary(self, node: fx.Node) -> Layout | None:
        out_shape = shape_of(node)
        operands = [a for a in node.args[:2]]
        if out_shape is None:
            self.block_args(node, f"'{node.name}' combines it with a non-tensor result")
            return None
        aligned: list[Layout | None] = []
        for arg in operands:
            layout, shape = self.layout(arg), shape_of(arg) if isinstance(arg, fx.Node) else None
            aligned.append(layout.at(layout.dim + len(out_shape) - len(shape)) if layout and shape else layout)
        present = [lay for lay in aligned if lay is not None]
        if not present:
            return None
        first = present[0]
        reason = f"'{node.name}' combines it element-wise with channels that do not match"
        for arg, lay in zip(operands, aligned):
            if lay is None:
                shape = shape_of(arg) if isinstance(arg, fx.Node) else None
                offset = first.dim - (len(out_shape) - len(shape)) if shape else -1
                if shape and 0 <= offset and shape[offset] != 1:
                    self.block(first, f"'{node.name}' combines it element-wise with channels that cannot be pruned")
                    return None
        if len(present) == 2:
            if present[0].dim != present[1].dim:
                self.block(present[0], reason)
                self.block(present[1], reason)
                return None
            self.tie(present[0], present[1], reason)
        return first

    def spatial(self, node: fx.Node, x: Layout | None) -> Layout | None:
        if x is None or x.dim == 1:
            return x
        self.block(x, f"'{node.name}' pools or resizes along its channel dimension")
        return None

    def reshape(self, node: fx.Node, x: Layout | None, sizes: list[Any] | None) -> Layout | None:
        in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
        if x is None or in_shape is None or out_shape is None:
            self.block(x, f"'{node.name}' reshapes it in a way the pruner cannot follow")
            return None
        moved = _reshaped(x, in_shape, out_shape)
        if moved is None:
            self.block(x, f"'{node.name}' reshapes across its channel dimension")
            return None
        if sizes is not None and moved.dim < len(sizes):
            fixed = sizes[moved.dim]
            if isinstance(fixed, int) and fixed != -1:
                if not self.editable or _op_name(node) not in ("view", "reshape") or len(node.args) != 2:
                    self.block(x, f"'{node.name}' reshapes with the hard-coded channel size {fixed}")
                    return None
                self.result.sized_reshapes.append(SizedReshape(node, moved.dim, moved))
        return moved

    def expand(self, node: fx.Node, x: Layout | None, sizes: list[Any] | None) -> Layout | None:
        in_shape, out_shape = shape_of(node.args[0]), shape_of(node)
        if x is None or in_shape is None or out_shape is None:
            self.block(x, f"'{node.name}' expands it in a way the pruner cannot follow")
            return None
        moved = x.at(x.dim + len(out_shape) - len(in_shape))
        if out_shape[moved.dim] != in_shape[x.dim]:
            self.block(x, f"'{node.name}' broadcasts its channels")
            return None
        if sizes is not None and moved.dim < len(sizes):
            fixed = sizes[moved.dim]
            if isinstance(fixed, int) and fixed != -1:
                self.block(x, f"'{node.name}' expands with the hard-coded channel size {fixed}")
                return None
        return moved

    def reduce(self, node: fx.Node, x: Layout | None) -> Layout | None:
        dims = _arg(node, 1, "dim", None)
        keepdim = bool(_arg(node, 2, "keepdim", False))
        rank = len(shape_of(node.args[0]) or ())
        if x is None or dims is None or not rank:
            self.block(x, f"'{node.name}' reduces over its channel dimension")
            return None
        dims = [d % rank for d in (dims if isinstance(dims, (tuple, list)) else (dims,))]
        if x.dim in dims:
            self.block(x, f"'{node.name}' reduces over its channel dimension")
            return None
        return x if keepdim else x.at(x.dim - sum(d < x.dim for d in dims))

    def softmax(self, node: fx.Node, x: Layout | None, dim: Any) -> Layout | None:
        rank = len(shape_of(node) or ())
        if x is None or not isinstance(dim, int) or not rank or dim % rank == x.dim:
            self.block(x, f"'{node.name}' normalises over its channel dimension")
            return None
        return x

    def permute(self, node: fx.Node, x: Layout | None, op: str) -> Layout | None:
        rank = len(shape_of(node) or ())
        if x is None or not rank:
            return None
        dims = [a for a in node.args[1:]] or list(node.kwargs.values())
        if op == "permute":
            order = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
            if not all(isinstance(d, int) for d in order):
                self.block(x, f"'{node.name}' permutes by computed dimensions")
                return None
            return x.at([d % rank for d in order].index(x.dim))
        if len(dims) != 2 or not all(isinstance(d, int) for d in dims):
            self.block(x, f"'{node.name}' transposes by computed dimensions")
            return None
        a, b = (d % rank for d in dims)
        return x.at(b if x.dim == a else a if x.dim == b else x.dim)

    def cat(self, node: fx.Node) -> Layout | None:
        tensors = list(_arg(node, 0, "tensors", ()))
        dim = _arg(node, 1, "dim", 0)
        out_shape = shape_of(node)
        if out_shape is None or not isinstance(dim, int):
            self.block_args(node, f"'{node.name}' concatenates in a way the pruner cannot follow")
            return None
        dim %= len(out_shape)
        layouts = [self.layout(t) for t in tensors]
        if any(lay is not None and lay.dim != dim for lay in layouts):
            # Joining along another axis: the channels of every part must match, like an addition.
            present = [lay for lay in layouts if lay is not None]
            reason = f"'{node.name}' stacks it with channels that do not match"
            if len(present) != len(layouts) or any(lay.dim != present[0].dim for lay in present):
                for lay in present:
                    self.block(lay, reason)
                return None
            for lay in present[1:]:
                self.tie(present[0], lay, reason)
            return present[0]
        segments: list[Segment] = []
        for tensor, lay in zip(tensors, layouts):
            if lay is not None:
                segments += lay.segments
            else:
                shape = shape_of(tensor) if isinstance(tensor, fx.Node) else None
                if shape is None:
                    self.block_args(node, f"'{node.name}' concatenates it with a non-tensor")
                    return None
                segments.append(Segment(None, shape[dim]))
        return Layout(dim, tuple(segments))

    def chunk(self, node: fx.Node, x: Layout | None) -> Any:
        dim = _arg(node, 2, "dim", 0)
        rank = len(shape_of(node.args[0]) or ())
        if x is None or not isinstance(dim, int) or not rank or dim % rank == x.dim:
            self.block(x, f"'{node.name}' splits its channels")
            return None
        count = len(node.meta.get("tensor_meta", ()))
        return tuple(x for _ in range(count))

    def getitem(self, node: fx.Node) -> Layout | None:
        source, index = node.args[0], node.args[1]
        carried = self.layouts.get(source)
        if isinstance(carried, tuple):
            if isinstance(index, int):
                return carried[index]
            self.block(carried, f"'{node.name}' selects parts of a split in a way the pruner cannot follow")
            return None
        shape = shape_of(source)
        if not isinstance(carried, Layout):
            return None
        if shape is None:
            self.block(carried, f"'{node.name}' indexes it in a way the pruner cannot follow")
            return None
        moved = _indexed(carried.dim, index, len(shape))
        if moved is None:
            self.block(carried, f"'{node.name}' indexes or slices its channels")
            return None
        return carried.at(moved)

    def slice(self, node: fx.Node, x: Layout | None) -> Layout | None:
        """aten.slice(x, dim, start, end, step): fine along other axes, or when it keeps every channel."""
        in_shape = shape_of(node.args[0]) if node.args else None
        if x is None or in_shape is None:
            return x
        dim = _arg(node, 1, "dim", 0) % len(in_shape)
        if dim != x.dim:
            return x
        start, end, step = _arg(node, 2, "start", None), _arg(node, 3, "end", None), _arg(node, 4, "step", 1)
        whole = start in (None, 0) and (end is None or (isinstance(end, int) and end >= in_shape[dim])) and step == 1
        if not whole:
            self.block(x, f"'{node.name}' slices its channels")
            return None
        return x

    def select(self, node: fx.Node, x: Layout | None) -> Layout | None:
        """aten.select(x, dim, index): drops axis `dim`, which must not be the channel axis."""
        in_shape = shape_of(node.args[0]) if node.args else None
        if x is None or in_shape is None:
            return x
        dim = _arg(node, 1, "dim", 0) % len(in_shape)
        if dim == x.dim:
            self.block(x, f"'{node.name}' picks one of its channels")
            return None
        return x.at(x.dim - (dim < x.dim))

    def pad(self, node: fx.Node, x: Layout | None) -> Layout | None:
        widths = _arg(node, 1, "pad", ())
        rank = len(shape_of(node) or ())
        if x is None or not rank or not isinstance(widths, (tuple, list)):
            self.block(x, f"'{node.name}' pads in a way the pruner cannot follow")
            return None
        padded = [rank - 1 - i // 2 for i, w in enumerate(widths) if w != 0]
        if x.dim in padded:
            self.block(x, f"'{node.name}' pads its channels")
            return None
        return x


def _op_name(node: fx.Node) -> str | None:
    """The name of a torch / operator function, aten operator or tensor method; None for user-defined functions."""
    if node.op == "call_method":
        return str(node.target)
    if isinstance(node.target, torch._ops.OpOverload):
        name = node.target._overloadpacket.__name__
        if name.endswith("_") and not name.startswith("_") and name not in _BINARY:
            name = name[:-1]  # in-place variant (hardtanh_, relu_): same channel rules
        return _ATEN_NAMES.get(name, name)
    module = getattr(node.target, "__module__", None) or ""
    name = getattr(node.target, "__name__", None)
    if module in _TORCH_MODULES and name:
        return name.lstrip("_") if name.startswith("_") and module == "torch.nn.functional" else name
    return None


def _module_path(node: fx.Node) -> str | None:
    """The qualified name of the module whose code made `node` (a torch.export graph records it), if known."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) and path else None


def _arg_nodes(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _arg(node: fx.Node, position: int, name: str, default: Any) -> Any:
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


def _sizes(node: fx.Node) -> list[Any] | None:
    """The size arguments of view/reshape/expand/unflatten, with any computed size left as a node."""
    rest = list(node.args[1:])
    if _op_name(node) == "unflatten":
        return None if len(rest) < 2 else [None] * int(rest[0]) + list(rest[1])
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return list(rest[0])
    return rest or list(node.kwargs.get("shape", node.kwargs.get("size", ())))


def _reshaped(x: Layout, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Layout | None:
    """Where the channels of `x` land after a contiguous reshape, or None if they are split or mixed.

    The channel axis survives when some output axis `e` starts exactly where it started (same
    product of leading sizes) and holds all channels, each now covering `m` times as many positions.
    """
    outer, count = math.prod(in_shape[: x.dim]), in_shape[x.dim]
    after = math.prod(in_shape[x.dim + 1 :])
    for e in range(len(out_shape)):
        if math.prod(out_shape[:e]) != outer or out_shape[e] % count:
            continue
        m = out_shape[e] // count
        if m * math.prod(out_shape[e + 1 :]) == after and after % m == 0:
            return Layout(e, tuple(Segment(s.space, s.length, s.inner * m) for s in x.segments))
    return None


def _indexed(dim: int, index: Any, rank: int) -> int | None:
    """The position of axis `dim` after `tensor[index]`, or None if the index touches that axis."""
    items = list(index) if isinstance(index, tuple) else [index]
    if sum(i is Ellipsis for i in items) > 1:
        return None
    if Ellipsis in items:
        used = sum(i is not None and i is not Ellipsis for i in items)
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (rank - used) + items[at + 1 :]
    source = out = 0
    for item in items:
        if item is None:
            out += 1
            continue
        if source == dim:
            return out if item == slice(None) else None
        if isinstance(item, int):
            source += 1
        elif isinstance(item, slice):
            source, out = source + 1, out + 1
        else:
            return None
    return out + (dim - source)


def _out_size(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, _CONV) else module.out_features

