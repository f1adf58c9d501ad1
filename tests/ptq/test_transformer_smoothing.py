"""Transformer graph detection and SmoothQuant on the ONNX graph: the float function is preserved."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter.ptq.activations import for_each_batch, session
from exporter.ptq.smoothquant import apply_smoothing, outlier_ratio, smoothing_scales, weight_in_out
from exporter.ptq.transformer_error import WeightGrid, group_sqnr_db
from exporter.ptq.transformer_graph import find_transformer
from tests.ptq.transformer_encoder import encoder, export_onnx, token_batches


@pytest.fixture(scope="module")
def encoder_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("tf") / "encoder.onnx"
    export_onnx(encoder(), path)
    return path


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return session(model, optimize=False).run(None, feed)[0]


def test_encoder_is_recognised_and_its_parts_named(encoder_onnx, block_onnx):
    graph = find_transformer(onnx.load(str(encoder_onnx)))
    assert graph.is_transformer
    # 2 blocks x (Q, K, V, proj, inter, out) Linear layers; 2 x (scores, context) attention MatMuls
    assert len(graph.weight_matmuls) == 12 and len(graph.attention_matmuls) == 4
    assert len(graph.softmaxes) == 2 and len(graph.norms) == 5
    sizes = sorted(len(g) for g in graph.groups().values())
    assert sizes == [1, 1, 1, 1, 1, 1, 3, 3]  # Q, K and V read one LayerNorm output: one group
    sources = {m.source for m in graph.weight_matmuls}
    assert "LayerNormalization" in sources
    assert not find_transformer(onnx.load(str(block_onnx))).is_transformer  # a CNN is not


def test_smoothing_keeps_the_float_function_and_flattens_the_outliers(encoder_onnx):
    model = onnx.load(str(encoder_onnx))
    graph = find_transformer(model)
    feed = token_batches(16, seed=3)
    groups = graph.groups()
    captured: dict[str, list] = {t: [] for t in groups}
    for_each_batch(model, list(groups), [feed], lambda values: [captured[t].append(v) for t, v in values.items()])
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    before = _run(model, feed)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    records = []
    for tensor, group in groups.items():
        x = np.concatenate(captured[tensor])
        absmax = np.abs(x).reshape(-1, x.shape[-1]).max(0)
        scales = smoothing_scales(absmax, [weight_in_out(weights, m) for m in group], 0.7)
        records.append(apply_smoothing(smoothed, group, scales, 0.7, absmax))
    onnx.checker.check_model(smoothed)
    after = _run(smoothed, feed)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=2e-5)
    assert sum(n.op_type == "Mul" and n.name.endswith(".smooth") for n in smoothed.graph.node) == len(groups)
    # the injected LayerNorm outliers (12-25x) are flattened: every group reading a LayerNorm at least halves its ratio
    norm_records = [r for r in records if graph.matmul(r.node).source == "LayerNormalization"]
    assert norm_records and all(r.outlier_ratio_before > 8 for r in norm_records)
    assert all(r.outlier_ratio_after < r.outlier_ratio_before / 2 for r in norm_records), [(r.outlier_ratio_before, r.outlier_ratio_after) for r in norm_records]
    changed = [m for m in graph.weight_matmuls if not np.array_equal(
        numpy_helper.to_array(next(i for i in smoothed.graph.initializer if i.name == m.weight)), weights[m.weight])]
    assert len(changed) == len(graph.weight_matmuls)


def test_smoothing_raises_the_simulated_int8_sqnr_of_an_outlier_activation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 32, 64)).astype(np.float32)
    x[..., [3, 40]] *= 30.0  # two outlier channels, as after a LayerNorm with large gains
    w = rng.normal(scale=0.05, size=(64, 48)).astype(np.float32)
    absmax = np.abs(x).reshape(-1, 64).max(0)
    grid = WeightGrid(per_channel=True)
    plain = group_sqnr_db(x, w, None, "static", grid)
    smoothed = group_sqnr_db(x, w, smoothing_scales(absmax, [w], 0.5), "static", grid)
    assert outlier_ratio(absmax) > 20
    assert smoothed > plain + 6.0, (plain, smoothed)


def test_smoothing_folds_into_a_layernorm_read_only_by_the_group():
    """Pre-LN block shape: LayerNorm -> MatMul only; s goes into the norm's gain and bias, no Mul is added."""
    from exporter.ptq.transformer_graph import WeightMatMul

    rng = np.random.default_rng(1)
    gamma = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    gamma[2] = 20.0  # an outlier channel
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w")]
    nodes = [onnx.helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="norm", axis=-1),
             onnx.helper.make_node("MatMul", ["ln", "w"], ["y"], name="fc")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4, 8])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4, 6])], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    x = {"x": rng.normal(size=(2, 4, 8)).astype(np.float32)}
    before = _run(model, x)
    absmax = np.abs(gamma) * 2.0
    matmul = WeightMatMul("fc", "MatMul", "ln", "w", 0, 8, 6, "LayerNormalization")
    scales = smoothing_scales(absmax, [numpy_helper.to_array(inits[2])], 0.5)
    record = apply_smoothing(model, [matmul], scales, 0.5, absmax)
    assert record.folded_into == "norm" and [n.op_type for n in model.graph.node] == ["LayerNormalization", "MatMul"]
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-5)
