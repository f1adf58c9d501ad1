"""One file with static QDQ MatMuls and dynamic int8 MatMuls: onnxruntime runs it, with the expected ops and kernels."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.ptq.records import PtqLog
from exporter.ptq.transformer import prepare_inputs, write_mixed
from exporter.ptq.transformer_graph import find_transformer
from exporter.ptq.transformer_plan import GroupChoice
from exporter.quantizers.static import calibrate_ranges, ort_static_arguments
from targets import get_target
from tests.ptq.test_transformer_smoothing import encoder_onnx  # noqa: F401  (module fixture)
from tests.ptq.transformer_encoder import token_batches


class _Reader:
    def __init__(self, data: dict, batch: int = 8) -> None:
        self.data, self.batch, self.start = data, batch, 0

    def get_next(self):
        if self.start >= len(self.data["input_ids"]):
            return None
        feed = {k: v[self.start : self.start + self.batch] for k, v in self.data.items()}
        self.start += self.batch
        return feed

    def rewind(self) -> None:
        self.start = 0


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@pytest.fixture(scope="module")
def mixed(encoder_onnx, tmp_path_factory):  # noqa: F811
    """The encoder with block 0's MatMuls static and block 1's dynamic; returns (path, choices, float path)."""
    work = tmp_path_factory.mktemp("mixed")
    scheme = dataclasses.replace(get_target("cpu-int8").quantization, reduce_range=False)
    graph = find_transformer(onnx.load(str(encoder_onnx)))
    choices = []
    for index, (tensor, group) in enumerate(graph.groups().items()):
        treatment = "static" if index < len(graph.groups()) // 2 else "dynamic"
        choices.append(GroupChoice(tensor, group, np.ones(1), 0.0, None, 0.0, None, treatment=treatment))
    isolated = work / "isolated.onnx"  # no smoothing here (alpha None): each group reads an Identity copy
    onnx.save(prepare_inputs(onnx.load(str(encoder_onnx)), graph, choices, PtqLog()), str(isolated))
    cache = work / "calibration.json"
    minmax = dataclasses.replace(scheme, op_types=("MatMul", "Gemm"))
    calibrate_ranges(isolated, _Reader(token_batches(64, seed=5)), ort_static_arguments(minmax), cache)
    out = work / "mixed.onnx"
    write_mixed(isolated, out, cache, choices, scheme, work)
    return out, choices


def test_mixed_file_holds_both_forms_and_leaves_attention_float(mixed):
    path, choices = mixed
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    static_nodes = [m.node for c in choices if c.treatment == "static" for m in c.matmuls]
    dynamic_nodes = [m.node for c in choices if c.treatment == "dynamic" for m in c.matmuls]
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    by_name = {n.name: n for n in graph.node}
    for name in static_nodes:  # activation and weight both come through DequantizeLinear
        assert by_name[name].op_type == "MatMul" and set(by_name[name].input[:2]) <= dequantized
    assert ops.count("MatMulInteger") == len(dynamic_nodes)
    assert ops.count("DynamicQuantizeLinear") >= 2  # one per dynamic activation (Q, K and V share one)
    # Softmax, LayerNorm, GELU's Erf, the residual Adds and the attention MatMuls read float tensors
    quantized = {n.output[0] for n in graph.node if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")}
    for node in graph.node:
        if node.op_type in ("Softmax", "LayerNormalization", "Erf", "Add") or (node.op_type == "MatMul" and node.name not in static_nodes):
            assert not set(node.input) & (dequantized | quantized), node.name


def test_mixed_file_runs_close_to_float_on_fused_int8_kernels(mixed, encoder_onnx, tmp_path):  # noqa: F811
    path, _ = mixed
    feed = token_batches(32, seed=7)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    quantized = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    reference = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert _cosine(quantized, reference) > 0.98
    kernels = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    # static QDQ MatMuls with float outputs fuse to MatMulIntegerToFloat, dynamic ones to DynamicQuantizeMatMul
    # (or MatMulIntegerToFloat after DynamicQuantizeLinear); no float MatMul runs on a dequantized weight
    assert "MatMulIntegerToFloat" in kernels or "DynamicQuantizeMatMul" in kernels, kernels
    assert "MatMulInteger" not in kernels and "DequantizeLinear" not in kernels, kernels
