"""Mode `dynamic`: onnxruntime's `quantize_dynamic` (int8 weights, activations quantized at run time).

Weights are quantized once, offline; each activation is quantized by a `DynamicQuantizeLinear`
node from its own min/max on every run, so no calibration data is needed and no fixed activation
range can clip an outlier. This suits transformer encoders and recurrent nets, whose activation
ranges vary from input to input. onnxruntime writes integer operators (`MatMulInteger`,
`ConvInteger`, `DynamicQuantizeLinear`, quantized `LSTM`/`Attention`) and turns `Gemm` with a
constant weight into `MatMul` + `Add` first, so Linear layers are covered too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.errors import PlanError, QuantizationError
from exporter.quantizers.base import QuantizeInfo, QuantizeRequest, register_quantizer
from exporter.quantizers.static import preprocess_for_quantization
from exporter.quiet import quiet_onnxruntime
from targets.profile import QuantScheme


@dataclass(frozen=True)
class OrtDynamicArguments:
    """Keyword arguments for `onnxruntime.quantization.quantize_dynamic`, spelled out."""

    quantize: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Readable form for the report (enums by name)."""
        plain = {k: (getattr(v, "name", v) if not isinstance(v, (list, dict)) else v) for k, v in self.quantize.items()}
        return {"quantize_dynamic": plain}


def ort_dynamic_arguments(scheme: QuantScheme, nodes_to_exclude: tuple[str, ...] = ()) -> OrtDynamicArguments:
    """Translate our typed `QuantScheme` into `quantize_dynamic` arguments (the only place that knows them).

    - `weight_type` `int8` / `uint8` -> `QuantType.QInt8` / `QUInt8`; other widths raise `PlanError`;
    - `activation_type` must be `uint8`: `DynamicQuantizeLinear` only produces uint8;
    - `op_types` empty -> every op `quantize_dynamic` knows (`IntegerOpsRegistry`), minus `exclude_op_types`;
    - `per_channel`, `reduce_range` pass through; `weight_symmetric` -> extra_options `WeightSymmetric`;
    - `MatMulConstBOnly` stays on: a MatMul of two activations (attention scores) stays float.
    `format` and the calibration fields do not apply (there is no QDQ form of dynamic quantization).
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    weight_types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if scheme.weight_type not in weight_types:
        raise PlanError(
            f"dynamic quantization needs quantization.weight_type 'int8' or 'uint8', got {scheme.weight_type!r}"
        )
    if scheme.activation_type != "uint8":
        raise PlanError(
            "dynamic quantization computes uint8 activations at run time (DynamicQuantizeLinear): "
            f"set quantization.activation_type = 'uint8', got {scheme.activation_type!r}"
        )
    op_types = list(scheme.op_types) or sorted(IntegerOpsRegistry)
    op_types = [op for op in op_types if op not in scheme.exclude_op_types]
    return OrtDynamicArguments(
        quantize={
            "op_types_to_quantize": op_types,
            "per_channel": scheme.per_channel,
            "reduce_range": scheme.reduce_range,
            "weight_type": weight_types[scheme.weight_type],
            "nodes_to_exclude": list(nodes_to_exclude),
            "extra_options": {"WeightSymmetric": scheme.weight_symmetric, "MatMulConstBOnly": True},
        }
    )


@register_quantizer("dynamic")
def quantize_dynamic_model(request: QuantizeRequest) -> QuantizeInfo:
    """Dynamic quantization: onnxruntime's pre-processing, then `quantize_dynamic`; no calibration data."""
    from onnxruntime.quantization import quantize_dynamic

    args = ort_dynamic_arguments(request.scheme, request.nodes_to_exclude)
    prepared = request.work_dir / "preprocessed.onnx"
    notes = preprocess_for_quantization(request.float_path, prepared)
    try:
        with quiet_onnxruntime():
            quantize_dynamic(str(prepared), str(request.out_path), **args.quantize)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime quantize_dynamic failed: {type(exc).__name__}: {exc}") from exc
    if request.make_reader is not None:
        notes.append("dynamic quantization needs no calibration data; the calibration set was not used")
    return QuantizeInfo(mode="dynamic", settings=args.to_dict(), notes=notes)
