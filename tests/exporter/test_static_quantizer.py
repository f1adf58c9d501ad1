"""The static quantizer: the typed-settings -> onnxruntime mapping, and calibration methods that really differ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

from calibration import ListSampleSet, OrtCalibrationReader, Sample
from exporter.inputs import InputSpec
from exporter.quantizers import QuantizeRequest, quantize_model
from exporter.quantizers.static import ENTROPY_BINS, ort_static_arguments
from targets import get_target


def test_cpu_int8_maps_to_onnxruntime_arguments():
    args = ort_static_arguments(get_target("cpu-int8").quantization, nodes_to_exclude=("conv_1",))
    q = args.quantize
    assert q["quant_format"] is QuantFormat.QDQ
    assert q["per_channel"] is True
    assert q["activation_type"] is QuantType.QUInt8 and q["weight_type"] is QuantType.QInt8
    assert q["calibrate_method"] is CalibrationMethod.MinMax
    assert q["nodes_to_exclude"] == ["conv_1"]
    assert q["extra_options"] == {"ActivationSymmetric": False, "WeightSymmetric": True}
    assert {"Conv", "MatMul", "Gemm"} <= set(q["op_types_to_quantize"])
    assert args.calibrator["extra_options"] == {"symmetric": False}
    assert args.to_dict()["quantize_static"]["activation_type"] == "QUInt8"


def test_scheme_fields_each_change_the_arguments():
    base = get_target("cpu-int8").quantization
    arm = dataclasses.replace(base, activation_type="int8", activation_symmetric=True, reduce_range=False,
                              calibration_method="entropy", exclude_op_types=("Gemm",), format="qoperator")
    args = ort_static_arguments(arm)
    assert args.quantize["activation_type"] is QuantType.QInt8
    assert args.quantize["extra_options"]["ActivationSymmetric"] is True
    assert args.quantize["reduce_range"] is False
    assert args.quantize["quant_format"] is QuantFormat.QOperator
    assert "Gemm" not in args.quantize["op_types_to_quantize"]
    assert args.calibrator["calibrate_method"] is CalibrationMethod.Entropy
    assert args.calibrator["extra_options"]["num_bins"] == ENTROPY_BINS
    percentile = ort_static_arguments(dataclasses.replace(base, calibration_method="percentile", percentile=99.9))
    assert percentile.calibrator["extra_options"]["percentile"] == 99.9


@pytest.fixture(scope="module")
def heavy_tailed_model(tmp_path_factory) -> tuple[Path, ListSampleSet]:
    """A Conv -> Relu -> MatMul graph, and heavy-tailed calibration data where range methods disagree."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w")
    m = numpy_helper.from_array(rng.standard_normal((8 * 8 * 8, 10)).astype(np.float32), "m")
    shape = numpy_helper.from_array(np.array([-1, 8 * 8 * 8], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
            helper.make_node("MatMul", ["f", "m"], ["output"], name="fc"),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        [w, m, shape],
    )
    path = tmp_path_factory.mktemp("q") / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    samples = ListSampleSet([Sample({"input": (rng.standard_normal((1, 8, 8)) ** 3).astype(np.float32)}) for _ in range(64)])
    return path, samples


def _input_scale(method: str, model: tuple[Path, ListSampleSet], tmp_path: Path) -> float:
    path, samples = model
    specs = [InputSpec("input", (1, 1, 8, 8))]
    # mse_ranges off: this measures the calibration method's own ranges (cpu-int8 refines MinMax by MSE)
    scheme = dataclasses.replace(get_target("cpu-int8").quantization, calibration_method=method, mse_ranges=False)
    work = tmp_path / method
    work.mkdir()
    info = quantize_model(QuantizeRequest(path, work / "q.onnx", scheme, specs, work,
                                          make_reader=lambda: OrtCalibrationReader(samples, specs, batch_size=4)))
    assert info.calibration_batches == 16
    assert info.op_counts["QuantizeLinear"] >= 3
    graph = onnx.load(str(work / "q.onnx")).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    (q,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    return float(inits[q.input[1]])


def test_calibration_methods_really_change_the_ranges(heavy_tailed_model, tmp_path):
    minmax = _input_scale("minmax", heavy_tailed_model, tmp_path)
    entropy = _input_scale("entropy", heavy_tailed_model, tmp_path)
    percentile = _input_scale("percentile", heavy_tailed_model, tmp_path)
    _, samples = heavy_tailed_model
    data = np.stack([s.inputs["input"] for s in samples])
    assert minmax == pytest.approx((data.max() - data.min()) / 255, rel=1e-4)
    # Entropy clips the heavy tail hard; percentile 99.999 clips a little.
    assert entropy < 0.6 * minmax
    assert percentile < minmax and percentile != entropy


def test_static_without_calibration_data_is_a_clear_error(heavy_tailed_model, tmp_path):
    from exporter.errors import CalibrationError

    path, _ = heavy_tailed_model
    request = QuantizeRequest(path, tmp_path / "q.onnx", get_target("cpu-int8").quantization, [], tmp_path)
    with pytest.raises(CalibrationError, match="static quantization needs calibration data: pass --calib PATH"):
        quantize_model(request)
