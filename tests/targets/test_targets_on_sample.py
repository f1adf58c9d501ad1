"""Each new target on the digits sample: the file loads in onnxruntime, validates within the target's
thresholds against the original PyTorch model, and its graph has the scheme's operators."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from targets import get_target
from targets.auto import auto_target
from targets.hardware import CpuFeatures
from tests.quantizers import sample_models as sm

# Static QDQ on the sample (after onnxruntime's pre-processing folds BatchNorm): 9 QuantizeLinear
# (input, 3 conv outputs, 2 pools, flatten, 2 Gemm outputs) and 19 DequantizeLinear (those 9, plus
# 5 per-channel weights and 5 int32 biases of the 3 Conv and 2 Gemm).
QDQ_COUNTS = {"QuantizeLinear": 9, "DequantizeLinear": 19, "Conv": 3, "Gemm": 2}


def static_structure(path):
    """Zero-point types of QuantizeLinear nodes and the weight DequantizeLinear initializers."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    activation_zero_points = {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
    weights = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and len(inits[node.input[0]].dims) >= 2:
            weights.append((inits[node.input[0]], numpy_helper.to_array(inits[node.input[1]]), numpy_helper.to_array(inits[node.input[2]])))
    return activation_zero_points, weights


def run_target(target, float_path, work, batch=None):
    data = sm.digits_data()
    calib = data["calib"][:100] if target.needs_calibration else None
    out, info = sm.quantize(target.quantization, float_path, work, sm.DIGITS_SPECS, calib=calib)
    figures = sm.agreement(sm.digits_reference(), sm.run(out, data["val"], batch=batch), data["val_labels"])
    return out, info, figures


@pytest.mark.parametrize("name", ["cpu-fp16", "cpu-int8-dynamic", "arm64-int8", "cpu-int4-weights"])
def test_target_validates_on_the_sample(name, digits_onnx, tmp_path):
    target = get_target(name)
    _, _, figures = run_target(target, digits_onnx, tmp_path)
    sm.assert_within(target.tolerances, figures)


def test_arm64_int8_is_s8s8_with_symmetric_per_channel_weights(digits_onnx, tmp_path):
    out, info, _ = run_target(get_target("arm64-int8"), digits_onnx, tmp_path)
    assert {op: info.op_counts.get(op, 0) for op in QDQ_COUNTS} == QDQ_COUNTS
    activation_zero_points, weights = static_structure(out)
    assert activation_zero_points == {TensorProto.INT8}
    assert len(weights) == 5
    for weight, scale, zero_point in weights:
        assert weight.data_type == TensorProto.INT8
        assert scale.shape == (weight.dims[0],)  # one scale per output channel
        assert not np.any(zero_point)  # symmetric


def test_mobile_int8_validates_at_fixed_batch_one(digits_fixed_onnx, tmp_path):
    target = get_target("mobile-int8")
    out, info, figures = run_target(target, digits_fixed_onnx, tmp_path, batch=1)
    sm.assert_within(target.tolerances, figures)
    model = onnx.load(str(out))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 16, 16]
    assert {op: info.op_counts.get(op, 0) for op in QDQ_COUNTS} == QDQ_COUNTS


@pytest.mark.parametrize(
    ("features", "zero_point_type"),
    [
        (CpuFeatures("x86_64", frozenset({"avx2", "avx512_vnni"})), TensorProto.UINT8),
        (CpuFeatures("x86_64", frozenset({"avx2"})), TensorProto.UINT8),
        (CpuFeatures("arm64", frozenset({"arm_dotprod"})), TensorProto.INT8),
    ],
)
def test_auto_target_validates_and_writes_its_scheme(features, zero_point_type, digits_onnx, tmp_path):
    target = auto_target(features)
    out, _, figures = run_target(target, digits_onnx, tmp_path)
    sm.assert_within(target.tolerances, figures)
    activation_zero_points, weights = static_structure(out)
    assert activation_zero_points == {zero_point_type}
    # reduce_range keeps weights in 7 bits: [-64, 63].
    largest = max(int(np.abs(numpy_helper.to_array(w).astype(np.int32)).max()) for w, _, _ in weights)
    assert (largest <= 64) is target.quantization.reduce_range


def test_mobile_int8_at_fixed_batch_four_is_validated_and_timed_at_batch_four(tmp_path):
    """A fixed-shape file with batch 4 runs only batches of 4: validation, golden vectors and timing all feed it so."""
    import json
    from pathlib import Path

    from exporter.cli import main

    digits = Path(__file__).resolve().parents[2] / "samples" / "digits"
    out = tmp_path / "out"
    code = main(["export", str(digits / "digits_cnn.pt2"), "--target", "mobile-int8", "--input-shape", "4,1,16,16",
                 "--calib", str(digits / "calib.npz"), "--no-search", "--no-progress", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["measurements"]["latency_setup"].startswith("batch 4,")
    golden = json.loads((out / "golden.json").read_text())
    assert golden["inputs"][0]["shape"][0] % 4 == 0
