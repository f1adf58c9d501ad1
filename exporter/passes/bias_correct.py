"""Empirical bias correction (Nagel et al., "Data-Free Quantization", 2019, section 4.2).

Rounding a layer's weights to int8 shifts the mean of its outputs: E[(W_q - W) x] is rarely zero,
and the shift adds up layer after layer. For every Conv and Linear, this pass simulates the
quantizer's weights (symmetric int8 per output channel, as onnxruntime's static quantizer makes
them; 7-bit with `reduce_range`), measures the mean output shift per output channel on the
calibration data with the float model's own inputs to that layer, and subtracts it from the bias
(a bias is added when the layer has none). The float model moves by exactly that shift; the
quantized model then has, on average, the float model's outputs again.

Per-channel symmetric quantization is scale-invariant per output channel, so the correction stays
right when a BatchNorm that follows the layer is folded later (by `fold_bn` or onnxruntime).
Run late (order 95): after every pass that changes weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exporter.errors import PlanError
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class BiasCorrectConfig(PassConfig):
    """Settings of empirical bias correction; match them to the target's quantization scheme."""

    reduce_range: bool | None = setting(None, "simulate 7-bit weights; none = as the target's quantization.reduce_range")
    per_channel: bool | None = setting(None, "simulate per-output-channel weight scales; none = as the target's quantization.per_channel")
    max_samples: int = setting(256, "calibration samples used to measure the shift")
    min_relative_shift: float = setting(
        0.0, "leave a layer alone when its largest shift is below this fraction of its output RMS"
    )

    def validate(self) -> None:
        if self.max_samples < 1:
            raise PlanError(f"bias_correct.max_samples must be at least 1, got {self.max_samples}")
        if not 0.0 <= self.min_relative_shift < 1.0:
            raise PlanError(f"bias_correct.min_relative_shift must be in [0, 1), got {self.min_relative_shift}")


@register_pass
class BiasCorrect(CompressionPass):
    """Subtract the mean output shift that int8 weight rounding causes, layer by layer."""

    name = "bias_correct"
    Config = BiasCorrectConfig
    order = 95
    shorthand = None
    summary_line = "bias corrected for the mean shift of int8 weight rounding"

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Measure every layer's shift in one pass over the calibration data, then correct the biases."""
        config: BiasCorrectConfig = self.config  # type: ignore[assignment]
        if ctx.calib is None or len(ctx.calib) == 0:
            note = "bias correction needs calibration data (--calib): nothing changed"
            return PassResult(model, skipped=[{"layer": "<model>", "reason": note}], notes=[note])
        layers = {name: m for name, m in model.named_modules() if isinstance(m, (*_CONV, nn.Linear))}
        scheme = ctx.quantization
        reduce_range = config.reduce_range if config.reduce_range is not None else (scheme.reduce_range if scheme else True)
        per_channel = config.per_channel if config.per_channel is not None else (scheme.per_channel if scheme else True)
        deltas = {name: quantized_weight(m.weight, reduce_range, per_channel) - m.weight for name, m in layers.items()}
        stats = {name: _ShiftStats() for name in layers}
        hooks = [m.register_forward_hook(_hook(stats[name], deltas[name])) for name, m in layers.items()]
        samples = 0
        try:
            from calibration import iter_batches

            with torch.no_grad():
                for batch in iter_batches(ctx.calib, ctx.input_specs, ctx.batch_size):
                    inputs = [torch.from_numpy(batch.inputs[s.name]) for s in ctx.input_specs]
                    model(*inputs)
                    samples += len(inputs[0])
                    if samples >= config.max_samples:
                        break
        finally:
            for hook in hooks:
                hook.remove()
        changes, skipped = [], []
        for name, layer in layers.items():
            stat = stats[name]
            if stat.count == 0:
                skipped.append({"layer": name, "reason": "not reached by the calibration data"})
                continue
            shift = stat.shift()
            rms = stat.rms()
            relative = float(shift.abs().max() / rms) if rms > 0 else 0.0
            if relative < config.min_relative_shift:
                skipped.append({"layer": name, "reason": f"shift {relative:.2e} of output RMS is below min_relative_shift"})
                continue
            with torch.no_grad():
                if layer.bias is None:
                    layer.bias = nn.Parameter(torch.zeros(shift.numel(), dtype=layer.weight.dtype))
                layer.bias.sub_(shift.to(layer.bias.dtype))
            changes.append(
                {
                    "layer": name,
                    "max_abs_shift": round(float(shift.abs().max()), 6),
                    "mean_abs_shift": round(float(shift.abs().mean()), 6),
                    "relative_shift": round(relative, 6),
                }
            )
        notes = [f"{len(changes)} layer(s) corrected on {samples} calibration sample(s)"]
        return PassResult(model, changes=changes, skipped=skipped, notes=notes, summary={"corrected": len(changes), "samples": samples, "reduce_range": reduce_range, "per_channel": per_channel})


def quantized_weight(weight: torch.Tensor, reduce_range: bool = True, per_channel: bool = True) -> torch.Tensor:
    """The weight as onnxruntime's static quantizer rounds it: symmetric int8 ([-127, 127], or
    [-64, 64] with `reduce_range`), one scale per output channel (axis 0) or one for the tensor."""
    levels = 64.0 if reduce_range else 127.0
    with torch.no_grad():
        w = weight.detach().double()
        if per_channel:
            absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1).reshape((-1,) + (1,) * (w.dim() - 1))
        else:
            absmax = w.abs().max().reshape((1,) * w.dim())
        scale = torch.where(absmax > 0, absmax / levels, torch.ones_like(absmax))
        return (torch.clamp(torch.round(w / scale), -levels, levels) * scale).to(weight.dtype)


class _ShiftStats:
    """Running per-channel sums of the output shift and of the squared float output."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.square = 0.0
        self.count = 0
        self.elements = 0

    def add(self, shift: torch.Tensor, output: torch.Tensor, channel_dim: int) -> None:
        dims = [d for d in range(shift.dim()) if d != channel_dim]
        per_channel = shift.double().sum(dim=dims)
        self.sum = per_channel if self.sum is None else self.sum + per_channel
        self.count += shift.numel() // shift.shape[channel_dim]
        self.square += float(output.double().pow(2).sum())
        self.elements += output.numel()

    def shift(self) -> torch.Tensor:
        return self.sum / self.count

    def rms(self) -> float:
        return (self.square / self.elements) ** 0.5 if self.elements else 0.0


def _hook(stats: _ShiftStats, delta: torch.Tensor):
    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(module, nn.Linear):
            shift = F.linear(x, delta)
            channel_dim = shift.dim() - 1
        else:
            shift = module._conv_forward(x, delta, None)
            channel_dim = 1
        stats.add(shift, output, channel_dim)

    return record
