"""Measured int8 error of one group of weight MatMuls, simulated in numpy on captured calibration activations.

Rule: the group's float output X·W (every MatMul of the group, concatenated) is compared with the
output of its int8 form, as onnxruntime computes it:
- weights: symmetric int8 per output channel (per tensor when `per_channel` is off), 7-bit with `reduce_range`;
- `static`: one uint8 affine range for the activation, from its minimum and maximum over the calibration
  samples (onnxruntime's MinMax calibration, range widened to include 0);
- `dynamic`: `DynamicQuantizeLinear`'s uint8 range taken per run, i.e. per sample at batch 1.
The error is the relative squared error ||Yq - Y||² / ||Y||², reported as SQNR in dB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Mode = str  # "static" | "dynamic"


@dataclass(frozen=True)
class WeightGrid:
    """How weights are quantized: per output channel or per tensor, 8- or 7-bit (`reduce_range`)."""

    per_channel: bool = True
    reduce_range: bool = False

    def fake_quant(self, w: np.ndarray) -> np.ndarray:
        """Symmetric int8 quantize-dequantize of an (in, out) weight."""
        qmax = 63.0 if self.reduce_range else 127.0
        absmax = np.abs(w).max(axis=0, keepdims=True) if self.per_channel else np.abs(w).max(keepdims=True)
        scale = np.where(absmax > 0, absmax / qmax, 1.0)
        return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def fake_quant_uint8(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Affine uint8 quantize-dequantize of `x` on the range [low, high] widened to include 0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero = np.round(-low / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def quantized_activation(x: np.ndarray, mode: Mode) -> np.ndarray:
    """`x` (samples, ..., channels) as int8 sees it: one range for all samples (`static`) or one per sample."""
    if mode == "static":
        return fake_quant_uint8(x, x.min(), x.max())
    return np.stack([fake_quant_uint8(sample, sample.min(), sample.max()) for sample in x])


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """10·log10(||ref||² / ||approx - ref||²); +inf when they are identical."""
    noise = float(np.sum((approximation.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def group_sqnr_db(x: np.ndarray, weight: np.ndarray, scales: np.ndarray | None, mode: Mode, grid: WeightGrid) -> float:
    """SQNR of the int8 group output for activation `x` (samples, tokens, K) and concatenated (K, N) `weight`.

    `scales` is the smoothing s (None: no smoothing): the int8 form quantizes x / s and diag(s)·W.
    """
    reference = x.reshape(-1, x.shape[-1]) @ weight
    if scales is not None:
        x = x / scales
        weight = weight * scales.reshape(-1, 1)
    xq = quantized_activation(x, mode).reshape(-1, x.shape[-1])
    return sqnr_db(reference, xq @ grid.fake_quant(weight))
