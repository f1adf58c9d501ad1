"""BatchNorm folding: merge an inference-mode BatchNorm into the Conv or Linear that feeds it.

For y = gamma * (W x + b - mean) / sqrt(var + eps) + beta, the folded layer has
W' = W * s and b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), per output channel;
the BatchNorm becomes `nn.Identity`. The arithmetic is done in float64, so the model's outputs
agree with the original to float rounding. Pairs are found by tracing the model with torch.fx: a
BatchNorm is folded only if its input is the output of a Conv/Linear used by nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from exporter.modelstats import batch_one
from exporter.passes._graph import TraceFailure, call_counts, set_submodule, trace
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class FoldBNConfig(PassConfig):
    """`fold_bn` has no settings: every foldable BatchNorm is folded."""


@register_pass
class FoldBN(CompressionPass):
    """Fold every BatchNorm that directly follows a Conv/Linear into that layer."""

    name = "fold_bn"
    Config = FoldBNConfig
    order = 10
    shorthand = None
    summary_line = "BatchNorm folded into the preceding conv/linear (exact)"

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Find Conv/Linear -> BatchNorm pairs in the traced graph and fold each one."""
        try:
            graph_module = trace(model, batch_one(ctx.example_inputs))
        except TraceFailure as exc:
            reason = f"{exc}; no BatchNorm was folded"
            return PassResult(model, skipped=[{"layer": "<model>", "reason": reason}], notes=[reason])
        modules = dict(model.named_modules())
        calls = call_counts(graph_module.graph)
        changes, skipped = [], []
        for node in graph_module.graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), _NORM):
                continue
            reason = _unfoldable(node, modules, calls)
            if reason:
                skipped.append({"layer": node.target, "reason": reason})
                continue
            layer_name = node.args[0].target
            fold(modules[layer_name], modules[node.target])
            set_submodule(model, node.target, nn.Identity())
            changes.append({"layer": node.target, "folded_into": layer_name})
        if graph_module is model:  # the lifted program: drop the folded calls from its graph
            for node in list(graph_module.graph.nodes):
                if node.op == "call_module" and isinstance(model.get_submodule(node.target), nn.Identity):
                    node.replace_all_uses_with(node.args[0])
                    graph_module.graph.erase_node(node)
            graph_module.delete_all_unused_submodules()
            graph_module.recompile()
        return PassResult(model, changes=changes, skipped=skipped, summary={"folded": len(changes)})


def _unfoldable(node: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]) -> str | None:
    """Why the BatchNorm at `node` cannot be folded, or None if it can."""
    norm = modules[node.target]
    source = node.args[0] if node.args else None
    if not norm.track_running_stats or norm.running_mean is None:
        return "it has no running statistics (track_running_stats=False)"
    if calls[node.target] > 1:
        return "it is called more than once"
    if not isinstance(source, fx.Node) or source.op != "call_module":
        return "its input is not the output of a Conv/Linear layer"
    layer = modules[source.target]
    if not isinstance(layer, (*_CONV, nn.Linear)):
        return f"its input comes from {type(layer).__name__} '{source.target}', not a Conv/Linear"
    if isinstance(layer, nn.Linear) and len(source.meta.get("tensor_meta").shape) != 2:
        return f"Linear '{source.target}' feeds it a tensor of rank other than 2"
    if len(source.users) > 1:
        return f"the output of '{source.target}' is also used elsewhere"
    if calls[source.target] > 1:
        return f"'{source.target}' is called more than once (shared weights)"
    return None


def fold(layer: nn.Module, norm: nn.Module) -> None:
    """Fold the inference-mode BatchNorm `norm` into `layer` (Conv or Linear) in place."""
    with torch.no_grad():
        dtype = layer.weight.dtype
        scale = norm.running_var.double().add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
        new_bias = (bias - norm.running_mean.double()) * scale
        if norm.bias is not None:
            new_bias = new_bias + norm.bias.double()
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.copy_((layer.weight.double() * scale.reshape(shape)).to(dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(dtype))
        else:
            layer.bias.copy_(new_bias.to(dtype))
