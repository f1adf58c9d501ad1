"""The one graph compression passes work on: a `torch.export` program with its layers as modules.

`capture` turns an `nn.Module` into an `ExportedProgram` (batch axis dynamic); a `.pt2` file already
is one. `lift` turns a program into an `fx.GraphModule` that runs its aten graph, where every
convolution, linear, batch norm, layer norm and embedding whose weights are plain parameters is a
real `nn.Conv2d`, `nn.Linear`, ... registered under the name it had in the original model
(`features.3.conv.0.0`; the names come from the parameters' qualified names, which the program
keeps). Every other operation stays an aten call (`aten.add.Tensor`, `aten.view.default`, ...).

So the passes read one kind of graph whatever the user saved, and still find, rebuild and report
layers by their real names. The lifted model is trainable (distillation), runs eagerly, exports to
ONNX like any module, and needs none of the model's Python code: neither `torch.fx` symbolic
tracing (which fails on control flow in `forward`) nor the class behind a `.pt2` file.

A layer is lifted only when its parameters belong to it alone (a module that holds other state, or
a weight computed in the graph, stays an aten call, which the passes treat as something they
cannot resize); calls that share one layer's weights become calls of one shared module.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn

aten = torch.ops.aten


class CaptureFailure(Exception):
    """`torch.export` could not capture the model; the message says why, in one line."""


def capture(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """Export `model` with `torch.export` (every input's axis 0 dynamic), in eval mode, without running its code twice.

    Raises `CaptureFailure` (one line) when `torch.export` cannot capture it.
    """
    from exporter.quiet import quiet_torch_export

    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if t.dim() else None for t in example_inputs)
    was_training = model.training
    model.eval()
    try:
        with quiet_torch_export():
            return torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic, strict=False)
    except Exception as exc:  # export raises many types (UserError, GuardOnDataDependentSymNode, ...)
        raise CaptureFailure(f"torch.export could not capture the model: {_first_line(exc)}") from None
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class _LayerKind:
    """How one aten call becomes a module: which arguments are parameters and how to build the module."""

    weight_arg: int
    param_args: dict[int, str]  # argument position -> attribute name on the module
    build: Callable[[fx.Node, dict[str, torch.Tensor]], nn.Module | None]
    input_arg: int = 0


def lift(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """The program's graph as an `fx.GraphModule` whose conv/linear/norm/embedding calls are named modules."""
    graph_module = program.module()
    _drop_guards(graph_module)
    graph = graph_module.graph
    attrs = {n: n.target for n in graph.nodes if n.op == "get_attr"}
    uses = _parameter_uses(graph)
    lifted: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        kind = _KINDS.get(node.target) if node.op == "call_function" else None
        if kind is None or len(node.args) <= kind.weight_arg:
            continue
        weight = node.args[kind.weight_arg]
        if weight not in attrs or not attrs[weight].endswith(".weight") and attrs[weight] != "weight":
            continue
        owner = attrs[weight].rpartition(".")[0]
        params = _layer_params(node, kind, attrs, owner)
        if params is None or not _owned_by(owner, params, graph_module, uses, node) or not _plain_outputs(node):
            continue
        module = kind.build(node, {name: _resolve(graph_module, attrs[p]) for name, p in params.items()})
        if module is None:
            continue
        if owner in lifted:
            if not _same_layer(lifted[owner], module):
                continue
            module = lifted[owner]
        else:
            lifted[owner] = module
        _replace_call(graph, node, owner, kind)
    for owner, module in lifted.items():
        _install(graph_module, owner, module)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    graph._tracer_cls = None  # export's tracer cannot re-trace the code when the model is unpickled
    graph._tracer_extras = {}
    plain = fx.GraphModule(graph_module, graph, class_name="LiftedProgram")
    return plain.eval()


# -- which aten calls become which modules ----------------------------------------------------------


def _conv(node: fx.Node, params: dict[str, torch.Tensor]) -> nn.Module | None:
    weight = params["weight"]
    spatial = weight.dim() - 2
    args = list(node.args) + [None] * 7
    stride, padding, dilation, groups = args[3], args[4], args[5], args[6]
    if node.target in _CONVOLUTION:  # aten.convolution: (x, w, b, stride, padding, dilation, transposed, out_pad, groups)
        if args[6]:
            return None
        groups = args[8]
    stride, dilation = _per_axis(stride, 1, spatial), _per_axis(dilation, 1, spatial)
    padding = padding if isinstance(padding, str) else _per_axis(padding, 0, spatial)
    groups = groups or 1
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(spatial)
    if cls is None:
        return None
    conv = cls(
        weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=tuple(stride),
        padding=padding if isinstance(padding, str) else tuple(padding), dilation=tuple(dilation),
        groups=groups, bias="bias" in params, device="meta",
    )  # fmt: skip
    return _with_params(conv, params)


def _linear(node: fx.Node, params: dict[str, torch.Tensor]) -> nn.Module | None:
    weight = params["weight"]
    if weight.dim() != 2:
        return None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in params, device="meta")
    return _with_params(linear, params)


def _batch_norm(node: fx.Node, params: dict[str, torch.Tensor]) -> nn.Module | None:
    if "running_mean" not in params or "running_var" not in params:
        return None
    rank = _rank(node.args[0])
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        return None
    if node.target is aten.batch_norm.default:  # (x, w, b, mean, var, training, momentum, eps, cudnn)
        momentum, eps = node.args[6], node.args[7]
    else:  # _native_batch_norm_legit_no_training: (x, w, b, mean, var, momentum, eps)
        momentum, eps = node.args[5], node.args[6]
    channels = params["running_mean"].shape[0]
    norm = cls(channels, eps=eps, momentum=momentum, affine="weight" in params, device="meta")
    return _with_params(norm, params)


def _layer_norm(node: fx.Node, params: dict[str, torch.Tensor]) -> nn.Module | None:
    shape = node.args[1]
    eps = node.args[4] if len(node.args) > 4 else 1e-5
    norm = nn.LayerNorm(list(shape), eps=eps, elementwise_affine=True, bias="bias" in params, device="meta")
    return _with_params(norm, params)


def _embedding(node: fx.Node, params: dict[str, torch.Tensor]) -> nn.Module | None:
    weight = params["weight"]
    padding_idx = node.args[2] if len(node.args) > 2 else -1
    if weight.dim() != 2 or any(node.args[3:]):  # scale_grad_by_freq / sparse
        return None
    embedding = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=None if padding_idx == -1 else padding_idx, device="meta")
    return _with_params(embedding, params)


_CONVOLUTION = {aten.convolution.default}
_CONV_ARGS = _LayerKind(1, {1: "weight", 2: "bias"}, _conv)
_KINDS: dict[object, _LayerKind] = {
    **{op: _CONV_ARGS for op in (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default)},
    **{op: _CONV_ARGS for op in (aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding)},
    aten.convolution.default: _CONV_ARGS,
    aten.linear.default: _LayerKind(1, {1: "weight", 2: "bias"}, _linear),
    aten.batch_norm.default: _LayerKind(
        1, {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"}, _batch_norm
    ),
    aten._native_batch_norm_legit_no_training.default: _LayerKind(
        1, {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"}, _batch_norm
    ),
    aten.layer_norm.default: _LayerKind(2, {2: "weight", 3: "bias"}, _layer_norm),
    aten.embedding.default: _LayerKind(0, {0: "weight"}, _embedding, input_arg=1),
}


# -- rewriting the graph ----------------------------------------------------------------------------


def _layer_params(node: fx.Node, kind: _LayerKind, attrs: dict[fx.Node, str], owner: str) -> dict[str, fx.Node] | None:
    """Parameter name -> get_attr node, if every parameter argument is an attribute of `owner` named as expected."""
    params: dict[str, fx.Node] = {}
    for position, name in kind.param_args.items():
        arg = node.args[position] if len(node.args) > position else None
        if arg is None:
            continue
        if arg not in attrs or attrs[arg] != (f"{owner}.{name}" if owner else name):
            return None
        params[name] = arg
    return params


def _owned_by(
    owner: str, params: dict[str, fx.Node], graph_module: fx.GraphModule, uses: dict[str, set], node: fx.Node
) -> bool:
    """True if `owner` holds only these parameters (plus BN's counter) and no other call reads them in another way."""
    if not owner:
        return False
    try:
        holder = graph_module.get_submodule(owner)
    except AttributeError:
        return False
    if any(True for _ in holder.children()):
        return False
    held = {n for n, _ in holder.named_parameters(recurse=False)} | {n for n, _ in holder.named_buffers(recurse=False)}
    if not held <= set(params) | {"num_batches_tracked"}:
        return False
    for name in params:
        readers = uses.get(f"{owner}.{name}", set())
        if any(reader.target is not node.target for reader in readers):
            return False  # the weight also feeds some other operation (tied weights, weight transforms)
    return True


def _plain_outputs(node: fx.Node) -> bool:
    """False for a batch norm whose saved statistics (outputs 1 and 2) are read by the graph."""
    if node.target is not aten._native_batch_norm_legit_no_training.default:
        return True
    return all(user.target is operator.getitem and user.args[1] == 0 for user in node.users)


def _parameter_uses(graph: fx.Graph) -> dict[str, set[fx.Node]]:
    """Attribute name -> the nodes that read it."""
    uses: dict[str, set[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            uses.setdefault(node.target, set()).update(node.users)
    return uses


def _replace_call(graph: fx.Graph, node: fx.Node, owner: str, kind: _LayerKind) -> None:
    """Put `call_module(owner, x)` in place of the aten call (and of `getitem(call, 0)` for batch norm)."""
    with graph.inserting_before(node):
        call = graph.call_module(owner, (node.args[kind.input_arg],))
    call.meta = dict(node.meta)
    if node.target is aten._native_batch_norm_legit_no_training.default:
        val = node.meta.get("val")
        call.meta["val"] = val[0] if isinstance(val, tuple) else val
        for user in list(node.users):
            user.replace_all_uses_with(call)
            graph.erase_node(user)
    node.replace_all_uses_with(call)
    graph.erase_node(node)


def _install(graph_module: fx.GraphModule, owner: str, module: nn.Module) -> None:
    """Register `module` at the dotted path `owner`, creating plain containers on the way."""
    parent_name, _, child = owner.rpartition(".")
    parent: nn.Module = graph_module
    for part in parent_name.split(".") if parent_name else []:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if child in parent._modules:
        del parent._modules[child]
    elif hasattr(parent, child):
        delattr(parent, child)
    parent.add_module(child, module)


def _drop_guards(graph_module: fx.GraphModule) -> None:
    """Remove the input-shape guard call `program.module()` adds: the lifted model is meant to be changed."""
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph_module.graph.erase_node(node)
    if hasattr(graph_module, "_guards_fn"):
        delattr(graph_module, "_guards_fn")


def _with_params(module: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """`module` (built on the meta device) holding `params` as its own parameters and buffers."""
    for name, value in params.items():
        if name in ("running_mean", "running_var"):
            module._buffers[name] = value
        else:
            module._parameters[name] = value if isinstance(value, nn.Parameter) else nn.Parameter(value, requires_grad=False)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
        module._buffers["num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return module


def _resolve(graph_module: fx.GraphModule, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    holder = graph_module.get_submodule(owner) if owner else graph_module
    return getattr(holder, name)


def _same_layer(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def _per_axis(value: object, default: int, spatial: int) -> list[int]:
    """A conv hyper-parameter as one value per spatial axis (aten allows a single value for all)."""
    if value is None:
        return [default] * spatial
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return values * spatial if len(values) == 1 else values


def _rank(node: object) -> int | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
