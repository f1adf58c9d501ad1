"""Which of the original model's channels each pruned layer kept (pass lineage).

Pruning keeps a subset of every cut layer's output channels. Recording which ones lets later
passes relate the student to the original: distillation matches a pruned layer's output to the
teacher's same-named layer restricted to the kept channels. Rules:
- the record lives in `model.meta["kept_channels"]` when the model is an `fx.GraphModule` (the
  lifted program; `meta` survives deep copies), else in a plain dict attribute of the module;
- indices always refer to the ORIGINAL layer's channels: pruning a layer again composes with the
  earlier record (`new = earlier[kept]`);
- a layer never cut has no record (all its channels are the original ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from torch import fx, nn

if TYPE_CHECKING:
    import torch

    from exporter.passes._channels import ChannelGraph

META_KEY = "kept_channels"
ATTRIBUTE = "_kept_channels"


def record_kept_channels(model: nn.Module, layer_name: str, kept_indices: Iterable[int]) -> None:
    """Record that `layer_name` now keeps `kept_indices` of its current output channels (composed with earlier cuts)."""
    store = _store(model)
    kept = [int(i) for i in kept_indices]
    earlier = store.get(layer_name)
    store[layer_name] = [earlier[i] for i in kept] if earlier is not None else kept


def kept_channels(model: nn.Module) -> dict[str, list[int]]:
    """Layer name -> the original output channels it keeps, for every layer pruning cut (a copy)."""
    if isinstance(model, fx.GraphModule):
        found = getattr(model, "meta", {}).get(META_KEY, {})
    else:
        found = model.__dict__.get(ATTRIBUTE, {})
    return {name: list(kept) for name, kept in found.items()}


def record_pruned_outputs(model: nn.Module, graph: "ChannelGraph", kept: "dict[int, torch.Tensor]") -> None:
    """Record the kept output channels of every layer `_shrink.shrink` cut with `kept` (call it after the cut)."""
    from exporter.passes._shrink import positions

    spaces = graph.spaces
    for name in {*graph.producers, *graph.outputs}:
        if name in graph.producers:
            out_idx = kept.get(spaces.find(graph.producers[name]))
        else:
            out_idx = positions(graph.outputs[name], kept, spaces)
        if out_idx is not None:
            record_kept_channels(model, name, out_idx.tolist())


def _store(model: nn.Module) -> dict[str, list[int]]:
    if isinstance(model, fx.GraphModule):
        if not hasattr(model, "meta"):
            model.meta = {}
        return model.meta.setdefault(META_KEY, {})
    if ATTRIBUTE not in model.__dict__:
        model.__dict__[ATTRIBUTE] = {}
    return model.__dict__[ATTRIBUTE]
