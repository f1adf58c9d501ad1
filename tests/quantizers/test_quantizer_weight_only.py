"""Mode `weight_only`: the QuantScheme -> MatMulNBitsQuantizer mapping, coverage on an encoder and the sample."""

from __future__ import annotations

import onnx
import pytest
from onnxruntime.quantization import QuantFormat

from exporter.errors import PlanError
from exporter.quantizers.weight_only import ort_weight_only_arguments
from targets import get_target
from targets.profile import QuantScheme
from tests.quantizers import sample_models as sm


def test_mapping_of_the_int4_target():
    args = ort_weight_only_arguments(get_target("cpu-int4-weights").quantization)
    assert args.quantizer == {
        "bits": 4,
        "block_size": 32,
        "is_symmetric": True,
        "accuracy_level": 4,
        "quant_format": QuantFormat.QOperator,
        "op_types_to_quantize": ("MatMul",),
        "nodes_to_exclude": [],
    }
    assert args.gemm_to_matmul is True
    assert args.to_dict()["MatMulNBitsQuantizer"]["quant_format"] == "QOperator"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"weight_type": "uint4", "weight_symmetric": False}, {"bits": 4, "is_symmetric": False}),
        ({"weight_type": "int8", "block_size": 64, "format": "qoperator"}, {"bits": 8, "block_size": 64}),
        ({"weight_type": "int4", "accuracy_level": "fp32"}, {"accuracy_level": None}),
        ({"weight_type": "int4", "accuracy_level": "fp16"}, {"accuracy_level": 2}),
        ({"weight_type": "int4", "format": "qdq"}, {"quant_format": QuantFormat.QDQ}),
    ],
)
def test_mapping_fields(fields, expected):
    args = ort_weight_only_arguments(QuantScheme(mode="weight_only", **fields)).quantizer
    assert {key: args[key] for key in expected} == expected


def test_mapping_without_gemm_skips_the_rewrite():
    args = ort_weight_only_arguments(QuantScheme(mode="weight_only", weight_type="int4", op_types=("MatMul",)))
    assert args.gemm_to_matmul is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"weight_type": "int16"},
            "weight-only quantization needs quantization.weight_type 'int4', 'uint4', 'int8' or 'uint8', got 'int16'",
        ),
        (
            {"weight_type": "int4", "op_types": ("MatMul", "Conv")},
            "weight-only quantization covers Gather, Gemm, MatMul (Gemm rewritten as MatMul); quantization.op_types has 'Conv'",
        ),
        (
            {"weight_type": "int8", "format": "qdq"},
            "weight-only quantization in QDQ format is 4-bit only: set quantization.weight_type = 'int4'",
        ),
    ],
)
def test_mapping_rejects(fields, message):
    with pytest.raises(PlanError) as info:
        ort_weight_only_arguments(QuantScheme(mode="weight_only", **fields))
    assert str(info.value) == message


def test_encoder_matmuls_become_matmulnbits(encoder_onnx, tmp_path):
    scheme = get_target("cpu-int4-weights").quantization
    out, info = sm.quantize(scheme, encoder_onnx, tmp_path, sm.ENCODER_SPECS)
    assert info.op_counts["MatMulNBits"] == sm.ENCODER_WEIGHT_MATMULS
    assert info.op_counts["MatMul"] == sm.ENCODER_ACTIVATION_MATMULS
    assert "Gemm" not in info.op_counts
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits"]
    attributes = {a.name: a.i for a in nodes[0].attribute}
    assert attributes["bits"] == 4 and attributes["block_size"] == 32 and attributes["accuracy_level"] == 4
    assert info.settings["coverage"]["matmuls_quantized"] == sm.ENCODER_WEIGHT_MATMULS
    assert info.settings["coverage"]["matmuls_left_float"] == 0
    # 4-bit weights plus one float scale per block of 32: about 5/32 of the float32 bytes.
    assert sm.initializer_bytes(out) < 0.2 * sm.initializer_bytes(encoder_onnx)
    reference = sm.run(encoder_onnx, sm.encoder_inputs())
    figures = sm.agreement(reference, sm.run(out, sm.encoder_inputs()))
    assert figures["cosine"] >= 0.99 and figures["sqnr_db"] >= 15.0, figures


def test_digits_sample_within_target_tolerances(digits_onnx, tmp_path):
    target = get_target("cpu-int4-weights")
    data = sm.digits_data()
    out, info = sm.quantize(target.quantization, digits_onnx, tmp_path, sm.DIGITS_SPECS)
    # The two Linear layers (Gemm) are covered; the three convolutions are not, and the note says so.
    assert info.op_counts["MatMulNBits"] == 2 and info.op_counts["Conv"] == 3
    assert "23,184 Conv weights stay float32: onnxruntime's n-bit quantizer covers MatMul/Gemm weights only" in info.notes
    figures = sm.agreement(sm.digits_reference(), sm.run(out, data["val"]), data["val_labels"])
    sm.assert_within(target.tolerances, figures)
