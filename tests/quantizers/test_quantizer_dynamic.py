"""Mode `dynamic`: the QuantScheme -> quantize_dynamic mapping, and real runs on an encoder and the sample."""

from __future__ import annotations

import pytest
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.registry import IntegerOpsRegistry

from exporter.errors import PlanError
from exporter.quantizers.dynamic import ort_dynamic_arguments
from targets import get_target
from targets.profile import QuantScheme
from tests.quantizers import sample_models as sm


def test_mapping_passes_typed_settings_through():
    scheme = QuantScheme(mode="dynamic", per_channel=True, reduce_range=True, weight_type="uint8", weight_symmetric=False)
    args = ort_dynamic_arguments(scheme, nodes_to_exclude=("node_linear",)).quantize
    assert args["weight_type"] == QuantType.QUInt8
    assert args["per_channel"] is True and args["reduce_range"] is True
    assert args["op_types_to_quantize"] == sorted(IntegerOpsRegistry)
    assert args["nodes_to_exclude"] == ["node_linear"]
    assert args["extra_options"] == {"WeightSymmetric": False, "MatMulConstBOnly": True}


def test_mapping_op_types_and_exclusions():
    scheme = QuantScheme(mode="dynamic", op_types=("MatMul", "Conv", "LSTM"), exclude_op_types=("Conv",))
    args = ort_dynamic_arguments(scheme).quantize
    assert args["op_types_to_quantize"] == ["MatMul", "LSTM"]
    assert args["weight_type"] == QuantType.QInt8
    assert ort_dynamic_arguments(scheme).to_dict()["quantize_dynamic"]["weight_type"] == "QInt8"


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (
            QuantScheme(mode="dynamic", activation_type="int8"),
            "dynamic quantization computes uint8 activations at run time (DynamicQuantizeLinear): "
            "set quantization.activation_type = 'uint8', got 'int8'",
        ),
        (
            QuantScheme(mode="dynamic", weight_type="int4"),
            "dynamic quantization needs quantization.weight_type 'int8' or 'uint8', got 'int4'",
        ),
    ],
)
def test_mapping_rejects_what_onnxruntime_cannot_do(scheme, message):
    with pytest.raises(PlanError) as info:
        ort_dynamic_arguments(scheme)
    assert str(info.value) == message


def test_encoder_weights_become_integer_matmuls(encoder_onnx, tmp_path):
    scheme = get_target("cpu-int8-dynamic").quantization
    out, info = sm.quantize(scheme, encoder_onnx, tmp_path, sm.ENCODER_SPECS)
    ops = info.op_counts
    # Every constant-weight product (9 MatMul + the Gemm head, which onnxruntime turns into MatMul)
    # becomes MatMulInteger fed by a run-time DynamicQuantizeLinear; attention's activation x
    # activation MatMuls stay float (MatMulConstBOnly).
    assert ops["MatMulInteger"] == sm.ENCODER_WEIGHT_MATMULS
    assert ops["MatMul"] == sm.ENCODER_ACTIVATION_MATMULS
    assert ops["DynamicQuantizeLinear"] >= 1
    assert "Gemm" not in ops and "QuantizeLinear" not in ops
    assert info.calibration_batches == 0
    reference = sm.run(encoder_onnx, sm.encoder_inputs())
    figures = sm.agreement(reference, sm.run(out, sm.encoder_inputs()))
    assert figures["cosine"] >= 0.999 and figures["sqnr_db"] >= 25.0, figures


def test_digits_sample_within_target_tolerances(digits_onnx, tmp_path):
    target = get_target("cpu-int8-dynamic")
    data = sm.digits_data()
    out, info = sm.quantize(target.quantization, digits_onnx, tmp_path, sm.DIGITS_SPECS, calib=data["calib"])
    # The two Linear layers are quantized; convolutions are not in the target's op_types and stay float.
    assert info.op_counts["MatMulInteger"] == 2 and info.op_counts["Conv"] == 3
    assert "ConvInteger" not in info.op_counts
    assert "dynamic quantization needs no calibration data; the calibration set was not used" in info.notes
    figures = sm.agreement(sm.digits_reference(), sm.run(out, data["val"]), data["val_labels"])
    sm.assert_within(target.tolerances, figures)
