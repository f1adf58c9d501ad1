"""Re-quantization for the float fallback: one calibration cache per method, a float set per trial.

Calibration runs once per method and is kept as an onnxruntime calibration cache; every trial
re-quantizes from the cache with its own float set. The `PER_TENSOR` method is a mix of the caches
computed so far: for each activation, the range with the lowest quantize-dequantize error on the
calibration data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from calibration.uniform_reader import UniformBatchReader
from exporter.accuracy.modules import node_module_map
from exporter.quiet import quiet_onnxruntime
from targets.profile import QuantScheme

if TYPE_CHECKING:
    from exporter.accuracy.fallback import FallbackRequest

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
PER_TENSOR = "per_tensor"
MIX_SAMPLES = 64


class Requantizer:
    """Re-quantizes the float model with a calibration method and a set of float nodes.

    Static mode: pre-processing once, calibration once per method (kept as onnxruntime calibration
    caches), then `quantize_static` from the cache for each trial, with the same translation of
    the scheme as the static quantizer (`ort_static_arguments`). Other modes go through
    `quantize_model` with `nodes_to_exclude`.
    """

    def __init__(self, request: FallbackRequest, work_dir: Path) -> None:
        self.request = request
        self.work_dir = work_dir
        self.static = request.scheme.mode == "static"
        self.caches: dict[str, Path] = {}
        self.mix_note = ""
        self._prepared: Path | None = None
        self._modules: dict[str, str] | None = None
        self._ops: dict[str, str] | None = None

    @property
    def prepared(self) -> Path:
        """The float model after onnxruntime's pre-processing (what the quantizer actually reads)."""
        if self._prepared is None:
            from exporter.quantizers.static import preprocess_for_quantization

            path = self.work_dir / "preprocessed.onnx"
            preprocess_for_quantization(Path(self.request.float_path), path)
            self._prepared = path
        return self._prepared

    def module_of(self, node: str) -> str:
        """The PyTorch module path of `node` ("" when the export recorded none)."""
        if self._modules is None:
            self._modules = node_module_map(self.prepared)
        return self._modules.get(node, "")

    def op_of(self, node: str) -> str:
        """The op type of `node` in the pre-processed model ("" when it is not there)."""
        if self._ops is None:
            model = onnx.load(str(self.prepared), load_external_data=False)
            self._ops = {n.name: n.op_type for n in model.graph.node}
        return self._ops.get(node, "")

    def weight_bytes(self) -> dict[str, tuple[int, int]]:
        """Per node: (float bytes of its weights, bytes saved by int8) — what keeping it float costs."""
        model = onnx.load(str(self.prepared), load_external_data=False)
        inits = {init.name: init for init in model.graph.initializer}
        result = {}
        for node in model.graph.node:
            total = saved = 0
            for name in node.input:
                init = inits.get(name)
                if init is None:
                    continue
                size = int(np.prod(init.dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
                total += size
                if len(init.dims) >= 2:  # weights go to 8 bits; biases to int32 (no saving)
                    saved += size - int(np.prod(init.dims))
            result[node.name] = (total, saved)
        return result

    def quantize(self, method: str, excluded: list[str], out: Path, number: int) -> tuple[list[str], list[str]]:
        """Quantize with `excluded` in float and pin them float for run time (`exporter.accuracy.pin`);
        returns the float set and the layers pinned."""
        from exporter.accuracy.pin import pin_float_layers, runtime_requantized

        self._quantize_once(method, excluded, out, number)
        model = onnx.load(str(out))
        pinned = pin_float_layers(model, runtime_requantized(model, set(excluded)))
        if pinned:
            onnx.save(model, str(out))
        return list(excluded), pinned

    def _quantize_once(self, method: str, excluded: list[str], out: Path, number: int) -> None:
        if not self.static:
            from exporter.quantizers import QuantizeRequest, quantize_model

            scratch = self.work_dir / f"trial_{number:02d}_work"
            scratch.mkdir(exist_ok=True)
            quantize_model(
                QuantizeRequest(
                    float_path=Path(self.request.float_path),
                    out_path=out,
                    scheme=self.request.scheme,
                    input_specs=self.request.input_specs,
                    work_dir=scratch,
                    make_reader=self.request.make_reader,
                    nodes_to_exclude=tuple(excluded),
                )
            )
            return
        self._quantize_static(method, excluded, out, qdq=False)

    def analysis_model(self, base: dict, out: Path) -> Path:
        """A QDQ model of the base trial for the sensitivity analysis (the trial itself when it is QDQ)."""
        if self.static and (self.request.scheme.format != "qdq" or not base["path"] or not Path(base["path"]).exists()):
            self._quantize_static(base["calibration"], base["excluded"], out, qdq=True)
            return out
        return Path(base["path"])

    def _quantize_static(self, method: str, excluded: list[str], out: Path, qdq: bool) -> None:
        from onnxruntime.quantization import QuantFormat, quantize_static

        from exporter.errors import QuantizationError
        from exporter.quantizers.static import ort_static_arguments

        cache = self.cache(method)
        args_method = "minmax" if method == PER_TENSOR else method
        scheme = dataclasses.replace(self.request.scheme, calibration_method=args_method)
        arguments = dict(ort_static_arguments(scheme, tuple(excluded)).quantize)
        if qdq:
            arguments["quant_format"] = QuantFormat.QDQ
        try:
            with quiet_onnxruntime():
                quantize_static(
                    str(self.prepared), str(out), calibration_data_reader=None, calibration_cache_path=str(cache), **arguments
                )
        except Exception as exc:
            raise QuantizationError(f"onnxruntime quantize_static failed: {type(exc).__name__}: {exc}") from exc

    def cache(self, method: str) -> Path:
        """The calibration cache for `method` (computed on first use)."""
        if method in self.caches:
            return self.caches[method]
        path = self.work_dir / f"calibration.{method}.json"
        path.unlink(missing_ok=True)
        if method == PER_TENSOR:
            self._mix_cache(path)
        else:
            from exporter.quantizers.static import calibrate_ranges, ort_static_arguments

            scheme = dataclasses.replace(self.request.scheme, calibration_method=method)
            reader = self.request.make_reader() if method == "minmax" else UniformBatchReader(self.request.make_reader)
            calibrate_ranges(self.prepared, reader, ort_static_arguments(scheme), path)
        self.caches[method] = path
        return path

    def _mix_cache(self, path: Path) -> None:
        """Per tensor, the range (MinMax / Entropy / Percentile) with the lowest quantize-dequantize
        error on the calibration data (at most `MIX_SAMPLES` samples); saved as a MinMax cache."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, load_tensors_data, save_tensors_data

        # The methods calibrated so far (MinMax always: it is cheap), so the mix costs no new calibration.
        available = [m for m in CALIBRATION_METHODS if m in self.caches or m == "minmax"]
        ranges = {m: load_tensors_data(self.cache(m)).data for m in available}
        errors = _range_errors(self.prepared, self.request.make_reader(), ranges, self.request.scheme, self.work_dir)
        chosen: dict[str, TensorData] = {}
        counts = {m: 0 for m in available}
        own = self.request.scheme.calibration_method
        for name in ranges["minmax"]:
            per_method = {m: e for m, e in errors.get(name, {}).items() if name in ranges[m]}
            method = own if own in ranges else "minmax"
            if per_method:
                method = min(per_method, key=lambda m: (per_method[m], m != own))
            low, high = ranges[method][name].range_value
            chosen[name] = TensorData(lowest=np.asarray(low, dtype=np.float32), highest=np.asarray(high, dtype=np.float32))
            counts[method] += 1
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, chosen), path)
        self.mix_note = ", ".join(f"{n} {m}" for m, n in counts.items() if n)


def _range_errors(model_path: Path, reader: Any, ranges: dict[str, dict], scheme: QuantScheme, work_dir: Path) -> dict[str, dict[str, float]]:
    """Mean squared quantize-dequantize error of each calibrated tensor under each method's range."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = getattr(onnx.TensorProto, scheme.activation_type.upper())
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=scheme.activation_symmetric)
    params: dict[str, dict[str, tuple[float, float]]] = {}
    for method, data in ranges.items():
        for name, tensor in data.items():
            low, high = (np.asarray(v, dtype=np.float32).reshape(-1)[0] for v in tensor.range_value)
            zero, scale = compute_scale_zp(low, high, qmin, qmax, scheme.activation_symmetric)
            params.setdefault(name, {})[method] = (float(np.asarray(scale).reshape(-1)[0]), float(np.asarray(zero).reshape(-1)[0]))
    augmented = work_dir / "calibration_mix_augmented.onnx"
    with quiet_onnxruntime():
        modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    suffix = "_ReshapedSavedOutput"
    sums: dict[str, dict[str, float]] = {}
    seen = 0
    while seen < MIX_SAMPLES:
        batch = reader.get_next()
        if batch is None:
            break
        seen += len(next(iter(batch.values())))
        for name, value in zip(names, session.run(None, batch)):
            tensor = name[: -len(suffix)] if name.endswith(suffix) else name
            if tensor not in params:
                continue
            x = np.asarray(value, dtype=np.float64)
            for method, (scale, zero) in params[tensor].items():
                q = np.clip(np.round(x / scale) + zero, float(qmin), float(qmax))
                error = float(np.sum(((q - zero) * scale - x) ** 2))
                sums.setdefault(tensor, {}).setdefault(method, 0.0)
                sums[tensor][method] += error
    return sums
