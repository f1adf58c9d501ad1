"""Per-tensor activation ranges chosen by reconstruction error, from streaming histograms.

Rule: for every calibrated tensor, a 2048-bin histogram over its MinMax range is accumulated batch
by batch (memory: bins x tensors, whatever the data size). Candidate ranges are MinMax, the
two-sided percentiles 99.9 / 99.99 / 99.999, and a sweep that shrinks the MinMax range towards
zero in `SWEEP` steps down to `SWEEP_FLOOR` of it. Each candidate is turned into the exact
scale and zero point onnxruntime would use (`compute_scale_zp` with the scheme's activation type
and symmetry); its expected squared error is estimated from the histogram: rounding noise
`scale^2 / 12` for the mass inside the representable interval (exact zeros excluded: zero is
always on the grid), the squared clipping distance for the mass outside. The candidate with the least error wins, ties going to the widest range. The
chosen ranges replace the calibration cache's entries, so `quantize_static` uses them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from exporter.ptq.activations import for_each_batch
from exporter.ptq.records import PtqLog, RangeRecord
from targets.profile import QuantScheme

BINS = 2048
PERCENTILES = (99.9, 99.99, 99.999)
SWEEP = 64
SWEEP_FLOOR = 0.2
MAX_COUNTED = 1 << 18  # values counted per tensor and batch: plenty for 2048 bins, and bounded time
_SUBSAMPLE = np.random.default_rng(0)


@dataclass
class Histogram:
    """Counts of a tensor's values in `BINS` equal bins over [low, high] (values outside go to the edge bins)."""

    low: float
    high: float
    counts: np.ndarray
    zeros: float = 0.0  # exact zeros (ReLU outputs): always representable, so they add no rounding noise

    @classmethod
    def empty(cls, low: float, high: float) -> "Histogram":
        """A zero histogram over [low, high] (widened a hair when low == high)."""
        if high <= low:
            high = low + 1e-6
        return cls(float(low), float(high), np.zeros(BINS, dtype=np.float64))

    def add(self, values: np.ndarray) -> None:
        """Count `values` (any shape); of a large tensor, `MAX_COUNTED` values drawn at random (seeded)."""
        flat = values.reshape(-1)
        if flat.size > MAX_COUNTED:
            flat = flat[_SUBSAMPLE.integers(0, flat.size, MAX_COUNTED)]
        self.zeros += float(np.count_nonzero(flat == 0))
        index = np.floor((flat.astype(np.float64) - self.low) / (self.high - self.low) * BINS)
        self.counts += np.bincount(np.clip(index, 0, BINS - 1).astype(np.int64), minlength=BINS)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres."""
        width = (self.high - self.low) / BINS
        return self.low + (np.arange(BINS) + 0.5) * width

    def percentile_range(self, percent: float) -> tuple[float, float]:
        """The two-sided range holding `percent` % of the mass ((100 - percent) / 2 % cut from each side)."""
        cdf = np.cumsum(self.counts) / max(self.counts.sum(), 1.0)
        cut = (100.0 - percent) / 200.0
        edges = self.low + np.arange(BINS + 1) * (self.high - self.low) / BINS
        lo = edges[int(np.searchsorted(cdf, cut, side="right"))]
        hi = edges[min(int(np.searchsorted(cdf, 1.0 - cut, side="left")) + 1, BINS)]
        return float(lo), float(hi)


def quantization_error(hist: Histogram, low: float, high: float, scheme: QuantScheme) -> float:
    """Expected squared error of fake-quantizing the histogram's values with onnxruntime's params for [low, high]."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = getattr(onnx.TensorProto, scheme.activation_type.upper())
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=scheme.activation_symmetric)
    zero, scale = compute_scale_zp(np.float32(low), np.float32(high), qmin, qmax, scheme.activation_symmetric)
    scale, zero = float(scale), float(zero)
    if scale <= 0:
        return float("inf")
    lo, hi = (qmin - zero) * scale, (qmax - zero) * scale
    c = hist.centers
    inside = (c >= lo) & (c <= hi)
    clipped = np.where(c < lo, lo - c, np.where(c > hi, c - hi, 0.0))
    noisy = max(float(np.sum(hist.counts[inside])) - hist.zeros, 0.0)
    return float(noisy * scale * scale / 12.0 + np.sum(hist.counts * clipped * clipped))


def candidates(hist: Histogram) -> list[tuple[str, float, float]]:
    """(name, low, high) candidate ranges: MinMax, percentiles, and the shrinking sweep."""
    found = [("minmax", hist.low, hist.high)]
    found += [(f"percentile {p:g}", *hist.percentile_range(p)) for p in PERCENTILES]
    for step in range(1, SWEEP):
        factor = 1.0 - (1.0 - SWEEP_FLOOR) * step / (SWEEP - 1)
        found.append((f"mse x{factor:.3f}", hist.low * factor, hist.high * factor))
    return found


def choose_ranges(
    model: onnx.ModelProto,
    minmax: dict[str, tuple[float, float]],
    batches,
    scheme: QuantScheme,
    log: PtqLog,
) -> dict[str, tuple[float, float]]:
    """The least-error range of every tensor in `minmax` (its MinMax range), measured on `batches`."""
    producers = {out: node.name for node in model.graph.node for out in node.output}
    hists = {name: Histogram.empty(min(lo, 0.0), max(hi, 0.0)) for name, (lo, hi) in minmax.items()}
    known = {v.name for v in model.graph.input} | set(producers)
    names = [n for n in hists if n in known]

    def visit(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            hists[name].add(value)

    for_each_batch(model, names, batches, visit)
    chosen: dict[str, tuple[float, float]] = dict(minmax)
    for name in names:
        hist = hists[name]
        if hist.counts.sum() == 0:
            continue
        scored = [(quantization_error(hist, lo, hi, scheme), -(hi - lo), label, lo, hi) for label, lo, hi in candidates(hist)]
        base = scored[0][0]
        error, _, label, lo, hi = min(scored)
        lo0, hi0 = minmax[name]
        if label != "minmax":
            chosen[name] = (float(max(lo, lo0)), float(min(hi, hi0)))
        log.add(
            RangeRecord(
                node=producers.get(name, name),
                tensor=name,
                candidate=label,
                low=chosen[name][0],
                high=chosen[name][1],
                minmax_low=float(lo0),
                minmax_high=float(hi0),
                mse_ratio=float(error / base) if base > 0 else 1.0,
            )
        )
    return chosen


def read_cache(path) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor from an onnxruntime calibration cache file."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(path).data
    result = {}
    for name, tensor in data.items():
        low, high = (float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for v in tensor.range_value)
        result[name] = (low, high)
    return result


def write_cache(path, ranges: dict[str, tuple[float, float]]) -> None:
    """Write `ranges` as an onnxruntime MinMax calibration cache (what `quantize_static` reads)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = {
        name: TensorData(lowest=np.asarray(lo, dtype=np.float32), highest=np.asarray(hi, dtype=np.float32))
        for name, (lo, hi) in ranges.items()
    }
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)
