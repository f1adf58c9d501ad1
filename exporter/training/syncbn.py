"""Batch statistics shared by every process of a distributed run, on any device (gloo included).

PyTorch's `nn.SyncBatchNorm` refuses CPU tensors, and without it each process would normalise
with the statistics of its own shard, so N processes would not train the same student as one
process on the same global batch. `SharedBatchNorm` computes each channel's sum and sum of
squares (in float64) over the local shard, adds them over all processes with the differentiable
`torch.distributed.nn.functional.all_reduce`, and normalises with the global mean and biased
variance; running statistics get the unbiased variance, as in `nn.BatchNorm*`. In eval mode, or
outside a process group, it is plain batch norm.

`share_batch_statistics` switches the class of every BatchNorm layer in place (same parameters,
buffers and optimizer state) and returns an undo function that restores the original classes.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn


class SharedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the union of every process's batch (any input rank >= 2, channels on axis 1)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (batch, channels, ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.double()
        local_count = torch.full((1,), input.numel() / channels, dtype=torch.float64, device=input.device)
        local = torch.cat([x.sum(dims), (x * x).sum(dims), local_count])
        total = all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels : 2 * channels] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = ((x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)).to(input.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def share_batch_statistics(model: nn.Module) -> Callable[[], None]:
    """Make every `BatchNorm1d/2d/3d` of `model` a `SharedBatchNorm`; return the function that undoes it."""
    swapped: list[tuple[nn.Module, type]] = []
    for module in model.modules():
        shared = isinstance(module, (SharedBatchNorm, nn.SyncBatchNorm))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not shared:
            swapped.append((module, type(module)))
            module.__class__ = SharedBatchNorm

    def undo() -> None:
        for module, cls in swapped:
            module.__class__ = cls

    return undo
