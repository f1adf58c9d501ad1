"""Activation ranges accumulated batch by batch, so calibration memory does not grow with the sample count.

onnxruntime's histogram calibrators keep every batch's outputs until the end of `collect_data`
(memory grows with the sample count) and need batches of one size. Here one batch is held at a
time, and the statistics of a batch (or of a process, see `calibration.sharding`) are small values
that merge exactly:

- **minmax**: onnxruntime's `MinMaxCalibrater` is fed one batch per `collect_data` call, which
  merges that batch's ranges into its running ranges (min of minima, max of maxima), so the result
  equals one call over every batch. `RangeStats` merges ranges across processes the same way.
- **entropy, percentile, distribution**: two passes over the data. Pass 1 finds each tensor's
  extrema (`ExtremaStats`: min, max, and the min/max of the absolute values). Pass 2 counts every
  batch into one fixed histogram per tensor whose range comes from those extrema, exactly the range
  onnxruntime's `HistogramCollector` would pick when given all outputs at once (`num_bins` bins
  over [-T, T], T the largest magnitude; or over [min |x|, max |x|] for symmetric percentile).
  Counts of a fixed histogram add up exactly, so the merged histogram equals the all-at-once one
  bin for bin, and onnxruntime's own `compute_collection_result` turns it into ranges.

Merging across processes is the same merge applied to a list of per-process statistics: `gather`
is the identity for one process and `torch.distributed.all_gather_object` for several.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from exporter.errors import CalibrationError
from exporter.quiet import quiet_onnxruntime

Gather = Callable[[Any], list]


def local_gather(value: Any) -> list:
    """The gather of a single process: just its own value."""
    return [value]


@dataclass
class RangeStats:
    """Running (lowest, highest) per tensor: what minmax calibration keeps."""

    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def merge(cls, parts: Iterable["RangeStats"]) -> "RangeStats":
        """Element-wise min of the lows and max of the highs over every part that saw the tensor."""
        merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for part in parts:
            for name, (low, high) in part.ranges.items():
                if name in merged:
                    old_low, old_high = merged[name]
                    merged[name] = (np.minimum(old_low, low), np.maximum(old_high, high))
                else:
                    merged[name] = (np.asarray(low), np.asarray(high))
        return cls(dict(sorted(merged.items())))


@dataclass
class ExtremaStats:
    """Per tensor: (min, max, min |x|, max |x|) over the values seen, NaN ignored; absent when none were seen."""

    extrema: dict[str, tuple[np.generic, np.generic, np.generic, np.generic]] = field(default_factory=dict)

    def update(self, name: str, values: np.ndarray, magnitudes: bool = True) -> None:
        """Fold one batch's values of tensor `name` in; without `magnitudes` the |x| extrema are
        derived from the signed ones (exact for max |x|; min |x| is then not needed)."""
        flat = values.reshape(-1)
        if flat.size == 0:
            return
        low, high = np.nanmin(flat), np.nanmax(flat)
        if magnitudes:
            absolute = np.absolute(flat)
            found = (low, high, np.nanmin(absolute), np.nanmax(absolute))
        else:
            found = (low, high, low * 0, max(abs(low), abs(high)))
        self.extrema[name] = found if name not in self.extrema else _fold(self.extrema[name], found)

    @classmethod
    def merge(cls, parts: Iterable["ExtremaStats"]) -> "ExtremaStats":
        """The extrema over every part."""
        merged = cls()
        for part in parts:
            for name, found in part.extrema.items():
                merged.extrema[name] = found if name not in merged.extrema else _fold(merged.extrema[name], found)
        return merged


def _fold(old: tuple, new: tuple) -> tuple:
    return (min(old[0], new[0]), max(old[1], new[1]), min(old[2], new[2]), max(old[3], new[3]))


@dataclass(frozen=True)
class HistogramLayout:
    """onnxruntime's histogram settings, read off its calibrator: which values are counted (signed, or
    magnitudes for symmetric percentile), in how many bins."""

    method: str
    symmetric: bool
    num_bins: int
    num_quantized_bins: int
    percentile: float
    scenario: str

    @property
    def magnitudes(self) -> bool:
        """True when onnxruntime histograms |x| (its `collect_absolute_value`) rather than x."""
        return self.method == "percentile" and self.symmetric

    def edges_range(self, extrema: tuple) -> tuple[np.generic, np.generic]:
        """The range onnxruntime picks when it sees every value at once: [min |x|, max |x|] for
        magnitudes, else [-T, T] with T the largest magnitude of the signed extrema."""
        low, high, magnitude_low, magnitude_high = extrema
        if self.magnitudes:
            return magnitude_low, magnitude_high
        threshold = np.array(max(abs(low), abs(high)), dtype=np.asarray(low).dtype)
        return -threshold, threshold


@dataclass
class HistogramStats:
    """Per tensor: bin counts over the fixed range `HistogramLayout.edges_range` gives."""

    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def update(self, name: str, values: np.ndarray, layout: HistogramLayout, extrema: tuple) -> None:
        """Count one batch's values of tensor `name`."""
        flat = values.reshape(-1)
        if layout.magnitudes:
            flat = np.absolute(flat)
        hist, _ = np.histogram(flat, bins=layout.num_bins, range=layout.edges_range(extrema))
        self.counts[name] = hist if name not in self.counts else self.counts[name] + hist

    @classmethod
    def merge(cls, parts: Iterable["HistogramStats"]) -> "HistogramStats":
        """Bin-wise sums over every part."""
        merged = cls()
        for part in parts:
            for name, hist in part.counts.items():
                merged.counts[name] = hist.copy() if name not in merged.counts else merged.counts[name] + hist
        return merged


def histogram_entries(histograms: HistogramStats, extrema: ExtremaStats, layout: HistogramLayout) -> dict[str, tuple]:
    """The `HistogramCollector.histogram_dict` onnxruntime would have built from all values at once
    (bin edges in each tensor's own dtype, float32 or float16, as onnxruntime's are)."""
    entries: dict[str, tuple] = {}
    for name, hist in histograms.counts.items():
        low, high, _, _ = extrema.extrema[name]
        dtype = np.asarray(low).dtype
        first, last = layout.edges_range(extrema.extrema[name])
        _, edges = np.histogram(np.zeros(0, dtype=dtype), bins=layout.num_bins, range=(first, last))
        if layout.magnitudes:
            entries[name] = (hist, edges.astype(dtype), low, high)
        else:
            entries[name] = (hist, edges, low, high, np.asarray(last))
    return entries


@dataclass
class CalibrationOutcome:
    """The ranges (onnxruntime's `TensorsData`) and how many batches this process read."""

    ranges: Any
    batches: int


def collect_ranges(
    model_path: Path,
    reader: Any,
    calibrator_args: dict[str, Any],
    work_dir: Path,
    gather: Gather = local_gather,
    threads: int | None = None,
) -> CalibrationOutcome:
    """Activation ranges of the float model at `model_path` over the batches of `reader`, one batch in memory.

    `reader` is an onnxruntime `CalibrationDataReader` that can be rewound (histogram methods read
    it twice); `calibrator_args` are `create_calibrator`'s keyword arguments; `gather` merges with
    the other processes of a sharded run (every process must call this together); `threads` caps
    onnxruntime's intra-op threads. No batch in any process raises `CalibrationError`.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, create_calibrator

    work_dir.mkdir(parents=True, exist_ok=True)
    with quiet_onnxruntime():
        calibrator = create_calibrator(
            model_path,
            augmented_model_path=str(work_dir / "augmented_model.onnx"),
            providers=["CPUExecutionProvider"],
            **calibrator_args,
        )
    session = calibrator.infer_session if threads is None else _session(calibrator.augmented_model_path, threads)
    calibrator.infer_session = session
    method = calibrator_args["calibrate_method"]
    if method == CalibrationMethod.MinMax:
        batches = 0
        for batch in _batches(reader):
            with quiet_onnxruntime():
                calibrator.collect_data(_OneBatch(batch))
            batches += 1
        local = RangeStats()
        if calibrator.calibrate_tensors_range is not None:
            local.ranges = {name: data.range_value for name, data in calibrator.calibrate_tensors_range.items()}
        merged = RangeStats.merge(gather(local))
        total = sum(gather(batches))
        if total == 0:
            raise CalibrationError("calibration data produced no batches: pass --calib with at least one sample")
        return CalibrationOutcome(TensorsData(CalibrationMethod.MinMax, merged.ranges), batches)

    layout = HistogramLayout(
        method=calibrator.method,
        symmetric=bool(calibrator.symmetric),
        num_bins=int(calibrator.num_bins),
        num_quantized_bins=int(calibrator.num_quantized_bins),
        percentile=float(calibrator.percentile),
        scenario=calibrator.scenario,
    )
    names = [output.name for output in session.get_outputs()]
    tensors = [name for name in names if name in calibrator.tensors_to_calibrate]
    extrema = ExtremaStats()
    batches = 0
    for outputs in _outputs(session, reader, names, tensors):
        for name in tensors:
            extrema.update(name, outputs[name], magnitudes=layout.magnitudes)
        batches += 1
    extrema = ExtremaStats.merge(gather(extrema))
    if sum(gather(batches)) == 0:
        raise CalibrationError("calibration data produced no batches: pass --calib with at least one sample")
    reader.rewind()
    histograms = HistogramStats()
    for outputs in _outputs(session, reader, names, tensors):
        for name in tensors:
            if name in extrema.extrema:
                histograms.update(name, outputs[name], layout, extrema.extrema[name])
    histograms = HistogramStats.merge(gather(histograms))
    return CalibrationOutcome(_histogram_ranges(histograms, extrema, layout), batches)


def _histogram_ranges(histograms: HistogramStats, extrema: ExtremaStats, layout: HistogramLayout):
    """onnxruntime's own threshold search (entropy, percentile, distribution) on the merged histograms."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorsData

    collector = HistogramCollector(
        method=layout.method,
        symmetric=layout.symmetric,
        num_bins=layout.num_bins,
        num_quantized_bins=layout.num_quantized_bins,
        percentile=layout.percentile,
        scenario=layout.scenario,
    )
    collector.histogram_dict = histogram_entries(histograms, extrema, layout)
    methods = {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }
    with quiet_onnxruntime():
        return TensorsData(methods[layout.method], collector.compute_collection_result())


def _batches(reader: Any) -> Iterator[dict[str, np.ndarray]]:
    while (batch := reader.get_next()) is not None:
        yield batch


def _outputs(session: Any, reader: Any, names: Sequence[str], tensors: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """Each batch's calibrated tensors, one batch at a time."""
    wanted = set(tensors)
    for batch in _batches(reader):
        values = session.run(None, batch)
        yield {name: value for name, value in zip(names, values) if name in wanted}


def _session(model_path: str, threads: int):
    """An inference session like onnxruntime's calibrators make (no graph optimization), with `threads` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])


class _OneBatch:
    """A reader that yields one batch, then None (one `collect_data` call per batch)."""

    def __init__(self, batch: dict[str, np.ndarray]) -> None:
        self.batch = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self.batch = self.batch, None
        return batch


def threads_from_environment() -> int | None:
    """`OMP_NUM_THREADS` as an int when set (torchrun workers get one share of the cores), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
