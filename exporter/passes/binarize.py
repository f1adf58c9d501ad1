"""Pass `binarize`: weights -> alpha * sign(w) per output channel (XNOR-Net's binary-weight rule).

Rule: for each chosen Conv/Linear layer and each output channel c, alpha_c = mean(|W_c|) (the
scale that minimises ||W_c - alpha * sign(W_c)||, Rastegari et al. 2016) and every weight of the
channel becomes +alpha_c or -alpha_c (sign(0) counts as +). Biases are kept. By default every
Conv/Linear layer except the first and the last (in module order) is binarized: those two see raw
inputs and produce the outputs, and binarizing them costs the most.

An experiment, never a default: without retraining, binarization usually costs a lot of accuracy,
and the exported ONNX still stores float32 weights (two distinct values per channel compress
well, but no runtime here has 1-bit kernels). The record says exactly what happened: layers and
weights binarized, distinct values per layer, the relative weight error, and the size the weights
would have packed at 1 bit; the pipeline measures the output agreement.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.errors import CompressionError, PlanError
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BinarizeConfig(PassConfig):
    """Settings of `binarize`."""

    layers: tuple[str, ...] = setting(
        (),
        "module-name patterns (fnmatch, e.g. 'features.*') of the Conv/Linear layers to binarize; "
        "empty: every Conv/Linear layer except the first and the last",
    )

    def validate(self) -> None:
        """Patterns must be non-empty strings."""
        if any(not pattern.strip() for pattern in self.layers):
            raise PlanError(f"binarize.layers: empty pattern in {list(self.layers)}")


WEIGHT_LAYER_KINDS = ("Conv1d", "Conv2d", "Conv3d", "Linear")


def weight_layers(model: "nn.Module") -> list[tuple[str, "nn.Module"]]:
    """(name, module) of every Conv1d/2d/3d and Linear layer, in module order.

    Works on TorchScript models too: a scripted layer keeps its class name in `original_name`, and
    its weight is a parameter the pass can overwrite in place.
    """
    found = []
    for name, module in model.named_modules():
        kind = getattr(module, "original_name", None) or type(module).__name__
        if kind in WEIGHT_LAYER_KINDS and getattr(module, "weight", None) is not None:
            found.append((name, module))
    return found


def select_layers(
    layers: list[tuple[str, "nn.Module"]], patterns: tuple[str, ...], pass_name: str, default_skip_ends: bool
) -> tuple[list[tuple[str, "nn.Module"]], list[dict]]:
    """The layers `patterns` choose, and a `skipped` entry for each one left alone.

    With no patterns: all layers, or all but the first and last when `default_skip_ends`.
    A pattern that matches no layer raises `CompressionError` listing the layer names.
    """
    if not layers:
        return [], []
    if patterns:
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in layers):
                names = ", ".join(name for name, _ in layers)
                raise CompressionError(f"{pass_name}: pattern {pattern!r} matches no Conv/Linear layer; layers are: {names}")
        chosen = [(n, m) for n, m in layers if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        chosen_names = {n for n, _ in chosen}
        skipped = [{"layer": n, "reason": "not matched by layers"} for n, _ in layers if n not in chosen_names]
        return chosen, skipped
    if default_skip_ends and len(layers) > 2:
        skipped = [
            {"layer": layers[0][0], "reason": "first layer (sees the raw input)"},
            {"layer": layers[-1][0], "reason": "last layer (produces the outputs)"},
        ]
        return layers[1:-1], skipped
    if default_skip_ends:
        return [], [{"layer": n, "reason": "first or last layer"} for n, _ in layers]
    return layers, []


@register_pass
class Binarize(CompressionPass):
    """Replace chosen Conv/Linear weights by alpha * sign(w) per output channel."""

    name = "binarize"
    Config = BinarizeConfig
    order = 60
    shorthand = None
    summary_line = "binary weights, alpha * sign(w) per output channel (XNOR-Net); an experiment"

    def apply(self, model: "nn.Module", ctx: PassContext) -> PassResult:
        """Binarize the chosen layers in place and record per-layer figures."""
        import torch

        config: BinarizeConfig = self.config  # type: ignore[assignment]
        chosen, skipped = select_layers(weight_layers(model), config.layers, self.name, default_skip_ends=True)
        changes = []
        total_weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
        binarized = 0
        errors = []
        with torch.no_grad():
            for layer_name, module in chosen:
                weight = module.weight
                flat = weight.reshape(weight.shape[0], -1)
                alpha = flat.abs().mean(dim=1)
                signs = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype)
                new = (signs * alpha[:, None]).reshape(weight.shape)
                error = float(torch.linalg.vector_norm(weight - new) / torch.linalg.vector_norm(weight).clamp_min(1e-30))
                weight.copy_(new)
                binarized += weight.numel()
                errors.append(error)
                changes.append(
                    {
                        "layer": layer_name,
                        "weights": int(weight.numel()),
                        "out_channels": int(weight.shape[0]),
                        "distinct_values": int(torch.unique(new).numel()),
                        "alpha_mean": round(float(alpha.mean()), 6),
                        "relative_weight_error": round(error, 4),
                    }
                )
        notes = [
            "experimental: no retraining, so expect a large accuracy cost; the exported file stores the "
            "binary weights as float32 (no size or speed gain from onnxruntime, only better compression)"
        ]
        if not chosen:
            notes.append("no layer binarized: the model has at most the first and last Conv/Linear layers")
        summary = {
            "layers_binarized": len(chosen),
            "weights_binarized": binarized,
            "fraction_of_weights": round(binarized / total_weights, 4) if total_weights else 0.0,
            "distinct_values_per_channel": 2 if chosen else None,
            "mean_relative_weight_error": round(sum(errors) / len(errors), 4) if errors else 0.0,
            "packed_bytes_at_1_bit": sum((c["weights"] + 7) // 8 + 4 * c["out_channels"] for c in changes),
            "float32_bytes": 4 * binarized,
        }
        return PassResult(model=model, changes=changes, skipped=skipped, notes=notes, summary=summary)
