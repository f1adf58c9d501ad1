"""Graph surgery (`mixed`), kernel attribution (`latency`) and the decision rules (`decision`), on plain data
or the digits CNN: no measured time decides anything here."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.accuracy.decision import Candidate, accuracy_order, deficit, pick_final, slower_in_int8
from exporter.accuracy.latency import UnitTiming, attribute_kernels
from exporter.accuracy.mixed import float_units, folded_activations
from exporter.accuracy.units import name_unnamed_nodes, quantized_units
from exporter.figures import GateCheck


def _run(model_or_path, feed) -> np.ndarray:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.fixture(scope="module")
def digits(weight_hostile):
    quant = onnx.load(str(weight_hostile.quant_path))
    prepared = onnx.load(str(weight_hostile.work / "quantize" / "preprocessed.onnx"))
    return weight_hostile, quant, prepared


def test_units_are_the_quantized_nodes_with_their_modules(digits) -> None:
    _, quant, _ = digits
    units = quantized_units(quant)
    assert [u.module for u in units if u.weighted] == ["features.0", "features.3", "features.7", "classifier.0", "classifier.2"]
    assert not any(u.op_type in ("QuantizeLinear", "DequantizeLinear") for u in units)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"]), onnx.helper.make_node("Relu", ["y"], ["z"], name="Relu_0")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1])]))
    assert name_unnamed_nodes(model) == 1 and [n.name for n in model.graph.node] == ["Relu_0_", "Relu_0"]


def test_every_unit_float_is_the_float_model(digits) -> None:
    case, quant, prepared = digits
    folded = folded_activations(prepared, quant)
    assert folded  # the quantizer folded the ReLUs into its output ranges
    model, _ = float_units(quant, [u.name for u in quantized_units(quant)], folded, prepared)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    feed = case.feeds(1)[0]
    np.testing.assert_allclose(_run(model, feed), _run(case.float_path, feed), rtol=1e-4, atol=1e-4)


def test_one_float_unit_keeps_its_neighbours_int8(digits) -> None:
    case, quant, prepared = digits
    units = {u.module: u.name for u in quantized_units(quant)}
    model, pinned = float_units(quant, [units["features.3"]], folded_activations(prepared, quant), prepared)
    node = next(n for n in model.graph.node if n.name == units["features.3"])
    weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert node.input[1] in weights  # a float weight...
    assert pinned == [units["features.3"]]  # ...pinned against onnxruntime re-quantizing it on load
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    others = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.name != units["features.3"]]
    assert others and all(n.input[1] in dequantized for n in others)
    feed = case.feeds(1)[0]
    fixed = np.mean(_run(model, feed).argmax(1) == _run(case.float_path, feed).argmax(1))
    plain = np.mean(_run(case.quant_path, feed).argmax(1) == _run(case.float_path, feed).argmax(1))
    assert plain < 0.5 < 0.95 < fixed  # the hostile layer in float repairs the model


def test_unknown_unit_is_refused(digits) -> None:
    _, quant, prepared = digits
    with pytest.raises(ValueError, match="no node named 'nope' in the quantized model"):
        float_units(quant, ["nope"], {}, prepared)


def test_kernels_are_attributed_to_units(digits) -> None:
    _, quant, _ = digits
    units = {u.module: u.name for u in quantized_units(quant)}
    conv, gemm = units["features.3"], units["classifier.0"]
    q_after_conv = next(n.name for n in quant.graph.node if n.op_type == "QuantizeLinear"
                        and n.input[0] in next(m for m in quant.graph.node if m.name == conv).output)
    kernels = [(f"{conv}_token_12", 0.5), ("Transpose_token_3", 0.1), (q_after_conv, 0.05), ("ReorderOutput", 0.2),
               (gemm, 0.3)]
    totals = attribute_kernels(kernels, quant, set(units.values()))
    assert totals[conv] == pytest.approx(0.5 + 0.1 + 0.05 + 0.2) and totals[gemm] == pytest.approx(0.3)
    assert totals[units["features.0"]] == 0.0
    nchwc = attribute_kernels([(next(m for m in quant.graph.node if m.name == gemm).output[0] + "_nchwc", 0.4)],
                              quant, set(units.values()))
    assert nchwc[gemm] == pytest.approx(0.4)


def test_decision_rules_on_supplied_figures() -> None:
    timings = {"dw": UnitTiming(0.20, 0.05), "pw": UnitTiming(0.05, 0.20), "tie": UnitTiming(0.0102, 0.0100)}
    assert slower_in_int8(timings) == ["dw"]  # a 2 % difference is noise
    errors = {"dw": 30.0, "pw": 20.0, "tie": 20.0}
    assert accuracy_order(errors, timings, skip={"dw"}) == ["tie", "pw"]  # same error: the one costing no time first
    fails = [GateCheck("top1_agreement", 0.90, 0.95, ">=", False), GateCheck("cosine", 0.99, 0.98, ">=", True)]
    assert deficit(fails) == pytest.approx(1.0) and deficit(fails[1:]) == 0.0
    plain, mixed, flt = (Candidate("plain", True, 0.0, 0, 2.0), Candidate("mixed", True, 0.0, 3, 1.0),
                         Candidate("float", True, 0.0, 9, 1.5, is_float_model=True))
    assert pick_final([plain, mixed, flt], float_ms=1.5).key == "mixed"
    choice = pick_final([plain, flt], float_ms=1.5)
    assert choice.key == "float" and "faster than the float model" in choice.why
    assert pick_final([Candidate("close", True, 0.0, 3, 1.48), flt], float_ms=1.5).key == "float"  # 1.3 % is noise
    assert pick_final([Candidate("gain", True, 0.0, 3, 1.45), flt], float_ms=1.5).key == "gain"  # 3.3 % is a gain
    near = Candidate("near", False, 0.5, 2, 1.0)
    unmet = pick_final([Candidate("far", False, 3.0, 0, 0.5), near], float_ms=1.5)
    assert unmet.key == "near" and not unmet.met


def test_short_int8_gaps_between_float_units_are_filled() -> None:
    from exporter.accuracy.search import fill_gaps

    order = ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert fill_gaps(order, {"a", "d", "h"}, gap=2) == {"a", "b", "c", "d", "h"}  # d..h is a gap of 3: kept int8
    assert fill_gaps(order, {"b"}, gap=2) == {"b"}


def test_every_unit_float_is_the_float_model_after_ptq(tmp_path) -> None:
    """With equalization, AdaRound and bias correction on (cpu-int8's default), the float layers take the
    equalized float model's weights and uncorrected biases: all of them float is the float function."""
    from calibration import OrtCalibrationReader, open_samples
    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx
    from exporter.quantizers import QuantizeRequest, quantize_model
    from exporter.quantizers.static import PTQ_REFERENCE
    from targets import get_target
    from tests.accuracy.hostile import SAMPLE, digits_model

    scheme = get_target("cpu-int8").quantization
    if not (scheme.equalize and scheme.bias_correction):
        pytest.skip("cpu-int8 runs no PTQ algorithms")
    import dataclasses

    scheme = dataclasses.replace(scheme, adaround_iterations=20, adaround_samples=64)
    specs = [InputSpec("input", (1, 1, 16, 16))]
    export_onnx(digits_model(), specs, tmp_path / "f.onnx", opset=18)
    calib = open_samples(str(SAMPLE / "calib.npz")).subset(range(64))
    quantize_model(QuantizeRequest(tmp_path / "f.onnx", tmp_path / "q.onnx", scheme, specs, tmp_path,
                                   lambda: OrtCalibrationReader(calib, specs, batch_size=32)))
    quant, reference = onnx.load(str(tmp_path / "q.onnx")), onnx.load(str(tmp_path / PTQ_REFERENCE))
    model, _ = float_units(quant, [u.name for u in quantized_units(quant)], folded_activations(reference, quant), reference)
    feed = {"input": np.load(SAMPLE / "val.npz")["input"][:64] if "input" in np.load(SAMPLE / "val.npz") else
            next(iter(np.load(SAMPLE / "val.npz").values()))[:64]}
    np.testing.assert_allclose(_run(model, feed), _run(tmp_path / "f.onnx", feed), rtol=1e-3, atol=1e-3)
