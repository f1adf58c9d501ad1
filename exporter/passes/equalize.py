"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) for conv -> (ReLU) -> conv pairs.

For a layer A whose output channel i feeds only layer B (directly, or through a BatchNorm and a
positively homogeneous activation: ReLU, LeakyReLU, Identity), scaling A's channel i by 1/s_i and
B's input channel i by s_i leaves the model's function unchanged, because relu(x / s) = relu(x) / s
for s > 0. With r1_i the largest |weight| of A's output channel i (BatchNorm scale included) and
r2_i the largest |weight| of B reading input channel i, s_i = sqrt(r1_i / r2_i) gives both the same
range. That evens out the per-channel ranges of B's weights and of the activation between A and B,
which per-tensor int8 activations (and per-tensor weights) need most: depthwise-separable blocks,
whose depthwise channels have wildly different ranges after BatchNorm folding, gain the most.
Pairs are equalized in rounds until the scales settle (a chain A -> B -> C couples its pairs).

Where a BatchNorm sits between A and its activation, its affine weight and bias carry the scaling
(A's weights stay as they are); run after `fold_bn` (order 10) and the BatchNorm is already gone.
ReLU6 is not scale-equivariant: such pairs are skipped unless `relu6 = "replace"`, which swaps the
ReLU6 for a ReLU as AIMET does (outputs then differ wherever an activation exceeded 6).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from exporter.errors import PlanError
from exporter.modelstats import batch_one
from exporter.passes._graph import TraceFailure, call_counts, set_submodule, trace
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = nn.modules.batchnorm._BatchNorm
_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
_aten = torch.ops.aten
_HOMOGENEOUS_FUNCTIONS = {
    torch.relu, F.relu, torch.nn.functional.leaky_relu,
    _aten.relu.default, _aten.relu_.default, _aten.leaky_relu.default, _aten.leaky_relu_.default, _aten.dropout.default,
}  # fmt: skip
_HARDTANH = (_aten.hardtanh.default, _aten.hardtanh_.default)
_IDENTITY_CALLS = (_aten.clone.default, _aten.alias.default)


@dataclass(frozen=True)
class EqualizeConfig(PassConfig):
    """Settings of cross-layer equalization."""

    rounds: int = setting(20, "at most this many sweeps over all pairs (stops earlier once scales settle)")
    tolerance: float = setting(1e-3, "stop when no scale moves by more than this fraction in a sweep")
    max_scale: float = setting(1e4, "clip each channel scale to [1/max_scale, max_scale] (dead channels)")
    relu6: Literal["skip", "replace"] = setting(
        "skip", "pairs joined by ReLU6: skip them, or replace the ReLU6 by ReLU (changes outputs above 6)"
    )

    def validate(self) -> None:
        if self.rounds < 1:
            raise PlanError(f"equalize.rounds must be at least 1, got {self.rounds}")
        if not 0 < self.tolerance < 1:
            raise PlanError(f"equalize.tolerance must be in (0, 1), got {self.tolerance}")
        if self.max_scale <= 1:
            raise PlanError(f"equalize.max_scale must be greater than 1, got {self.max_scale}")


@dataclass
class _Pair:
    """A -> [BatchNorm] -> [activation] -> B, with everything needed to rescale it."""

    first: str
    second: str
    norm: str | None
    activation: str | None
    replace_relu6: str | None = None
    relu6_is_node: bool = False  # `replace_relu6` names an aten call in the model's own graph, not a module


@register_pass
class Equalize(CompressionPass):
    """Cross-layer equalization of conv/linear pairs joined by a scale-equivariant activation."""

    name = "equalize"
    Config = EqualizeConfig
    order = 12
    shorthand = None
    summary_line = "cross-layer equalization of conv/linear pairs (function unchanged)"

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Find the pairs in the traced graph, then equalize them in rounds; record each pair's ranges."""
        config: EqualizeConfig = self.config  # type: ignore[assignment]
        try:
            graph_module = trace(model, batch_one(ctx.example_inputs))
        except TraceFailure as exc:
            reason = f"{exc}; nothing was equalized"
            return PassResult(model, skipped=[{"layer": "<model>", "reason": reason}], notes=[reason])
        modules = dict(model.named_modules())
        calls = call_counts(graph_module.graph)
        editable = graph_module is model
        pairs, skipped = find_pairs(graph_module.graph, modules, calls, config.relu6, editable)
        for pair in pairs:
            if pair.replace_relu6 and pair.relu6_is_node:
                _relu6_to_relu(graph_module.graph, pair.replace_relu6)
            elif pair.replace_relu6:
                set_submodule(model, pair.replace_relu6, nn.ReLU())
        if any(p.relu6_is_node for p in pairs):
            graph_module.recompile()
        modules = dict(model.named_modules())
        before = {(p.first, p.second): _spread(modules, p) for p in pairs}
        sweeps = 0
        for sweeps in range(1, config.rounds + 1):
            moved = max((equalize_pair(modules, p, config.max_scale) for p in pairs), default=0.0)
            if moved < config.tolerance:
                break
        changes = []
        for pair in pairs:
            spread_before, spread_after = before[(pair.first, pair.second)], _spread(modules, pair)
            change = {
                "layer": pair.first,
                "next": pair.second,
                "through": [n for n in (pair.norm, pair.activation) if n],
                "channel_range_spread": [round(spread_before, 3), round(spread_after, 3)],
            }
            if pair.replace_relu6:
                change["relu6_replaced"] = pair.replace_relu6
            changes.append(change)
        notes = [f"{len(pairs)} pair(s) equalized in {sweeps} sweep(s)"] if pairs else ["no equalizable pair found"]
        if any(p.replace_relu6 for p in pairs):
            notes.append("ReLU6 replaced by ReLU in equalized pairs: outputs differ where activations exceeded 6")
        return PassResult(model, changes=changes, skipped=skipped, notes=notes, summary={"pairs": len(pairs), "sweeps": sweeps})


def find_pairs(
    graph: fx.Graph, modules: dict[str, nn.Module], calls: dict[str, int], relu6: str = "skip", editable: bool = False
) -> tuple[list[_Pair], list[dict]]:
    """Every A -> [BatchNorm] -> [activation] -> B chain that can be equalized, and why others cannot.

    `editable`: `graph` is the model's own (a lifted program), so an aten ReLU6 in it can be replaced.
    """
    pairs, skipped = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), (*_CONV, nn.Linear)):
            continue
        first = modules[node.target]
        if calls[node.target] > 1:
            continue
        norm = activation = replace = None
        relu6_node = False
        current, reason = node, None
        while True:
            users = list(current.users)
            if len(users) != 1:
                reason = "its output is used by more than one layer" if users else None
                break
            user = users[0]
            target = modules.get(user.target) if user.op == "call_module" else None
            if target is not None and isinstance(target, (*_CONV, nn.Linear)):
                reason = _pair_problem(node.target, first, user.target, target, calls, norm, modules)
                if reason is None:
                    pairs.append(_Pair(node.target, user.target, norm, activation, replace, relu6_node))
                break
            if isinstance(target, nn.Identity) or (user.op == "call_function" and user.target in _IDENTITY_CALLS):
                current = user  # a folded BatchNorm or a no-op: look through it
                continue
            if target is not None and isinstance(target, _NORM) and norm is None and activation is None:
                if target.affine and target.track_running_stats and calls[user.target] == 1:
                    norm, current = user.target, user
                    continue
                reason = f"BatchNorm '{user.target}' without affine parameters or running statistics"
                break
            if activation is None and _is_homogeneous(user, target):
                activation, current = (user.target if user.op == "call_module" else user.name), user
                continue
            relu6_call = _is_relu6_call(user)
            if activation is None and (isinstance(target, nn.ReLU6) or relu6_call):
                label = user.target if target is not None else user.name
                if relu6 == "replace" and (target is not None or editable):
                    activation = replace = label
                    relu6_node = relu6_call
                    current = user
                    continue
                reason = f"ReLU6 '{label}' is not scale-equivariant (relu6='replace' swaps it for ReLU)"
                break
            break  # anything else (flatten, add, pooling, ...) ends the chain silently
        if reason:
            skipped.append({"layer": node.target, "reason": reason})
    return pairs, skipped


def equalize_pair(modules: dict[str, nn.Module], pair: _Pair, max_scale: float) -> float:
    """Rescale one pair in place; return the largest relative scale change (0 when already equal)."""
    first, second = modules[pair.first], modules[pair.second]
    with torch.no_grad():
        r1 = _output_ranges(first, modules.get(pair.norm) if pair.norm else None)
        r2 = _input_ranges(second)
        scale = torch.ones_like(r1)
        usable = (r1 > 0) & (r2 > 0)
        scale[usable] = torch.sqrt(r1[usable] / r2[usable])
        scale = scale.clamp(1.0 / max_scale, max_scale)
        if pair.norm:
            norm = modules[pair.norm]
            norm.weight.copy_((norm.weight.double() / scale).to(norm.weight.dtype))
            norm.bias.copy_((norm.bias.double() / scale).to(norm.bias.dtype))
        else:
            shape = (-1,) + (1,) * (first.weight.dim() - 1)
            first.weight.copy_((first.weight.double() / scale.reshape(shape)).to(first.weight.dtype))
            if first.bias is not None:
                first.bias.copy_((first.bias.double() / scale).to(first.bias.dtype))
        _scale_inputs(second, scale)
    return float((scale - 1).abs().max()) if scale.numel() else 0.0


def _pair_problem(first_name, first, second_name, second, calls, norm, modules) -> str | None:
    if calls[second_name] > 1:
        return f"'{second_name}' is called more than once (shared weights)"
    if isinstance(first, nn.Linear) != isinstance(second, nn.Linear):
        return f"'{first_name}' and '{second_name}' mix Conv and Linear"
    out_channels = first.out_features if isinstance(first, nn.Linear) else first.out_channels
    in_channels = second.in_features if isinstance(second, nn.Linear) else second.in_channels
    if out_channels != in_channels:
        return f"'{first_name}' has {out_channels} output channels but '{second_name}' reads {in_channels}"
    if norm is not None and modules[norm].num_features != out_channels:
        return f"BatchNorm '{norm}' does not match '{first_name}'"
    return None


def _is_homogeneous(node: fx.Node, target: nn.Module | None) -> bool:
    if target is not None:
        return isinstance(target, _HOMOGENEOUS) and not isinstance(target, nn.ReLU6)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCTIONS or node.target in (operator.pos,)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_relu6_call(node: fx.Node) -> bool:
    """True for an aten hardtanh(x, 0, 6) call: ReLU6 as torch.export writes it."""
    return node.op == "call_function" and node.target in _HARDTANH and tuple(node.args[1:3]) == (0.0, 6.0)


def _relu6_to_relu(graph: fx.Graph, name: str) -> None:
    """Turn the aten ReLU6 call called `name` into a ReLU."""
    node = next(n for n in graph.nodes if n.name == name)
    node.target, node.args, node.kwargs = _aten.relu.default, (node.args[0],), {}


def _output_ranges(layer: nn.Module, norm: nn.Module | None) -> torch.Tensor:
    """max |weight| per output channel, times the BatchNorm's |gamma| / sqrt(var + eps) when present."""
    weight = layer.weight.double()
    ranges = weight.abs().reshape(weight.shape[0], -1).amax(dim=1)
    if norm is not None:
        ranges = ranges * (norm.weight.double().abs() / (norm.running_var.double() + norm.eps).sqrt())
    return ranges


def _input_ranges(layer: nn.Module) -> torch.Tensor:
    """max |weight| over everything that reads each input channel (groups handled)."""
    weight = layer.weight.double().abs()
    if isinstance(layer, nn.Linear):
        return weight.amax(dim=0)
    groups = layer.groups
    per_group_in = weight.shape[1]
    out_per_group = weight.shape[0] // groups
    ranges = torch.empty(per_group_in * groups, dtype=weight.dtype)
    for group in range(groups):
        block = weight[group * out_per_group : (group + 1) * out_per_group]
        ranges[group * per_group_in : (group + 1) * per_group_in] = block.transpose(0, 1).reshape(per_group_in, -1).amax(dim=1)
    return ranges


def _scale_inputs(layer: nn.Module, scale: torch.Tensor) -> None:
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        weight.copy_((weight.double() * scale.reshape(1, -1)).to(weight.dtype))
        return
    groups, per_group_in = layer.groups, weight.shape[1]
    out_per_group = weight.shape[0] // groups
    new = weight.double().clone()
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        factors = scale[group * per_group_in : (group + 1) * per_group_in]
        new[rows] = new[rows] * factors.reshape((1, -1) + (1,) * (weight.dim() - 2))
    weight.copy_(new.to(weight.dtype))


def _spread(modules: dict[str, nn.Module], pair: _Pair) -> float:
    """Largest over smallest non-zero per-channel weight range of the pair (1 = perfectly even)."""
    with torch.no_grad():
        ranges = torch.cat([_output_ranges(modules[pair.first], modules.get(pair.norm) if pair.norm else None), _input_ranges(modules[pair.second])])
    ranges = ranges[ranges > 0]
    return float(ranges.max() / ranges.min()) if ranges.numel() else 1.0
