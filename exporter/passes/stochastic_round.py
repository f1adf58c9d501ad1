"""Pass `stochastic_round`: round weights to a `bits`-bit grid, up or down at random (unbiased).

Rule: for each chosen Conv/Linear layer and each output channel c, the grid is symmetric,
step_c = max|W_c| / (2**(bits-1) - 1), levels -q..q with q = 2**(bits-1) - 1. A weight at
w = (k + f) * step_c (integer k, fraction f in [0, 1)) becomes (k + 1) * step_c with probability f
and k * step_c otherwise, so E[new w] = w: no systematic bias, unlike round-to-nearest whose
errors can add up in one direction. Draws come from `torch.Generator().manual_seed(seed)`, so the
same seed gives the same weights.

An experiment, never a default. Honest accounting: per weight, stochastic rounding has a larger
error than rounding to nearest (its merit is unbiasedness, not precision), so the record reports
both the achieved relative weight error and what round-to-nearest would have given, the distinct
values per layer, and the mean signed error (the bias). The exported file still stores float32
weights; the gain is what a `bits`-bit runtime or a compressor could get. The pipeline measures
the output agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.errors import PlanError
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting
from exporter.passes.binarize import select_layers, weight_layers

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class StochasticRoundConfig(PassConfig):
    """Settings of `stochastic_round`."""

    bits: int = setting(4, "weight bits: a symmetric grid of 2**bits - 1 levels per output channel (2..16)")
    seed: int = setting(0, "seed of the random rounding draws; the same seed gives the same weights")
    layers: tuple[str, ...] = setting((), "module-name patterns (fnmatch) of the Conv/Linear layers to round; empty: all")

    def validate(self) -> None:
        """`bits` must be 2..16 (1 bit is `binarize`); the seed must be non-negative."""
        if not 2 <= self.bits <= 16:
            raise PlanError(f"stochastic_round.bits must be between 2 and 16, got {self.bits} (for 1 bit use the binarize pass)")
        if self.seed < 0:
            raise PlanError(f"stochastic_round.seed must be >= 0, got {self.seed}")
        if any(not pattern.strip() for pattern in self.layers):
            raise PlanError(f"stochastic_round.layers: empty pattern in {list(self.layers)}")


def stochastic_round_weight(weight, bits: int, generator) -> tuple:
    """(rounded weight, round-to-nearest weight) on the per-output-channel symmetric `bits`-bit grid."""
    import torch

    levels = 2 ** (bits - 1) - 1
    flat = weight.reshape(weight.shape[0], -1)
    step = (flat.abs().amax(dim=1) / levels).clamp_min(torch.finfo(flat.dtype).tiny)[:, None]
    scaled = flat / step
    low = torch.floor(scaled)
    up = torch.rand(scaled.shape, generator=generator, dtype=scaled.dtype) < (scaled - low)
    rounded = (low + up.to(scaled.dtype)).clamp(-levels, levels) * step
    nearest = torch.round(scaled).clamp(-levels, levels) * step
    return rounded.reshape(weight.shape), nearest.reshape(weight.shape)


@register_pass
class StochasticRound(CompressionPass):
    """Round chosen Conv/Linear weights stochastically to a `bits`-bit per-channel grid."""

    name = "stochastic_round"
    Config = StochasticRoundConfig
    order = 61
    shorthand = "bits"
    summary_line = "weights stochastically rounded to a low-bit per-channel grid; an experiment"

    def apply(self, model: "nn.Module", ctx: PassContext) -> PassResult:
        """Round the chosen layers in place and record per-layer figures."""
        import torch

        config: StochasticRoundConfig = self.config  # type: ignore[assignment]
        chosen, skipped = select_layers(weight_layers(model), config.layers, self.name, default_skip_ends=False)
        generator = torch.Generator().manual_seed(config.seed)
        changes = []
        errors, nearest_errors, biases = [], [], []
        with torch.no_grad():
            for layer_name, module in chosen:
                weight = module.weight
                rounded, nearest = stochastic_round_weight(weight.detach().float(), config.bits, generator)
                norm = torch.linalg.vector_norm(weight).clamp_min(1e-30)
                error = float(torch.linalg.vector_norm(weight - rounded) / norm)
                nearest_error = float(torch.linalg.vector_norm(weight - nearest) / norm)
                bias = float((rounded - weight).mean() / weight.abs().mean().clamp_min(1e-30))
                weight.copy_(rounded.to(weight.dtype))
                errors.append(error)
                nearest_errors.append(nearest_error)
                biases.append(bias)
                changes.append(
                    {
                        "layer": layer_name,
                        "weights": int(weight.numel()),
                        "distinct_values": int(torch.unique(weight).numel()),
                        "max_distinct_values": int(weight.shape[0] * (2**config.bits - 1)),
                        "relative_weight_error": round(error, 4),
                        "nearest_rounding_error": round(nearest_error, 4),
                        "relative_bias": round(bias, 5),
                    }
                )
        mean = lambda values: round(sum(values) / len(values), 4) if values else 0.0  # noqa: E731
        summary = {
            "bits": config.bits,
            "seed": config.seed,
            "layers_rounded": len(chosen),
            "weights_rounded": sum(c["weights"] for c in changes),
            "mean_relative_weight_error": mean(errors),
            "mean_nearest_rounding_error": mean(nearest_errors),
            "mean_relative_bias": round(sum(biases) / len(biases), 5) if biases else 0.0,
        }
        notes = [
            f"experimental: stochastic rounding to {config.bits} bits is unbiased but noisier per weight than "
            f"round-to-nearest (relative weight error {summary['mean_relative_weight_error']} vs "
            f"{summary['mean_nearest_rounding_error']}); the exported file still stores float32 weights"
        ]
        return PassResult(model=model, changes=changes, skipped=skipped, notes=notes, summary=summary)
