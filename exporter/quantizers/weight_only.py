"""Mode `weight_only`: block-wise 4-bit (or 8-bit) weights with onnxruntime's `MatMulNBitsQuantizer`.

Each `MatMul` whose second input is a constant 2-D weight becomes one `MatMulNBits` node (an
onnxruntime contrib operator): the weight is cut into blocks of `block_size` rows along the input
dimension, each block of each output column gets its own float scale (and a zero point when
asymmetric), and activations stay float. That is the standard recipe for transformer-style
models, whose size is almost all Linear weights.

What is covered, and what is not:
- `MatMul` with a constant weight: quantized (the transformer case: Linear on 3-D activations);
- `Gemm` with a constant weight (Linear on 2-D activations, e.g. a classifier head): first turned
  into `MatMul` + `Add` by onnxruntime's own `ONNXModel.replace_gemm_with_matmul`, then quantized;
- `MatMul` of two activations (attention scores): left in float, there is no weight;
- `Conv`: not covered by the n-bit quantizer and left in float32; the notes say how many weights stay float.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from exporter.errors import PlanError, QuantizationError
from exporter.quantizers.base import QuantizeInfo, QuantizeRequest, register_quantizer
from targets.profile import QuantScheme

SUPPORTED_OP_TYPES = ("Gather", "Gemm", "MatMul")
DEFAULT_OP_TYPES = ("Gemm", "MatMul")
BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8}
ACCURACY_LEVELS = {"fp32": None, "fp16": 2, "bf16": 3, "int8": 4}
"""MatMulNBits `accuracy_level`: the type activations are computed in; fp32 leaves the attribute unset (= fp32)."""


@dataclass(frozen=True)
class OrtWeightOnlyArguments:
    """The onnxruntime calls, spelled out: `MatMulNBitsQuantizer` keyword arguments and the Gemm rewrite."""

    quantizer: dict[str, Any]
    gemm_to_matmul: bool

    def to_dict(self) -> dict[str, Any]:
        """Readable form for the report (enums by name)."""
        plain = {k: (sorted(v) if isinstance(v, (set, tuple)) else getattr(v, "name", v)) for k, v in self.quantizer.items()}
        return {"MatMulNBitsQuantizer": plain, "replace_gemm_with_matmul": self.gemm_to_matmul}


def ort_weight_only_arguments(scheme: QuantScheme, nodes_to_exclude: tuple[str, ...] = ()) -> OrtWeightOnlyArguments:
    """Translate our typed `QuantScheme` into `MatMulNBitsQuantizer` arguments (the only place that knows them).

    - `weight_type` `int4`/`uint4` -> `bits=4`, `int8`/`uint8` -> `bits=8`; 16-bit types raise `PlanError`;
    - `weight_symmetric` -> `is_symmetric` (onnxruntime stores symmetric blocks without zero points);
    - `block_size` passes through (a power of two >= 16, checked by `QuantScheme.validate`);
    - `format` `qoperator` -> `MatMulNBits` nodes; `qdq` -> int4 `DequantizeLinear` + `MatMul` (4-bit only);
    - `op_types` empty -> MatMul and Gemm; `Gemm` in the list turns on the Gemm -> MatMul rewrite;
      anything outside MatMul/Gemm/Gather raises `PlanError` (Conv is not covered);
    - `accuracy_level` `fp32` -> unset (activations stay float32 inside `MatMulNBits`), `fp16` -> 2,
      `bf16` -> 3, `int8` -> 4 (activations quantized per block at run time: onnxruntime's fast CPU path);
    Activation types and calibration fields do not apply: nothing but weights is quantized.
    """
    from onnxruntime.quantization import QuantFormat

    if scheme.weight_type not in BITS:
        raise PlanError(
            f"weight-only quantization needs quantization.weight_type 'int4', 'uint4', 'int8' or 'uint8', "
            f"got {scheme.weight_type!r}"
        )
    op_types = [op for op in (scheme.op_types or DEFAULT_OP_TYPES) if op not in scheme.exclude_op_types]
    unsupported = sorted(set(op_types) - set(SUPPORTED_OP_TYPES))
    if unsupported:
        raise PlanError(
            f"weight-only quantization covers {', '.join(SUPPORTED_OP_TYPES)} (Gemm rewritten as MatMul); "
            f"quantization.op_types has {unsupported[0]!r}"
        )
    bits = BITS[scheme.weight_type]
    if scheme.format == "qdq" and bits != 4:
        raise PlanError("weight-only quantization in QDQ format is 4-bit only: set quantization.weight_type = 'int4'")
    quant_types = tuple(sorted({"MatMul" if op == "Gemm" else op for op in op_types}))
    return OrtWeightOnlyArguments(
        quantizer={
            "bits": bits,
            "block_size": scheme.block_size,
            "is_symmetric": scheme.weight_symmetric,
            "accuracy_level": ACCURACY_LEVELS[scheme.accuracy_level],
            "quant_format": QuantFormat.QOperator if scheme.format == "qoperator" else QuantFormat.QDQ,
            "op_types_to_quantize": quant_types,
            "nodes_to_exclude": list(nodes_to_exclude),
        },
        gemm_to_matmul="Gemm" in op_types,
    )


@register_quantizer("weight_only")
def quantize_weight_only(request: QuantizeRequest) -> QuantizeInfo:
    """Weight-only n-bit quantization: optional Gemm -> MatMul rewrite, then `MatMulNBitsQuantizer.process()`."""
    import onnx

    args = ort_weight_only_arguments(request.scheme, request.nodes_to_exclude)
    with _quiet_nbits():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        from onnxruntime.quantization.onnx_model import ONNXModel

        try:
            model = ONNXModel(onnx.load(str(request.float_path)))
            if args.gemm_to_matmul:
                model.replace_gemm_with_matmul()
            before = _weight_figures(model.model)
            opset_before = _default_opset(model.model)
            quantizer = MatMulNBitsQuantizer(model.model, **args.quantizer)
            quantizer.process()
            quantizer.model.save_model_to_file(str(request.out_path))
        except Exception as exc:
            raise QuantizationError(f"onnxruntime MatMulNBitsQuantizer failed: {type(exc).__name__}: {exc}") from exc
    after = _weight_figures(onnx.load(str(request.out_path)))
    covered = before["constant_matmuls"] - after["constant_matmuls"]
    settings = args.to_dict()
    settings["coverage"] = {
        "matmuls_quantized": covered,
        "matmuls_left_float": after["constant_matmuls"],
        "conv_weights_left_float": after["conv_weights"],
        "float_weights_before": before["float_weights"],
        "float_weights_after": after["float_weights"],
    }
    notes = []
    if after["conv_weights"]:
        notes.append(
            f"{after['conv_weights']:,} Conv weights stay float32: onnxruntime's n-bit quantizer covers "
            "MatMul/Gemm weights only"
        )
    if after["constant_matmuls"]:
        notes.append(f"{after['constant_matmuls']} MatMul(s) with a constant weight were not quantized (excluded or not 2-D)")
    opset_after = _default_opset(onnx.load(str(request.out_path), load_external_data=False))
    if opset_after != opset_before:
        notes.append(f"int4 DequantizeLinear needs opset 21: onnxruntime raised the model's opset from {opset_before} to {opset_after}")
    if request.make_reader is not None:
        notes.append("weight-only quantization needs no calibration data; the calibration set was not used")
    return QuantizeInfo(mode="weight_only", settings=settings, notes=notes)


def _default_opset(model) -> int:
    """The model's ai.onnx opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _weight_figures(model) -> dict[str, int]:
    """Counts of constant-weight MatMul/Gemm nodes, Conv weight elements and float weight elements."""
    import numpy as np
    from onnx import TensorProto

    inits = {init.name: init for init in model.graph.initializer}
    float_types = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    constant_matmuls = sum(
        1 for node in model.graph.node if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits
    )
    conv_weights = sum(
        int(np.prod(inits[node.input[1]].dims))
        for node in model.graph.node
        if node.op_type == "Conv" and node.input[1] in inits and inits[node.input[1]].data_type in float_types
    )
    float_weights = sum(int(np.prod(init.dims)) for init in inits.values() if init.data_type in float_types)
    return {"constant_matmuls": constant_matmuls, "conv_weights": conv_weights, "float_weights": float_weights}


@contextlib.contextmanager
def _quiet_nbits() -> Iterator[None]:
    """The n-bit quantizer calls `logging.basicConfig(level=INFO)` on import and logs every node.

    Keep the root logger as the user had it (handlers and level) and silence the module's logger.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    nbits = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    nbits_level = nbits.level
    nbits.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        nbits.setLevel(nbits_level)
