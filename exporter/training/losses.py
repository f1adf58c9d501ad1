"""What the student is trained to minimise: distillation losses per sample, and the L1 scale penalty.

Loss kinds, per model output:
- `kl`: Hinton's soft targets, `T^2 * KL(softmax(teacher/T) || softmax(student/T))` over the class
  axis (axis 1), plus cross-entropy with the labels weighted `1 - alpha` when the data has labels
  (the first output only); without labels the soft term alone is used.
- `mse`: mean squared difference to the teacher's output (regression, feature maps).
- `cosine`: `1 - cos(student, teacher)` per sample on the flattened output (embeddings).
`auto` picks `kl` for a 2-D output with more than one column (class logits) and `mse` otherwise;
embeddings look like logits to this rule, so ask for `cosine` or `mse` explicitly for them.
Every function returns one loss per sample, so a step's loss is their sum over the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from exporter.errors import CompressionError

LOSS_KINDS = ("kl", "mse", "cosine")


def output_tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model output: a tensor, or the tensors of a (nested) tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for value in output.values() for t in output_tensors(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in output_tensors(value)]
    return []


def is_classifier_output(tensor: torch.Tensor) -> bool:
    """True for class logits: 2-D (batch, classes) with more than one class."""
    return tensor.dim() == 2 and tensor.shape[1] > 1


def resolve_kinds(requested: str, teacher_outputs: Sequence[torch.Tensor]) -> tuple[str, ...]:
    """The loss kind of each output: `requested`, or the `auto` rule above applied per output."""
    if requested != "auto":
        if requested == "kl" and not is_classifier_output(teacher_outputs[0]):
            raise CompressionError(
                f"loss 'kl' needs class logits (batch, classes) but the model's first output has shape "
                f"{tuple(teacher_outputs[0].shape)}: use --distill-loss mse or cosine"
            )
        if requested != "kl":
            return tuple(requested for _ in teacher_outputs)
    # kl (or auto): logits get soft targets, any other output of the model falls back to mse.
    return tuple("kl" if is_classifier_output(t) else "mse" for t in teacher_outputs)


@dataclass(frozen=True)
class DistillationLoss:
    """Per-sample distillation loss for a model whose outputs have the loss `kinds` (one per output)."""

    kinds: tuple[str, ...]
    temperature: float = 4.0
    alpha: float = 0.9

    @property
    def uses_labels(self) -> bool:
        """True when labels add a hard-target term (classifier first output and alpha < 1)."""
        return self.kinds[0] == "kl" and self.alpha < 1.0

    def __call__(
        self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Loss of each sample in the batch, shape (batch,), averaged over the outputs."""
        if len(student) != len(teacher):
            raise CompressionError(
                f"the student returns {len(student)} output(s) but the teacher {len(teacher)}: a compression "
                "pass changed the model's outputs"
            )
        total = None
        for index, (kind, s, t) in enumerate(zip(self.kinds, student, teacher)):
            if s.shape != t.shape:
                raise CompressionError(
                    f"student output {index} has shape {tuple(s.shape)} but the teacher's has {tuple(t.shape)}"
                )
            term = self._one(kind, s.float(), t.float(), labels if index == 0 else None)
            total = term if total is None else total + term
        return total / len(self.kinds)

    def _one(self, kind: str, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if kind == "kl":
            return self.soft_and_hard(s, t, labels)
        if kind == "mse":
            return (s - t).pow(2).flatten(1).mean(1) if s.dim() > 1 else (s - t).pow(2)
        if kind == "cosine":
            return 1.0 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-8)
        raise CompressionError(f"unknown loss {kind!r}: expected one of {', '.join(LOSS_KINDS)}")

    def soft_and_hard(self, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """`alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)` per sample."""
        temp = self.temperature
        log_s = F.log_softmax(s / temp, dim=1)
        log_t = F.log_softmax(t / temp, dim=1)
        soft = (log_t.exp() * (log_t - log_s)).sum(1) * temp * temp
        if labels is None or not self.uses_labels:
            return soft
        hard = F.cross_entropy(s, labels, reduction="none")
        return self.alpha * soft + (1.0 - self.alpha) * hard


def scale_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The normalization layers whose per-channel scale (`weight`) the L1 penalty acts on."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, kinds) and getattr(module, "weight", None) is not None
    ]


def l1_scale_penalty(model: nn.Module, normalized: bool = False) -> torch.Tensor:
    """The L1 penalty on BatchNorm/GroupNorm scales (0 for a model without any).

    Plain: `sum |scale|` over every channel (network slimming). Normalized: the sum over layers of
    `||scale||_1 / ||scale||_2`, which multiplying a whole layer's scales by a constant does not
    change: with batch statistics, the next BatchNorm undoes such a uniform shrink, so a plain L1
    term can be lowered by shrinking every channel alike; the ratio only falls when some channels
    shrink more than others (sparsity).
    """
    layers = [module.weight for _, module in scale_layers(model)]
    if not layers:
        return torch.zeros(())
    if normalized:
        return torch.stack([w.abs().sum() / w.norm().clamp_min(1e-12) for w in layers]).sum()
    return torch.stack([w.abs().sum() for w in layers]).sum()
