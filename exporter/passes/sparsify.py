"""Magnitude (unstructured) pruning: set the smallest weights of Conv/Linear layers to zero.

Exactly round(sparsity * n) weights are zeroed, chosen by absolute value either across all
eligible layers at once (scope=global) or within each layer (scope=local); biases and
normalisation parameters are never touched. Zeroed weights stay in dense tensors: the parameter
count, the ONNX file and the latency on dense runtimes (onnxruntime's CPU kernels included) do
not change. What shrinks is the *compressed* size, which the record reports next to the zero
fraction so nobody mistakes this pass for a speed-up.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from exporter.errors import CompressionError, PlanError
from exporter.passes._graph import check_patterns_match, first_match, matching, parse_assignments
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class SparsifyConfig(PassConfig):
    """Settings of `sparsify`."""

    sparsity: float = setting(0.5, "fraction of Conv/Linear weights to set to zero, in [0, 1)")
    scope: Literal["global", "local"] = setting(
        "global", "global: the smallest weights of the whole model; local: the smallest of each layer"
    )
    layer_sparsities: tuple[str, ...] = setting(
        (), "per-layer sparsities as PATTERN=SPARSITY items (fnmatch, first match wins), applied per layer"
    )
    ignore: tuple[str, ...] = setting((), "fnmatch patterns of layers whose weights are left as they are")

    def validate(self) -> None:
        """Sparsities in [0, 1); `layer_sparsities` items of the form PATTERN=SPARSITY."""
        if not 0.0 <= self.sparsity < 1.0:
            raise PlanError(f"bad sparsify sparsity {self.sparsity}: expected a fraction in [0, 1), e.g. 0.5")
        parse_assignments(self.layer_sparsities, "sparsify layer_sparsities", 0.0, 1.0)


@register_pass
class Sparsify(CompressionPass):
    """Zero the smallest-magnitude Conv/Linear weights to reach the requested sparsity exactly."""

    name = "sparsify"
    Config = SparsifyConfig
    order = 40
    shorthand = "sparsity"
    summary_line = "magnitude sparsity: smaller zipped size, same dense speed"

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Zero weights layer by layer or globally and report the zero fraction and zipped sizes."""
        config: SparsifyConfig = self.config
        per_layer = parse_assignments(config.layer_sparsities, "sparsify layer_sparsities", 0.0, 1.0)
        names = [n for n, _ in model.named_modules() if n]
        checks = (("sparsify ignore", config.ignore), ("sparsify layer_sparsities", [p for p, _ in per_layer]))
        for setting_name, patterns in checks:
            problem = check_patterns_match(names, patterns, setting_name)
            if problem:
                raise CompressionError(problem)
        ignored = {n for p in config.ignore for n in matching(names, p)}
        layers = {n: m for n, m in model.named_modules() if isinstance(m, _WEIGHTED) and n not in ignored}
        zipped_before = zipped_size(model)
        pooled: dict[str, nn.Module] = {}
        targets: dict[str, float] = {}
        for name, module in layers.items():
            value = first_match(name, per_layer)
            if value is None and config.scope == "global":
                pooled[name] = module
            else:
                targets[name] = config.sparsity if value is None else value
        with torch.no_grad():
            for name, value in targets.items():
                _zero_smallest([layers[name].weight], value)
            if pooled:
                _zero_smallest([m.weight for m in pooled.values()], config.sparsity)
        changes = []
        for name, module in layers.items():
            zeros = int((module.weight == 0).sum())
            fraction = round(zeros / module.weight.numel(), 4)
            changes.append({"layer": name, "weights": module.weight.numel(), "zero_fraction": fraction})
        eligible = sum(m.weight.numel() for m in layers.values())
        zeroed = sum(int((m.weight == 0).sum()) for m in layers.values())
        total = sum(p.numel() for p in model.parameters())
        all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
        summary = {
            "zero_fraction_of_pruned_weights": round(zeroed / max(eligible, 1), 6),
            "zero_fraction_of_all_parameters": round(all_zeros / max(total, 1), 6),
            "zipped_bytes_before": zipped_before,
            "zipped_bytes_after": zipped_size(model),
        }
        notes = [
            "parameter count, file size and dense-runtime latency are unchanged: zeros are stored and "
            "multiplied like any other weight; only the compressed (zipped) size shrinks"
        ]
        skipped = [{"layer": n, "reason": "matches the sparsify ignore pattern"} for n in sorted(ignored)]
        return PassResult(model, changes=changes, skipped=skipped, notes=notes, summary=summary)


def _zero_smallest(weights: list[torch.Tensor], sparsity: float) -> None:
    """Set exactly round(sparsity * n) of the n weights (smallest |w| first, ties by position) to zero."""
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    count = round(sparsity * flat.numel())
    if count == 0:
        return
    order = torch.sort(flat.abs(), stable=True).indices[:count]
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[order] = False
    offset = 0
    for w in weights:
        n = w.numel()
        w.masked_fill_(~mask[offset : offset + n].reshape(w.shape), 0.0)
        offset += n


def zipped_size(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (raw float data) after standard zip (deflate) compression."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, tensor in model.state_dict().items():
            archive.writestr(name, tensor.detach().cpu().contiguous().numpy().tobytes())
    return buffer.getbuffer().nbytes
