"""A layer kept in float stays float when onnxruntime loads the file (WeightBiasQuantization)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.accuracy.pin import pin_float_layers, runtime_requantized


def _quantize_excluding(case, node: str, out) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_static

    from exporter.quantizers.static import calibrate_ranges, ort_static_arguments, preprocess_for_quantization

    prepared, cache = out.parent / "prepared.onnx", out.parent / "cache.json"
    preprocess_for_quantization(case.float_path, prepared)
    arguments = ort_static_arguments(case.target.quantization, (node,))
    calibrate_ranges(prepared, case.make_reader(), arguments, cache)
    quantize_static(str(prepared), str(out), calibration_data_reader=None, calibration_cache_path=str(cache), **arguments.quantize)
    return onnx.load(str(out))


def _optimized_ops(path, tmp_path) -> dict[str, str]:
    """Node name -> op type of the graph onnxruntime actually runs (full optimization)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {n.name: n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


@pytest.fixture(scope="module")
def excluded(weight_hostile, tmp_path_factory):
    out = tmp_path_factory.mktemp("pin") / "excluded.onnx"
    return out, _quantize_excluding(weight_hostile, "node_Conv_53", out)


def test_onnxruntime_requantizes_an_excluded_layer(excluded, tmp_path) -> None:
    path, model = excluded
    assert runtime_requantized(model, {"node_Conv_53"}) == ["node_Conv_53"]
    ops = _optimized_ops(path, tmp_path)
    assert [op for name, op in ops.items() if name.startswith("node_Conv_53")] == ["QLinearConv"]


def test_pinned_layer_stays_float_and_computes_the_same(excluded, weight_hostile, tmp_path) -> None:
    path, model = excluded
    pinned = onnx.load(str(path))
    assert pin_float_layers(pinned, ["node_Conv_53"]) == ["node_Conv_53"]
    assert runtime_requantized(pinned, {"node_Conv_53"}) == []
    onnx.checker.check_model(pinned)
    pinned_path = tmp_path / "pinned.onnx"
    onnx.save(pinned, str(pinned_path))
    ops = _optimized_ops(pinned_path, tmp_path)
    assert [op for name, op in ops.items() if name.startswith("node_Conv_53") and "float_bias" not in name] in (["Conv"], ["FusedConv"])
    feed = weight_hostile.feeds(1)[0]
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    simulated = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    deployed = ort.InferenceSession(str(pinned_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    # With the layer really float, the deployed file matches the float-simulated QDQ graph.
    assert np.mean(simulated.argmax(1) == deployed.argmax(1)) > 0.97


def test_per_axis_input_keeps_the_layer_float_with_its_float_bias(excluded, weight_hostile, tmp_path) -> None:
    from exporter.accuracy.pin import pin_by_per_axis_input

    path, _ = excluded
    model = onnx.load(str(path))
    assert pin_by_per_axis_input(model, ["node_Conv_53"]) == ["node_Conv_53"]
    assert runtime_requantized(model, {"node_Conv_53"}) == []
    conv = next(n for n in model.graph.node if n.name == "node_Conv_53")
    initializers = {i.name for i in model.graph.initializer}
    assert conv.input[2] in initializers  # the bias stays a constant: onnxruntime's layout and fusions still apply
    onnx.checker.check_model(model)
    pinned_path = tmp_path / "per_axis.onnx"
    onnx.save(model, str(pinned_path))
    ops = _optimized_ops(pinned_path, tmp_path)
    assert "QLinearConv" not in [op for name, op in ops.items() if name.startswith("node_Conv_53")]
    feed = weight_hostile.feeds(1)[0]
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    simulated = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    deployed = ort.InferenceSession(str(pinned_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    # The same function, really float (int8 layers after it may round a value one step apart).
    assert np.mean(simulated.argmax(1) == deployed.argmax(1)) > 0.97
    assert np.mean(np.abs(deployed - simulated)) < 0.05 * np.mean(np.abs(simulated))
