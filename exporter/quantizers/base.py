"""The quantizer contract: float ONNX file in, deployable ONNX file out, plus a record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import onnx

from exporter.inputs import InputSpec
from exporter.registry import Registry
from targets.profile import QuantScheme


@dataclass
class QuantizeRequest:
    """Everything a quantizer may use.

    `make_reader()` returns a fresh, rewindable onnxruntime `CalibrationDataReader` over the
    calibration split (None when the plan has no calibration data). `nodes_to_exclude` are ONNX
    node names to keep in float (accuracy-aware fallback). `work_dir` is scratch space.
    """

    float_path: Path
    out_path: Path
    scheme: QuantScheme
    input_specs: Sequence[InputSpec]
    work_dir: Path
    make_reader: Callable[[], Any] | None = None
    nodes_to_exclude: tuple[str, ...] = ()


@dataclass
class QuantizeInfo:
    """What a quantizer did: the exact onnxruntime settings used, timings and graph figures."""

    mode: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    calibration_batches: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nodes_excluded: list[str] = field(default_factory=list)
    ptq_log: Any = None  # exporter.ptq.PtqLog: what each PTQ algorithm changed, per ONNX node (static mode)
    quantized_from: str = ""  # the float model quantize_static read (after PTQ), for re-quantization
    calibration_cache: str = ""  # the onnxruntime calibration cache used (after MSE range selection)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        data = dict(self.__dict__)
        data["ptq_log"] = self.ptq_log.to_dict() if self.ptq_log is not None else None
        return data


Quantizer = Callable[[QuantizeRequest], QuantizeInfo]
QUANTIZERS: Registry[Quantizer] = Registry("quantization mode")


def register_quantizer(mode: str) -> Callable[[Quantizer], Quantizer]:
    """Decorator: register a quantizer function for `QuantScheme.mode == mode`."""
    return QUANTIZERS.register(mode)


def quantize_model(request: QuantizeRequest) -> QuantizeInfo:
    """Run the quantizer for `request.scheme.mode`, time it and count the ops of the result."""
    start = time.perf_counter()
    info = QUANTIZERS.get(request.scheme.mode)(request)
    info.seconds = round(time.perf_counter() - start, 3)
    info.op_counts = count_ops(request.out_path)
    info.nodes_excluded = list(request.nodes_to_exclude)
    return info


def count_ops(path: Path) -> dict[str, int]:
    """Node count per op type of an ONNX file (without loading external weights)."""
    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
