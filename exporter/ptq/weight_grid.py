"""The int8 grid onnxruntime will put a layer's weights on, computed exactly as `quantize_static` does.

Rule: per output channel, onnxruntime calls `compute_data_quant_params` on that channel's values
with the scheme's weight type, symmetry and `reduce_range`: symmetric int8 gives
`scale = max|w| / 127` (`/ 64` with reduce_range) and zero point 0. `WeightGrid` holds those
per-channel scales and zero points and the integer bounds, so an algorithm can change *which*
integer a weight rounds to while keeping the grid onnxruntime will recompute from the written
weights (its extreme integers are never moved; see `exporter.ptq.adaround`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from targets.profile import QuantScheme


@dataclass(frozen=True)
class WeightGrid:
    """Per-output-channel `scale` and `zero_point` (shape (C,)), and the integer range [qmin, qmax]."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int

    def _bcast(self, values: np.ndarray, w: np.ndarray) -> np.ndarray:
        return values.reshape((-1,) + (1,) * (w.ndim - 1))

    def quantize(self, w: np.ndarray) -> np.ndarray:
        """Round-to-nearest integers of an output-channel-first weight (what onnxruntime stores)."""
        s, z = self._bcast(self.scale, w), self._bcast(self.zero_point, w)
        return np.clip(np.round(w / s) + z, self.qmin, self.qmax)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Float weights `scale * (q - zero_point)`, float32."""
        s, z = self._bcast(self.scale, q), self._bcast(self.zero_point, q)
        return ((q - z) * s).astype(np.float32)


def weight_qtype(scheme: QuantScheme) -> int:
    """The ONNX tensor type of the scheme's weights (`int8` -> TensorProto.INT8 ...)."""
    return getattr(onnx.TensorProto, scheme.weight_type.upper())


def weight_grid(w: np.ndarray, scheme: QuantScheme) -> WeightGrid:
    """The grid onnxruntime computes for the output-channel-first weight `w` under `scheme`."""
    from onnxruntime.quantization.quant_utils import compute_data_quant_params, get_qmin_qmax_for_qType

    qtype = weight_qtype(scheme)
    symmetric = scheme.weight_symmetric
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=scheme.reduce_range, symmetric=symmetric)
    rows = w.reshape(w.shape[0], -1) if scheme.per_channel else w.reshape(1, -1)
    scales, zeros = [], []
    for row in rows:
        zero, scale = compute_data_quant_params(row.astype(np.float32), qtype, symmetric, scheme.reduce_range)
        scales.append(float(scale))
        zeros.append(float(zero))
    if not scheme.per_channel:
        scales, zeros = scales * w.shape[0], zeros * w.shape[0]
    return WeightGrid(np.asarray(scales, np.float64), np.asarray(zeros, np.float64), int(qmin), int(qmax))
