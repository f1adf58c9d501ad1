"""Whole residual branches that a speed goal may remove: `y = x + f(x)` becomes `y = x + mean(f(x))`.

On small inputs at batch 1 a pruned mobile network is dominated by the fixed cost of each operator
(onnxruntime spends 4-7 us on a quantized conv of a 3x3 or 6x6 map, whatever its width): thinning
channels further buys little, while removing a whole block removes its operators. A residual
block is the one place where that is safe without retraining the rest: its branch `f` only adds
to the skip `x`, so replacing `f(x)` by its per-channel mean over calibration samples (the best
constant in the squared-error sense) keeps the model's shapes and leaves the skip path intact.
This is depth pruning in the sense of DepthShrinker and of layer dropping in transformers;
the speed goal weighs it, per unit of output error, against thinning channels.

A branch here is the set of nodes that feed one input of an addition and nothing else, holding at
least one Conv or Linear, while the other input (the skip) does not depend on any of them.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import fx, nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_ADDS = {"add", "add_", "iadd"}


@dataclass(frozen=True)
class ResidualBranch:
    """The branch `f` of one `x + f(x)`: the addition node, the branch's output node, and the layers inside."""

    add: str
    branch_output: str
    layers: tuple[str, ...]
    """Module names of the Conv/Linear layers the branch calls (removed with it)."""

    @property
    def label(self) -> str:
        """A name for the report: the common prefix of its layers' names (`features.5.conv`)."""
        parts = [name.split(".") for name in self.layers]
        common = []
        for pieces in zip(*parts):
            if len(set(pieces)) > 1:
                break
            common.append(pieces[0])
        return ".".join(common) or self.layers[0]


def _is_add(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    target = getattr(node.target, "__name__", str(node.target))
    return target.split(".")[0] in _ADDS


def _ancestors(node: fx.Node, stop: fx.Node | None = None) -> set[fx.Node]:
    """`node` and every node it depends on, not looking past `stop`."""
    seen: set[fx.Node] = set()
    todo = [node]
    while todo:
        current = todo.pop()
        if current in seen or current is stop:
            continue
        seen.add(current)
        todo.extend(current.all_input_nodes)
    return seen


def find_branches(model: fx.GraphModule) -> list[ResidualBranch]:
    """Every residual branch of the graph module that could be replaced by its mean, in graph order."""
    modules = dict(model.named_modules())
    found = []
    for add in model.graph.nodes:
        if not _is_add(add) or len(add.args) < 2:
            continue
        inputs = [a for a in add.args[:2] if isinstance(a, fx.Node)]
        if len(inputs) != 2:
            continue
        for skip, output in (inputs, inputs[::-1]):
            skip_side = _ancestors(skip)
            branch = {n for n in _ancestors(output, stop=skip) - skip_side if n.op != "get_attr"}
            if not branch or skip not in _ancestors(output) or output in skip_side:
                continue
            if any(n.op in ("placeholder", "output") for n in branch):
                continue
            if any(user not in branch and user is not add for n in branch for user in n.users):
                continue
            layers = tuple(
                str(n.target) for n in model.graph.nodes
                if n in branch and n.op == "call_module" and isinstance(modules.get(str(n.target)), _LAYERS)
            )  # fmt: skip
            if layers:
                found.append(ResidualBranch(add.name, output.name, layers))
                break
    return found


def _channel_mean(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Mean over every axis but the channel axis (axis 1 for convolutions, the last for linear layers), kept."""
    axis = tensor.dim() - 1 if channels_last else 1
    dims = [d for d in range(tensor.dim()) if d != axis]
    return tensor.mean(dim=dims, keepdim=True) if dims else tensor


def branch_means(
    model: fx.GraphModule, branches: list[ResidualBranch], batches: Iterable[tuple[torch.Tensor, ...]]
) -> dict[str, torch.Tensor]:
    """Each branch's mean output per channel over the batches (keyed by the branch's addition node)."""
    wanted = {b.branch_output: b for b in branches}
    modules = dict(model.named_modules())
    channels_last = {b.add: isinstance(modules[b.layers[-1]], nn.Linear) for b in branches}
    sums: dict[str, torch.Tensor] = {}
    count = 0

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> object:
            result = super().run_node(node)
            branch = wanted.get(node.name)
            if branch is not None and isinstance(result, torch.Tensor):
                mean = _channel_mean(result.detach().double(), channels_last[branch.add]) * len(result)
                sums[branch.add] = sums.get(branch.add, 0) + mean
            return result

    with torch.no_grad():
        for batch in batches:
            Recorder(model).run(*batch)
            count += len(batch[0])
    return {name: (total / max(count, 1)).float() for name, total in sums.items()}


def remove_branches(model: fx.GraphModule, branches: list[ResidualBranch], means: dict[str, torch.Tensor]) -> None:
    """Replace each branch by its mean, then drop the nodes and modules left unused.

    The mean goes into the bias of the layer that produces the skip where that is exact (`_fold`), which
    removes the addition as well; otherwise it stays a buffer added to the skip.
    """
    nodes = {node.name: node for node in model.graph.nodes}
    added = []
    for branch in branches:
        add, output = nodes[branch.add], nodes[branch.branch_output]
        buffer = f"{branch.add}_branch_mean"
        model.register_buffer(buffer, means[branch.add].clone())
        with model.graph.inserting_before(add):
            constant = model.graph.get_attr(buffer)
        add.replace_input_with(output, constant)
        added.append((add, constant))
    model.graph.eliminate_dead_code()  # the branches go: the skips lose those users
    calls = Counter(str(n.target) for n in model.graph.nodes if n.op == "call_module")
    for add, constant in added:
        # the skip as it is now: an earlier fold may have replaced the addition it was
        (skip,) = [a for a in add.args[:2] if a is not constant]
        if _fold(model, skip, add, getattr(model, str(constant.target)), calls):
            add.replace_all_uses_with(skip)
            model.graph.erase_node(add)
            model.graph.erase_node(constant)
            delattr(model, str(constant.target))
    model.graph.eliminate_dead_code()
    model.recompile()
    model.delete_all_unused_submodules()


def _fold(model: fx.GraphModule, node: fx.Node, user: fx.Node, constant: torch.Tensor, calls: Counter) -> bool:
    """Add `constant` (one value per channel) to the output of `node`, whose only user is `user`, by changing a bias.

    `node` may be a layer with a bias (or a BatchNorm, LayerNorm) called once, whose bias takes it;
    an addition, whose inputs are tried in turn (`a + b + c == a + (b + c)`); or a constant buffer, which
    takes it. Anything else, or a node read elsewhere, is left alone (returns False).
    """
    if list(node.users) != [user]:
        return False
    if node.op == "call_module" and calls[str(node.target)] == 1:
        module = model.get_submodule(str(node.target))
        if isinstance(module, (*_LAYERS, nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            bias = getattr(module, "bias", None)
            size = module.weight.shape[0] if bias is None and isinstance(module, _LAYERS) else None
            if bias is None and size is None:
                return False
            if constant.numel() != (bias.numel() if bias is not None else size):
                return False
            with torch.no_grad():
                if bias is None:
                    module.bias = nn.Parameter(constant.flatten().to(module.weight.dtype).clone())
                else:
                    bias.add_(constant.flatten().to(bias.dtype))
            return True
        return False
    if node.op == "get_attr":
        held = getattr(model, str(node.target))
        if not isinstance(held, torch.Tensor) or held.shape != constant.shape:
            return False
        with torch.no_grad():
            held.add_(constant)
        return True
    if _is_add(node) and len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1:
        return any(isinstance(a, fx.Node) and _fold(model, a, node, constant, calls) for a in node.args[:2][::-1])
    return False


def remove_in_order(
    model: fx.GraphModule, branches: list[ResidualBranch], batches: list[tuple[torch.Tensor, ...]]
) -> None:
    """Replace the branches by their means over `batches`, in graph order, each measured with the earlier ones gone."""
    for branch in branches:
        remove_branches(model, [branch], branch_means(model, [branch], batches))


def without_branch(model: fx.GraphModule, branch: ResidualBranch, inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A copy of `model` with only `branch` replaced by its mean output on `inputs`."""
    trial = copy.deepcopy(model)
    remove_in_order(trial, [branch], [inputs])
    return trial
