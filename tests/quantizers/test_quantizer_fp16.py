"""Mode `fp16`: the QuantScheme -> convert_float_to_float16 mapping, the file's types, and honest CPU notes."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

from exporter.errors import PlanError
from exporter.quantizers.fp16 import cpu_fp16_coverage, ort_fp16_arguments
from targets import get_target
from targets.profile import QuantScheme
from tests.quantizers import sample_models as sm


def test_mapping_keeps_io_types_and_extends_block_list():
    args = ort_fp16_arguments(QuantScheme(mode="fp16", exclude_op_types=("Softmax",)), ("node_linear",)).convert
    assert args["keep_io_types"] is True
    assert args["op_block_list"] == sorted(set(DEFAULT_OP_BLOCK_LIST) | {"Softmax"})
    assert args["node_block_list"] == ["node_linear"]
    plain = ort_fp16_arguments(QuantScheme(mode="fp16", keep_io_types=False)).convert
    assert plain["keep_io_types"] is False and plain["node_block_list"] is None


def test_mapping_refuses_op_types():
    with pytest.raises(PlanError) as info:
        ort_fp16_arguments(QuantScheme(mode="fp16", op_types=("Conv",)))
    assert str(info.value) == (
        "fp16 conversion converts every operator except a block list: use quantization.exclude_op_types "
        "to keep some in float32, not quantization.op_types (got ['Conv'])"
    )


def test_digits_float16_file(digits_onnx, tmp_path):
    target = get_target("cpu-fp16")
    data = sm.digits_data()
    out, info = sm.quantize(target.quantization, digits_onnx, tmp_path, sm.DIGITS_SPECS)
    model = onnx.load(str(out))
    # App-facing types unchanged, every weight stored as float16 (file about half the size).
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    weights = [init for init in model.graph.initializer if len(init.dims) >= 1 and init.data_type != TensorProto.INT64]
    assert weights and all(init.data_type == TensorProto.FLOAT16 for init in weights)
    assert info.op_counts["Cast"] == 2
    assert out.stat().st_size < 0.6 * digits_onnx.stat().st_size
    # The CPU check is reported, and a note says so whenever nodes fall back to float32.
    coverage = info.settings["cpu_execution"]
    assert coverage == cpu_fp16_coverage(out)
    assert coverage["nodes_in_float16"] + coverage["nodes_in_float32"] > 0
    fallback_notes = [n for n in info.notes if n.startswith("onnxruntime's CPU provider runs ")]
    assert len(fallback_notes) == (1 if coverage["nodes_in_float32"] else 0)
    figures = sm.agreement(sm.digits_reference(), sm.run(out, data["val"]), data["val_labels"])
    sm.assert_within(target.tolerances, figures)
