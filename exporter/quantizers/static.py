"""Mode `static`: onnxruntime's pre-processing, our own calibration, then `quantize_static`.

Histogram methods (Entropy, Percentile) stack every batch's outputs, so they get batches of one
size (`UniformBatchReader`); a shorter last batch would make onnxruntime fail.

Why calibrate ourselves: `quantize_static` passes no histogram size to its calibrators, so its
Entropy calibrator runs with 128 bins and 128 quantized bins, leaves a single candidate threshold
(the full range) and returns scales identical to MinMax. We build the calibrator with
`create_calibrator` and proper bin counts, save the ranges with onnxruntime's calibration-cache
format and hand that cache to `quantize_static`; the cache is kept as `calibration.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from calibration.uniform_reader import UniformBatchReader
from exporter.quiet import quiet_onnxruntime
from exporter.errors import CalibrationError, QuantizationError
from exporter.quantizers.base import QuantizeInfo, QuantizeRequest, register_quantizer
from targets.profile import QuantScheme

PTQ_REFERENCE = "ptq_reference.onnx"
"""Beside the quantized file: the float model after equalization, before AdaRound and bias correction."""
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
HISTOGRAM_BINS = 2048


@dataclass(frozen=True)
class OrtStaticArguments:
    """The onnxruntime call, spelled out: keyword arguments for `create_calibrator` and `quantize_static`."""

    calibrator: dict[str, Any]
    quantize: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Readable form for the report (enums by name)."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return getattr(value, "name", value)

        return {"calibrator": plain(self.calibrator), "quantize_static": plain(self.quantize)}


def ort_static_arguments(scheme: QuantScheme, nodes_to_exclude: tuple[str, ...] = ()) -> OrtStaticArguments:
    """Translate our typed `QuantScheme` into onnxruntime's arguments (the only place that knows them).

    - types: `int8`/`uint8`/`int16`/`uint16`/`int4`/`uint4` -> `QuantType.Q*`;
    - `activation_symmetric` / `weight_symmetric` -> extra_options `ActivationSymmetric` / `WeightSymmetric`,
      and the calibrator's `symmetric` range for activations;
    - `calibration_method` -> `CalibrationMethod`, with histogram sizes that make Entropy and
      Percentile differ from MinMax (see the module docstring);
    - `op_types` empty -> onnxruntime's default op list; `exclude_op_types` removes ops from it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    types = {
        "int8": QuantType.QInt8,
        "uint8": QuantType.QUInt8,
        "int16": QuantType.QInt16,
        "uint16": QuantType.QUInt16,
        "int4": QuantType.QInt4,
        "uint4": QuantType.QUInt4,
    }
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }
    op_types = list(scheme.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    op_types = [op for op in op_types if op not in scheme.exclude_op_types]
    calibrator_options: dict[str, Any] = {"symmetric": scheme.activation_symmetric}
    if scheme.calibration_method == "entropy":
        calibrator_options.update(num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif scheme.calibration_method in ("percentile", "distribution"):
        calibrator_options.update(num_bins=HISTOGRAM_BINS, percentile=scheme.percentile)
    method = methods[scheme.calibration_method]
    return OrtStaticArguments(
        calibrator={"calibrate_method": method, "op_types_to_calibrate": op_types, "extra_options": calibrator_options},
        quantize={
            "quant_format": QuantFormat.QDQ if scheme.format == "qdq" else QuantFormat.QOperator,
            "per_channel": scheme.per_channel,
            "reduce_range": scheme.reduce_range,
            "activation_type": types[scheme.activation_type],
            "weight_type": types[scheme.weight_type],
            "calibrate_method": method,
            "op_types_to_quantize": op_types,
            "nodes_to_exclude": list(nodes_to_exclude),
            "extra_options": {
                "ActivationSymmetric": scheme.activation_symmetric,
                "WeightSymmetric": scheme.weight_symmetric,
            },
        },
    )


def preprocess_for_quantization(float_path: Path, out_path: Path) -> list[str]:
    """onnxruntime's `quant_pre_process` (symbolic shapes, graph optimization, shapes); returns notes.

    Symbolic shape inference fails on some graphs; then it is retried without it, and the note says so.
    """
    from onnxruntime.quantization import quant_pre_process

    notes: list[str] = []
    try:
        with quiet_onnxruntime():
            quant_pre_process(str(float_path), str(out_path))
    except Exception as exc:
        notes.append(f"pre-processing without symbolic shape inference ({type(exc).__name__}: {exc})"[:300])
        try:
            with quiet_onnxruntime():
                quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=True)
        except Exception as exc2:
            raise QuantizationError(f"onnxruntime quantization pre-processing failed: {exc2}") from exc2
    return notes


def calibrate_ranges(model_path: Path, reader: Any, args: OrtStaticArguments, cache_path: Path) -> int:
    """Collect activation ranges over `reader` and save them in onnxruntime's calibration-cache format.

    One batch is held at a time and statistics merge batch by batch (`calibration.statistics`), so
    memory does not grow with the sample count; a reader whose rendezvous asks for several processes
    is sharded over torchrun workers (`calibration.sharding`). Returns the number of calibration
    batches seen. Raises `CalibrationError` for no data.
    """
    from onnxruntime.quantization.calibrate import save_tensors_data

    from calibration.sharding import collect_ranges_sharded, sharding_of
    from calibration.statistics import collect_ranges

    sharded = sharding_of(reader)
    try:
        if sharded is not None:
            outcome = collect_ranges_sharded(model_path, sharded, args.calibrator, cache_path.parent / "calibration-shards")
        else:
            outcome = collect_ranges(model_path, reader, args.calibrator, cache_path.parent / "calibration")
    except CalibrationError:
        raise
    except ValueError as exc:
        raise QuantizationError(f"onnxruntime calibration failed: {exc}") from exc
    save_tensors_data(outcome.ranges, cache_path)
    return outcome.batches


@register_quantizer("static")
def quantize_static_model(request: QuantizeRequest) -> QuantizeInfo:
    """Static quantization: pre-process, optional PTQ algorithms, calibrate, then `quantize_static` with the cache.

    With any of the scheme's PTQ fields on (`exporter.ptq.steps`): equalization and AdaRound change
    the pre-processed float model before calibration, MSE range selection rewrites the cache, and
    bias correction re-quantizes from the same cache. The float model handed to `quantize_static`
    is kept as `ptq_float.onnx` in the work folder (`QuantizeInfo.quantized_from`), so a re-quantization
    with other float nodes starts from the same optimised weights and cache.
    """
    from exporter.ptq.steps import after_quantization, before_calibration, refine_ranges, wants_ptq

    if request.make_reader is None:
        raise CalibrationError("static quantization needs calibration data: pass --calib PATH")
    scheme = request.scheme
    args = ort_static_arguments(scheme, request.nodes_to_exclude)
    prepared = request.work_dir / "preprocessed.onnx"
    notes = preprocess_for_quantization(request.float_path, prepared)
    from exporter.ptq.transformer import quantize_transformer_request  # transformer encoders: exporter/ptq/transformer.py

    transformer_info = quantize_transformer_request(request, prepared, notes)
    if transformer_info is not None:
        return transformer_info
    state = None
    source = prepared
    if wants_ptq(scheme):
        state = before_calibration(prepared, request.make_reader(), scheme, request.nodes_to_exclude)
        onnx.save(state.reference, str(request.work_dir / PTQ_REFERENCE))  # the equalized float model (float layers of a mix)
        source = request.work_dir / "ptq_float.onnx"
        onnx.save(state.graph.model, str(source))
    cache = request.work_dir / "calibration.json"
    cache.unlink(missing_ok=True)
    # MSE range selection starts from MinMax ranges; a calibration method chosen explicitly
    # (entropy, percentile) is the user's choice of ranges and is kept as it is.
    mse = scheme.mse_ranges and scheme.calibration_method == "minmax"
    if scheme.mse_ranges and not mse:
        notes.append(f"mse_ranges skipped: calibration method {scheme.calibration_method!r} sets the ranges")
    reader = request.make_reader() if scheme.calibration_method == "minmax" else UniformBatchReader(request.make_reader)
    batches = calibrate_ranges(source, reader, args, cache)
    if state is not None and mse:
        refine_ranges(state, cache, scheme)
    quantize_from_cache(source, request.out_path, cache, args)
    if state is not None and scheme.bias_correction:
        scratch = request.work_dir / "bias_correction.onnx"

        def quantize(model: onnx.ModelProto) -> onnx.ModelProto:
            onnx.save(model, str(source))
            quantize_from_cache(source, scratch, cache, args)
            return onnx.load(str(scratch))

        after_quantization(state, quantize)
        onnx.save(state.graph.model, str(source))
        quantize_from_cache(source, request.out_path, cache, args)
    return QuantizeInfo(
        mode="static",
        settings=args.to_dict(),
        calibration_batches=batches,
        notes=notes + (state.log.notes if state is not None else []),
        ptq_log=state.log if state is not None else None,
        quantized_from=str(source),
        calibration_cache=str(cache),
    )


def quantize_from_cache(source: Path, out: Path, cache: Path, args: OrtStaticArguments) -> None:
    """`quantize_static` of the float model `source` with the ranges of calibration cache `cache`.

    Re-quantizing with other float nodes (the accuracy search) should start from
    `QuantizeInfo.quantized_from` and `.calibration_cache`, with `ort_static_arguments(scheme, nodes)`,
    so the PTQ algorithms' weights, biases and ranges are kept without running them again.
    """
    from onnxruntime.quantization import quantize_static

    try:
        with quiet_onnxruntime():
            quantize_static(str(source), str(out), calibration_data_reader=None, calibration_cache_path=str(cache), **args.quantize)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime quantize_static failed: {type(exc).__name__}: {exc}") from exc
