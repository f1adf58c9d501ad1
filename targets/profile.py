"""The typed shape of a deployment target: what to produce and how good it must be.

A target file (TOML) has top-level fields plus a `[quantization]` and a `[tolerances]` table.
Unknown fields and bad values are rejected with one line naming the file, the field and the
valid choices, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from exporter.errors import PlanError

QuantMode = Literal["none", "static", "dynamic", "fp16", "weight_only"]
QuantFormat = Literal["qdq", "qoperator"]
QuantDType = Literal["int8", "uint8", "int16", "uint16", "int4", "uint4"]
CalibMethod = Literal["minmax", "entropy", "percentile", "distribution"]
CpuArch = Literal["any", "x86_64", "arm64"]
AccuracyLevel = Literal["fp32", "fp16", "bf16", "int8"]


@dataclass(frozen=True)
class QuantScheme:
    """How onnxruntime quantizes for this target (`mode = "none"` keeps the float model)."""

    mode: QuantMode = "none"
    format: QuantFormat = "qdq"
    per_channel: bool = True
    activation_type: QuantDType = "uint8"
    weight_type: QuantDType = "int8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = False
    calibration_method: CalibMethod = "minmax"
    percentile: float = 99.999
    op_types: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    block_size: int = 32
    keep_io_types: bool = True
    accuracy_level: AccuracyLevel = "fp32"  # weight_only: MatMulNBits compute type ("int8" = fastest on CPU)
    # Post-training algorithms on the float ONNX graph before `quantize_static` (static mode only; see exporter/ptq/).
    equalize: bool = False  # cross-layer equalization of Conv/Gemm pairs (ReLU6-safe, depthwise-aware)
    bias_absorption: bool = False  # high-bias absorption into the next layer (Relu pairs, after equalization)
    mse_ranges: bool = False  # per-tensor activation range with the least quantization error (histogram search)
    adaround: bool = False  # weight rounding optimised per layer against float outputs on calibration data
    adaround_iterations: int = 200  # optimisation steps per layer
    adaround_samples: int = 1024  # cached input rows (im2col positions) per layer
    adaround_seconds: float = 240.0  # time bound for the whole pass; later layers keep nearest rounding
    bias_correction: bool = False  # empirical per-channel bias correction after rounding
    ptq_samples: int = 128  # calibration samples the algorithms above use (held in memory)

    def validate(self, where: str) -> None:
        """Cross-field rules onnxruntime would otherwise fail on late or ignore silently."""
        if not 50.0 < self.percentile <= 100.0:
            raise PlanError(f"{where}: quantization.percentile must be in (50, 100], got {self.percentile}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise PlanError(f"{where}: quantization.block_size must be a power of two >= 16, got {self.block_size}")
        if self.mode == "dynamic" and (self.activation_type != "uint8" or self.weight_type not in ("int8", "uint8")):
            raise PlanError(
                f"{where}: dynamic quantization needs activation_type 'uint8' and weight_type 'int8' or 'uint8', "
                f"got {self.activation_type!r} and {self.weight_type!r}"
            )
        algorithms = [name for name in ("equalize", "bias_absorption", "mse_ranges", "adaround", "bias_correction") if getattr(self, name)]
        if algorithms and self.mode != "static":
            raise PlanError(f"{where}: quantization.{algorithms[0]} needs mode 'static' (calibrated), got {self.mode!r}")
        if self.adaround_iterations < 1 or self.adaround_samples < 16 or self.ptq_samples < 1 or self.adaround_seconds <= 0:
            raise PlanError(
                f"{where}: quantization.adaround_iterations >= 1, adaround_samples >= 16, ptq_samples >= 1 and "
                f"adaround_seconds > 0 are required, got {self.adaround_iterations}, {self.adaround_samples}, "
                f"{self.ptq_samples}, {self.adaround_seconds}"
            )
        if self.mode == "weight_only" and self.weight_type not in ("int4", "uint4", "int8", "uint8"):
            raise PlanError(f"{where}: weight_only quantization needs weight_type 'int4' or 'int8', got {self.weight_type!r}")


@dataclass(frozen=True)
class Tolerances:
    """Thresholds checked at each boundary; `None` means the figure is reported but not gated.

    `export_*` compare PyTorch with the float ONNX (a tracing bug, not a quantization loss);
    the rest compare the final model with the original PyTorch model on held-out data, each output
    by the rules for its kind (`exporter.figures.RULES`): classifiers by top-1 agreement, cosine,
    SQNR and accuracy drop; embeddings by `min_embedding_cosine` (else `min_cosine`); probabilities
    by the mean absolute error of the probabilities (`max_probability_mean_abs_error`) and, for
    sigmoid outputs, the share of decisions that agree at `decision_threshold`
    (`min_decision_agreement`). `max_abs_error` applies to every kind.
    """

    export_max_abs_error: float = 1e-4
    export_min_cosine: float = 0.99999
    min_top1_agreement: float | None = None
    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    max_abs_error: float | None = None
    max_accuracy_drop: float | None = None
    min_embedding_cosine: float | None = None
    max_probability_mean_abs_error: float | None = None
    min_decision_agreement: float | None = None
    decision_threshold: float = 0.5

    def validate(self, where: str) -> None:
        """Ranges: agreements and cosines in (0, 1], probability error and threshold in (0, 1), drop in [0, 1)."""
        for name in ("min_top1_agreement", "min_cosine", "min_embedding_cosine", "min_decision_agreement", "export_min_cosine"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise PlanError(f"{where}: tolerances.{name} must be in (0, 1], got {value}")
        for name in ("max_probability_mean_abs_error", "decision_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise PlanError(f"{where}: tolerances.{name} must be in (0, 1), got {value}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop < 1.0:
            raise PlanError(f"{where}: tolerances.max_accuracy_drop must be a fraction in [0, 1), got {self.max_accuracy_drop}")
        for name in ("max_abs_error", "export_max_abs_error"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise PlanError(f"{where}: tolerances.{name} must be positive, got {value}")


@dataclass(frozen=True)
class Target:
    """A deployment target profile: runtime, opset, shapes, quantization scheme, tolerances, packaging."""

    name: str
    description: str
    runtime: str = "onnxruntime-cpu"
    opset: int = 18
    dynamic_batch: bool = True
    needs_calibration: bool = False
    needs_fixed_shapes: bool = False
    produces: str = "model.onnx"
    quantization: QuantScheme = field(default_factory=QuantScheme)
    tolerances: Tolerances = field(default_factory=Tolerances)
    package_steps: tuple[str, ...] = ()
    arch: CpuArch = "any"  # CPU family the file is tuned for; "arm64" keeps int8 QDQ fusions in the .ort file
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the resolved plan and the report."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "Target":
        """Build a target from parsed TOML/JSON data, rejecting unknown fields and bad values."""
        data = dict(data)
        quant = _build(QuantScheme, data.pop("quantization", {}), f"{where}: [quantization]")
        tol = _build(Tolerances, data.pop("tolerances", {}), f"{where}: [tolerances]")
        data.setdefault("source", where)
        target = _build(cls, data, where, quantization=quant, tolerances=tol)
        if not 13 <= target.opset <= 23:
            raise PlanError(f"{where}: opset must be between 13 and 23, got {target.opset}")
        if target.quantization.mode == "static" and not target.needs_calibration:
            raise PlanError(f"{where}: static quantization needs calibration data: set needs_calibration = true")
        quant.validate(where)
        tol.validate(where)
        return target


def _build(cls: type, data: dict[str, Any], where: str, **fixed: Any) -> Any:
    if not isinstance(data, dict):
        raise PlanError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    unknown = sorted(set(data) - fields)
    if unknown:
        raise PlanError(f"{where}: unknown field {unknown[0]!r}; valid fields are {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {key: _check(value, hints[key], f"{where}: field {key!r}") for key, value in data.items()}
    return cls(**values, **fixed)


def _check(value: Any, annotation: Any, where: str) -> Any:
    """`value` as the field's type (`exporter.settings.coerce`: a boolean field takes only true/false)."""
    from exporter.settings import SettingTypeError, coerce

    try:
        return coerce(value, annotation, where)
    except SettingTypeError as exc:
        expected = "one of " + ", ".join(map(repr, exc.choices)) if exc.choices else exc.expected
        raise PlanError(f"{where} must be {expected}, got {value!r}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
