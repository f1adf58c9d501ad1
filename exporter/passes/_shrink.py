"""Cut channels out of a model's layers in place, given the kept indices of each channel group.

Each layer loses rows of its weight (output channels: Conv/Linear producers, BatchNorm, depthwise
convs) and columns (input channels: Conv/Linear consumers) according to the layouts found by
`_channels.analyze`. Grouped convs keep their group count: each group keeps its own input columns.
The result is the same module classes with smaller tensors and updated size attributes; in an
editable graph (the lifted program), hard-coded reshape sizes that count pruned channels are updated.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from exporter.passes._channels import ChannelGraph, Layout, Spaces

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def positions(layout: Layout, kept: dict[int, torch.Tensor], spaces: Spaces) -> torch.Tensor | None:
    """Indices along the layout's dimension that survive, or None if nothing in it is pruned."""
    parts, offset, changed = [], 0, False
    for seg in layout.segments:
        span = seg.length * seg.inner
        idx = kept.get(spaces.find(seg.space)) if seg.space is not None else None
        if idx is None:
            parts.append(torch.arange(offset, offset + span))
        else:
            changed = True
            parts.append((offset + idx[:, None] * seg.inner + torch.arange(seg.inner)).flatten())
        offset += span
    return torch.cat(parts) if changed else None


def shrink(model: nn.Module, graph: ChannelGraph, kept: dict[int, torch.Tensor]) -> list[dict[str, Any]]:
    """Remove the pruned channels from every layer `graph` maps; return one change row per layer changed."""
    spaces = graph.spaces
    changes = []
    for name in sorted({*graph.producers, *graph.outputs, *graph.inputs}, key=_module_order(model)):
        out_idx = None
        if name in graph.producers:
            out_idx = kept.get(spaces.find(graph.producers[name]))
        elif name in graph.outputs:
            out_idx = positions(graph.outputs[name], kept, spaces)
        in_idx = positions(graph.inputs[name], kept, spaces) if name in graph.inputs else None
        if out_idx is None and in_idx is None:
            continue
        module = model.get_submodule(name)
        before = _sizes(module)
        _cut(module, out_idx, in_idx)
        after = _sizes(module)
        row: dict[str, Any] = {"layer": name, "type": type(module).__name__}
        row.update({key: [before[key], after[key]] for key in before if before[key] != after[key]})
        changes.append(row)
    _resize_reshapes(model, graph, kept)
    return changes


def _resize_reshapes(model: nn.Module, graph: ChannelGraph, kept: dict[int, torch.Tensor]) -> None:
    """Write the new channel counts into the hard-coded sizes of the graph's reshapes."""
    edited = False
    for reshape in graph.sized_reshapes:
        survivors = positions(reshape.layout, kept, graph.spaces)
        if survivors is None:
            continue
        source, sizes = reshape.node.args
        sizes = list(sizes)
        sizes[reshape.position] = len(survivors)
        reshape.node.args = (source, sizes)
        edited = True
    if edited:
        model.recompile()


def _cut(module: nn.Module, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        assert in_idx is None and out_idx is not None
        for attr in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(module, attr)
            if tensor is not None:
                _replace(module, attr, tensor.data[out_idx])
        module.num_features = len(out_idx)
        return
    weight = module.weight.data
    if out_idx is not None:
        weight = weight[out_idx]
        if module.bias is not None:
            _replace(module, "bias", module.bias.data[out_idx])
    if isinstance(module, nn.Linear):
        if in_idx is not None:
            weight = weight[:, in_idx]
        _replace(module, "weight", weight)
        module.out_features, module.in_features = weight.shape
        return
    assert isinstance(module, _CONV)
    depthwise = module.groups == module.in_channels and module.groups > 1
    if depthwise:
        new_in = module.in_channels if in_idx is None else len(in_idx)
        module.in_channels = module.groups = new_in
    elif in_idx is not None:
        weight = _cut_inputs(weight, in_idx, module.groups, module.in_channels)
        module.in_channels = weight.shape[1] * module.groups
    _replace(module, "weight", weight)
    module.out_channels = weight.shape[0]


def _cut_inputs(weight: torch.Tensor, in_idx: torch.Tensor, groups: int, in_channels: int) -> torch.Tensor:
    """Keep input columns `in_idx` (global indices); in a grouped conv each group keeps its own."""
    if groups == 1:
        return weight[:, in_idx]
    old_per_group, new_per_group = in_channels // groups, len(in_idx) // groups
    out_per_group = weight.shape[0] // groups
    parts = []
    for g in range(groups):
        local = in_idx[g * new_per_group : (g + 1) * new_per_group] - g * old_per_group
        assert bool(((local >= 0) & (local < old_per_group)).all()), "grouped input cut must stay within groups"
        parts.append(weight[g * out_per_group : (g + 1) * out_per_group][:, local])
    return torch.cat(parts)


def _replace(module: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        setattr(module, attr, value.clone())


def _sizes(module: nn.Module) -> dict[str, int]:
    if isinstance(module, nn.Linear):
        return {"out_features": module.out_features, "in_features": module.in_features}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {"num_features": module.num_features}
    return {"out_channels": module.out_channels, "in_channels": module.in_channels, "groups": module.groups}


def _module_order(model: nn.Module) -> Any:
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return lambda name: order.get(name, len(order))
