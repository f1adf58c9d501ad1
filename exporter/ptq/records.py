"""What each PTQ algorithm changed, per ONNX node: typed records for the report's per-layer table.

Every record names the ONNX node (or, for activation ranges, the tensor and the node that
produces it) and the algorithm, and carries that algorithm's own figures. `PtqLog` is the list the
static quantizer returns; `by_node()` groups it for a per-layer table and `to_dict()` is the
plain-data form written to report.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EqualizationRecord:
    """Cross-layer equalization of `node` (its output channels) with `next_node` (their input channels).

    `scale_min/median/max` summarise the per-channel factors s (node's channel i divided by s,
    next node's input channel i multiplied by s); `range_ratio_before/after` is the worst
    per-channel weight range of `node` relative to its largest (1 = balanced);
    `activation` is what sat between them (`Relu`, `Clip->Relu`, `none`).
    """

    node: str
    next_node: str
    activation: str
    channels: int
    scale_min: float
    scale_median: float
    scale_max: float
    range_ratio_before: float
    range_ratio_after: float
    algorithm: str = "equalization"


@dataclass(frozen=True)
class SkippedRecord:
    """An algorithm left `node` alone, and why (e.g. a ReLU6 that saturates on the calibration data)."""

    node: str
    algorithm: str
    reason: str


@dataclass(frozen=True)
class BiasAbsorptionRecord:
    """High-bias absorption: per-channel constants `c` moved from `node`'s bias into `next_node`'s."""

    node: str
    next_node: str
    channels_absorbed: int
    max_absorbed: float
    algorithm: str = "bias_absorption"


@dataclass(frozen=True)
class RangeRecord:
    """The activation range chosen for `tensor` (produced by `node`) and the candidate it came from.

    `mse_ratio` is the chosen range's estimated quantization MSE divided by MinMax's (< 1 = better).
    """

    node: str
    tensor: str
    candidate: str
    low: float
    high: float
    minmax_low: float
    minmax_high: float
    mse_ratio: float
    algorithm: str = "mse_range"


@dataclass(frozen=True)
class RoundingRecord:
    """AdaRound on `node`: how many weights round away from nearest, and the layer-output error.

    `output_mse_nearest` / `output_mse_optimized` are the reconstruction errors of the layer's
    (activated) output on the cached calibration inputs with nearest and with optimised rounding.
    """

    node: str
    weights: int
    flipped: int
    output_mse_nearest: float
    output_mse_optimized: float
    iterations: int
    algorithm: str = "adaround"


@dataclass(frozen=True)
class BiasCorrectionRecord:
    """Empirical bias correction of `node`: the per-channel mean output shift (quantized - float) removed."""

    node: str
    channels: int
    mean_abs_shift: float
    max_abs_shift: float
    algorithm: str = "bias_correction"


PtqRecord = EqualizationRecord | SkippedRecord | BiasAbsorptionRecord | RangeRecord | RoundingRecord | BiasCorrectionRecord


@dataclass
class PtqLog:
    """Records from every PTQ algorithm that ran, in order, plus seconds spent per algorithm."""

    records: list[PtqRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, record: PtqRecord) -> None:
        """Append one record."""
        self.records.append(record)

    def by_node(self) -> dict[str, list[PtqRecord]]:
        """Records grouped by ONNX node name, in the order they were made."""
        grouped: dict[str, list[PtqRecord]] = {}
        for record in self.records:
            grouped.setdefault(record.node, []).append(record)
        return grouped

    def of(self, algorithm: str) -> list[PtqRecord]:
        """The records of one algorithm (`equalization`, `adaround`, ...)."""
        return [r for r in self.records if r.algorithm == algorithm]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return {
            "records": [dataclasses.asdict(r) for r in self.records],
            "seconds": dict(self.seconds),
            "notes": list(self.notes),
        }
