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


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """`adam`, `adamw` or `sgd` (momentum 0.9, Nesterov) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CompressionError("the student has no trainable parameters (every parameter has requires_grad=False)")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise CompressionError(f"unknown optimizer {name!r}: expected adam, adamw or sgd")


def lr_factor(schedule: str, progress: float) -> float:
    """The learning-rate multiplier at `progress` (clipped to [0, 1]) for `schedule`."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise CompressionError(f"unknown schedule {schedule!r}: expected cosine or constant")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
