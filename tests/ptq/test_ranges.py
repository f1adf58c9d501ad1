"""MSE range selection clips a heavy-tailed tensor and keeps a uniform one's full range."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper

from exporter.ptq.ranges import choose_ranges
from exporter.ptq.records import PtqLog
from targets import get_target


def _identity_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="copy")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1000])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1000])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _chosen(values: np.ndarray) -> tuple[tuple[float, float], PtqLog]:
    scheme = dataclasses.replace(get_target("cpu-int8").quantization, mse_ranges=True)
    log = PtqLog()
    minmax = {"y": (float(values.min()), float(values.max()))}
    ranges = choose_ranges(_identity_model(), minmax, [{"x": values}], scheme, log)
    return ranges["y"], log


def _fake_quant_mse(values: np.ndarray, low: float, high: float) -> float:
    """The true error of onnxruntime's uint8 quantize-dequantize with range [low, high]."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(onnx.TensorProto.UINT8)
    zero, scale = compute_scale_zp(np.float32(low), np.float32(high), qmin, qmax, False)
    zero, scale = float(zero), float(scale)
    return float(np.mean(((np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale - values) ** 2))


def test_heavy_tailed_tensor_gets_a_clipped_range():
    values = np.random.default_rng(0).standard_t(df=3, size=(64, 1000)).astype(np.float32)
    (low, high), log = _chosen(values)
    assert high < 0.95 * values.max() and low > 0.95 * values.min()
    (record,) = log.records
    assert record.node == "copy" and record.tensor == "y" and record.candidate != "minmax"
    assert _fake_quant_mse(values, low, high) < 0.92 * _fake_quant_mse(values, values.min(), values.max())


def test_relu_tensor_zeros_do_not_pull_the_range_in():
    values = np.maximum(np.random.default_rng(2).laplace(size=(64, 1000)), 0).astype(np.float32)
    (low, high), _ = _chosen(values)
    assert _fake_quant_mse(values, low, high) <= _fake_quant_mse(values, 0.0, values.max())


def test_uniform_tensor_keeps_its_full_range():
    values = np.random.default_rng(1).uniform(-1, 3, size=(64, 1000)).astype(np.float32)
    (low, high), _ = _chosen(values)
    assert high > 0.97 * values.max() and low < 0.97 * values.min()


def test_an_explicit_calibration_method_keeps_its_own_ranges(block_onnx, calib_images, tmp_path):
    from exporter.ptq.ranges import read_cache
    from tests.ptq.conftest import quantize

    _, mse = quantize(block_onnx, tmp_path / "mse", calib_images, mse_ranges=True)
    _, entropy = quantize(block_onnx, tmp_path / "entropy", calib_images, mse_ranges=True, calibration_method="entropy")
    assert mse.ptq_log.of("mse_range") and not entropy.ptq_log.of("mse_range")
    assert "mse_ranges skipped: calibration method 'entropy' sets the ranges" in entropy.notes
    assert read_cache(mse.calibration_cache) != read_cache(entropy.calibration_cache)
