"""`iter_batches` and `OrtCalibrationReader`, including a real `quantize_static` run."""

from __future__ import annotations

import copy
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from calibration import ListSampleSet, OrtCalibrationReader, Sample, iter_batches
from exporter.errors import CalibrationError, PlanError
from exporter.inputs import InputSpec
from exporter.progress import set_progress

SPEC = InputSpec("input", (1, 3, 8, 8), "float32")


def image_set(count: int, labels: bool = True, seed: int = 0) -> tuple[ListSampleSet, np.ndarray]:
    data = np.random.default_rng(seed).standard_normal((count, 3, 8, 8)).astype(np.float32)
    samples = [Sample({"pixels": data[i]}, label=i % 4 if labels else None, origin=f"s{i}") for i in range(count)]
    return ListSampleSet(samples, description="images"), data


def test_iter_batches_shapes_labels_and_indices():
    samples, data = image_set(7)
    batches = list(iter_batches(samples, [SPEC], batch_size=3))
    assert [b.inputs["input"].shape for b in batches] == [(3, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)]
    assert [b.indices for b in batches] == [(0, 1, 2), (3, 4, 5), (6,)]
    np.testing.assert_array_equal(np.concatenate([b.inputs["input"] for b in batches]), data)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), [0, 1, 2, 3, 0, 1, 2])
    assert all(b.labels.dtype == np.int64 for b in batches)


def test_no_labels_array_unless_every_sample_has_one():
    samples, _ = image_set(3, labels=False)
    assert all(b.labels is None for b in iter_batches(samples, [SPEC], 2))
    mixed = ListSampleSet([Sample({"x": np.zeros((3, 8, 8))}, label=1), Sample({"x": np.zeros((3, 8, 8))})])
    assert not mixed.has_labels
    assert [b.labels for b in iter_batches(mixed, [SPEC], 1)] == [None, None]


def test_iter_batches_bad_sample_and_batch_size():
    samples, data = image_set(3)
    bad = list(samples)
    bad[2] = Sample({"pixels": np.zeros((3, 7, 8), np.float32)}, origin="odd.npy")
    message = "calibration sample 2 (odd.npy): input 'input' has shape (3, 7, 8)"
    with pytest.raises(CalibrationError, match=re.escape(message)):
        list(iter_batches(ListSampleSet(bad), [SPEC], 2))
    with pytest.raises(PlanError, match=re.escape("bad batch size 0: expected a positive integer")):
        next(iter_batches(samples, [SPEC], 0))


def test_reader_protocol_rewind_and_range():
    samples, data = image_set(5)
    reader = OrtCalibrationReader(samples, [SPEC], batch_size=2)
    assert isinstance(reader, CalibrationDataReader)
    assert len(reader) == 3
    first = [reader.get_next() for _ in range(3)]
    assert reader.get_next() is None and reader.get_next() is None
    assert [list(b) for b in first] == [["input"]] * 3
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in first]), data)
    reader.rewind()
    again = list(reader)
    assert len(again) == 3
    for one, two in zip(first, again):
        np.testing.assert_array_equal(one["input"], two["input"])
    reader.set_range(start_index=1, end_index=2)
    ranged = list(reader)
    assert len(ranged) == 1
    np.testing.assert_array_equal(ranged[0]["input"], data[2:4])
    reader.set_range(2, 99)
    np.testing.assert_array_equal(reader.get_next()["input"], data[4:5])
    assert reader.get_next() is None


def test_reader_progress_bar_closes_and_reader_deep_copies():
    samples, data = image_set(4)
    set_progress(True)
    try:
        reader = OrtCalibrationReader(samples, [SPEC], batch_size=2, desc="calibrating")
        assert reader.get_next() is not None
        assert reader._bar is not None
        copied = copy.deepcopy(reader)
        assert copied._bar is None
        assert reader.get_next() is not None and reader.get_next() is None
        assert reader._bar is None
    finally:
        set_progress(None)
    np.testing.assert_array_equal(copied.get_next()["input"], data[2:4])


def test_reader_checks_keys_when_built():
    samples = ListSampleSet([Sample({"a": np.zeros(1), "b": np.zeros(1)})], description="two")
    with pytest.raises(CalibrationError, match=re.escape("calibration data two (1 samples) has keys ['a', 'b']")):
        OrtCalibrationReader(samples, [SPEC])


def tiny_conv_model(path) -> np.ndarray:
    """input (N, 3, 8, 8) -> Conv 3x3 with 4 filters -> Relu -> output (N, 4, 6, 6); returns the weights."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    bias = rng.standard_normal(4).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "weight", "bias"], ["conv"], name="conv"),
            helper.make_node("Relu", ["conv"], ["output"], name="relu"),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, 6, 6])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weight


def test_quantize_static_with_the_reader_and_run_the_result(tmp_path):
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    tiny_conv_model(float_path)
    samples, data = image_set(16)
    reader = OrtCalibrationReader(samples, [SPEC], batch_size=4)
    quantize_static(
        str(float_path),
        str(int8_path),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    ops = [node.op_type for node in onnx.load(str(int8_path)).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 3
    assert "Conv" in ops
    batch = data[:4]
    expected = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]
    got = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]
    assert got.shape == (4, 4, 6, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=0.05)
    reader.rewind()
    assert len(list(reader)) == 4


def test_strided_calibration_uses_set_range(tmp_path):
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    tiny_conv_model(float_path)
    samples, _ = image_set(8)
    reader = OrtCalibrationReader(samples, [SPEC], batch_size=2)
    quantize_static(str(float_path), str(int8_path), reader, extra_options={"CalibStridedMinMax": 2})
    assert int8_path.exists()


def test_bad_sample_raises_from_inside_quantize_static(tmp_path):
    float_path = tmp_path / "float.onnx"
    tiny_conv_model(float_path)
    samples, data = image_set(4)
    poisoned = data[3].copy()
    poisoned[0, 0, 0] = np.nan
    bad = ListSampleSet([*list(samples)[:3], Sample({"pixels": poisoned}, origin="calib.npz[3]")])
    with pytest.raises(
        CalibrationError,
        match=re.escape("calibration sample 3 (calib.npz[3]): input 'input' contains NaN or Inf values"),
    ):
        quantize_static(str(float_path), str(tmp_path / "int8.onnx"), OrtCalibrationReader(bad, [SPEC], batch_size=2))
