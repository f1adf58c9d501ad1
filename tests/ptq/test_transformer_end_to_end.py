"""A transformer sentence encoder (int64 ids + mask, injected outliers) passes `--target cpu-int8` by default."""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter.cli import main
from exporter.ptq.transformer_graph import find_transformer
from tests.ptq.transformer_encoder import encoder, export_program, token_batches


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exporter export encoder.pt2 --target cpu-int8 --calib --val`: (exit code, out folder, val data, model)."""
    work = tmp_path_factory.mktemp("tf_e2e")
    model = encoder()
    export_program(model, work / "encoder.pt2")
    np.savez(work / "calib.npz", **token_batches(96, seed=11))
    val = token_batches(128, seed=12)
    np.savez(work / "val.npz", **val)
    out = work / "out"
    code = main(["export", str(work / "encoder.pt2"), "--target", "cpu-int8", "--calib", str(work / "calib.npz"),
                 "--val", str(work / "val.npz"), "--out", str(out), "--latency-repeats", "3"])
    return code, out, val, model


def test_encoder_passes_by_default_with_embedding_cosine_above_0_99(exported):
    code, out, val, model = exported
    assert code == 0
    with torch.no_grad():
        reference = model(torch.from_numpy(val["input_ids"]), torch.from_numpy(val["attention_mask"])).numpy()
    quantized = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, val)[0]
    cosine = np.sum(reference * quantized, 1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(quantized, axis=1))
    assert float(np.mean(cosine)) >= 0.99 and float(np.min(cosine)) > 0.95


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The static quantizer (cpu-int8's scheme) on the encoder's float ONNX: (file, QuantizeInfo)."""
    from exporter.quantizers.base import QuantizeRequest, quantize_model
    from targets import get_target
    from tests.ptq.transformer_encoder import export_onnx

    work = tmp_path_factory.mktemp("tf_quant")
    export_onnx(encoder(), work / "float.onnx")
    data = token_batches(96, seed=11)
    request = QuantizeRequest(work / "float.onnx", work / "model.onnx", get_target("cpu-int8").quantization, [], work,
                              make_reader=lambda: _Reader(data))
    return work / "model.onnx", quantize_model(request)


class _Reader:
    def __init__(self, data: dict, batch: int = 16) -> None:
        self.data, self.batch, self.start = data, batch, 0

    def get_next(self):
        if self.start >= len(self.data["input_ids"]):
            return None
        feed = {k: v[self.start : self.start + self.batch] for k, v in self.data.items()}
        self.start += self.batch
        return feed

    def rewind(self) -> None:
        self.start = 0


def test_only_weight_matmuls_are_int8_and_every_one_has_a_decision(quantized):
    path, info = quantized
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert ops & {"QuantizeLinear", "DynamicQuantizeLinear"}, "nothing was quantized"
    int8_outputs = {n.output[0] for n in graph.node if n.op_type in ("DequantizeLinear", "DynamicQuantizeLinear")}
    for node in graph.node:
        if node.op_type in ("Softmax", "LayerNormalization", "Erf", "Add", "Div"):
            assert not set(node.input) & int8_outputs, f"{node.op_type} {node.name} reads an int8 tensor"
    records = info.ptq_log.to_dict()["records"]
    decisions = [r for r in records if r["algorithm"] == "transformer_int8"]
    assert len(decisions) == 12  # 2 blocks x 6 Linear layers
    assert all(d["treatment"] in ("static", "dynamic", "float") and d["reason"] for d in decisions)
    int8 = [d for d in decisions if d["treatment"] != "float"]
    assert len(int8) >= 8, decisions  # most Linear layers stay int8
    matmul_integer = sum(n.op_type == "MatMulInteger" for n in graph.node)
    assert matmul_integer == sum(d["treatment"] == "dynamic" for d in decisions)
    smoothed = [r for r in records if r["algorithm"] == "smoothquant"]
    assert smoothed and all(0 < r["alpha"] < 1 for r in smoothed)
    assert "transformer encoder: 12 weight MatMuls" in info.notes[-len(info.ptq_log.notes)]


def test_nodes_the_caller_excludes_stay_float(quantized, tmp_path):
    """The accuracy search passes `nodes_to_exclude`: those MatMuls (and their groups) compute in float."""
    from exporter.quantizers.base import QuantizeRequest, quantize_model
    from targets import get_target

    path, info = quantized
    float_path = path.parent / "float.onnx"
    graph = find_transformer(onnx.load(str(float_path)))
    excluded = graph.weight_matmuls[-1].node  # the last FFN output projection
    data = token_batches(96, seed=11)
    request = QuantizeRequest(float_path, tmp_path / "model.onnx", get_target("cpu-int8").quantization, [], tmp_path,
                              make_reader=lambda: _Reader(data), nodes_to_exclude=(excluded,))
    result = quantize_model(request)
    decisions = {r.node: r for r in result.ptq_log.records if r.algorithm == "transformer_int8"}
    assert decisions[excluded].treatment == "float" and "caller" in decisions[excluded].reason
    nodes = {n.name: n for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    weight = graph.matmul(excluded).weight
    assert nodes[excluded].op_type == "MatMul" and nodes[excluded].input[1] == weight  # float weight, no DequantizeLinear
