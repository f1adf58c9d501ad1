"""Optimizer and learning-rate schedule of a training run.

Schedules are a factor on the base learning rate as a function of progress `p` in [0, 1]:
`constant` is 1; `cosine` is `0.5 * (1 + cos(pi * p))`. Progress is the larger of the fraction of
planned steps done and the fraction of the time budget spent, so a run stopped by `minutes` still
ends with a small learning rate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from exporter.errors import CompressionError


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, scale_lr: float | None = None
) -> torch.optim.Optimizer:
    """`adam`, `adamw` or `sgd` (momentum 0.9, Nesterov) over the model's trainable parameters.

    With `scale_lr`, the scales of normalisation layers form a second parameter group with that
    learning rate (`slim` moves them far within a short run); each group remembers its peak rate
    as `base_lr` for the schedule.
    """
    from exporter.training.losses import scale_layers

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CompressionError("the student has no trainable parameters (every parameter has requires_grad=False)")
    scales = {id(m.weight) for _, m in scale_layers(model) if m.weight.requires_grad} if scale_lr is not None else set()
    groups = [{"params": [p for p in params if id(p) not in scales], "lr": lr}]
    if scales:
        groups.append({"params": [p for p in params if id(p) in scales], "lr": scale_lr})
    groups = [g for g in groups if g["params"]]
    if name == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    else:
        raise CompressionError(f"unknown optimizer {name!r}: expected adam, adamw or sgd")
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def lr_factor(schedule: str, progress: float) -> float:
    """The learning-rate multiplier at `progress` (clipped to [0, 1]) for `schedule`."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise CompressionError(f"unknown schedule {schedule!r}: expected cosine or constant")


def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every parameter group's learning rate to its peak rate times `factor`."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
