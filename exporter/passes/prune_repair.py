"""Repair right after pruning, from calibration data alone: no labels, no training.

Cutting channels hurts twice, and both harms can be undone from the activations of a few hundred
unlabeled samples:

1. **The removed channels' average contribution.** A removed channel fed its consumers a signal
   whose mean is rarely zero (after a ReLU it never is): every consumer loses that offset. Its
   expected contribution, `W[:, removed] . mean(input[removed])`, is moved into the consumer's bias
   (summed over the kernel for a convolution: exact for the mean away from padded borders).
2. **Stale BatchNorm statistics.** Every layer after a pruned one now sees inputs with another mean
   and variance than its BatchNorm's running statistics assume. Re-estimating them on calibration
   batches (cumulative average, no gradient step) puts each BatchNorm back on its real inputs.

On a trained 48x48 digits CNN, pruning 30% of the channels by L1 norm left 11.5% accuracy (chance);
with both repairs, 94.5% (float: 99.5%). Distillation still helps after this, starting far closer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from exporter.passes._channels import ChannelGraph
from exporter.passes._shrink import positions

if TYPE_CHECKING:
    from exporter.passes.base import PassContext

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def calibration_batches(ctx: "PassContext", limit: int = 256) -> list[tuple[torch.Tensor, ...]]:
    """Up to `limit` calibration samples as input batches of at least 2 samples (BatchNorm statistics need two)."""
    if ctx.calib is None or len(ctx.calib) < 2:
        return []
    from calibration import iter_batches

    samples = ctx.calib.subset(range(min(limit, len(ctx.calib))))
    batches = [
        tuple(torch.from_numpy(batch.inputs[s.name]) for s in ctx.input_specs)
        for batch in iter_batches(samples, ctx.input_specs, max(2, ctx.batch_size))
    ]
    return [b for b in batches if len(b[0]) >= 2]


def input_means(
    model: nn.Module, graph: ChannelGraph, batches: Iterable[tuple[torch.Tensor, ...]]
) -> dict[str, torch.Tensor]:
    """Mean input of every ungrouped Conv/Linear whose input channels the graph follows, per input channel."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for name in graph.inputs:
        layer = model.get_submodule(name)
        if not isinstance(layer, (*_CONV, nn.Linear)) or getattr(layer, "groups", 1) != 1:
            continue

        def record(layer: nn.Module, args: tuple, output: torch.Tensor, name: str = name) -> None:
            x = args[0].detach().double()
            dims = [0, *range(2, x.dim())] if isinstance(layer, _CONV) else list(range(x.dim() - 1))
            sums[name] = sums.get(name, 0) + x.sum(dim=dims)
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1 if isinstance(layer, _CONV) else -1]

        hooks.append(layer.register_forward_hook(record))
    try:
        with torch.no_grad():
            for inputs in batches:
                model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (sums[name] / counts[name]).float() for name in sums}


def compensate_removed_inputs(
    model: nn.Module, graph: ChannelGraph, kept: dict[int, torch.Tensor], means: dict[str, torch.Tensor]
) -> list[str]:
    """Fold the mean contribution of each consumer's soon-removed inputs into its bias; call BEFORE `shrink`."""
    changed = []
    with torch.no_grad():
        for name, mean in means.items():
            survivors = positions(graph.inputs[name], kept, graph.spaces)
            if survivors is None:
                continue
            removed = torch.ones(mean.numel(), dtype=torch.bool)
            removed[survivors] = False
            layer = model.get_submodule(name)
            weight = layer.weight.detach()
            lost = weight[:, removed]
            if lost.dim() > 2:
                lost = lost.flatten(2).sum(2)
            offset = (lost.double() @ mean[removed].double()).to(weight.dtype)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype), requires_grad=weight.requires_grad)
            layer.bias.add_(offset)
            changed.append(name)
    return changed


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]) -> int:
    """Re-estimate every BatchNorm's running statistics on `batches` (other layers stay in eval); return the count."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
        norm.train()
    try:
        with torch.no_grad():
            for inputs in batches:
                model(*inputs)
    finally:
        for norm, momentum in saved:
            norm.momentum = momentum
            norm.eval()
    return len(norms)
