"""The float fallback search: it keeps exactly the hostile layer in float, says what it tried when the
goal cannot be met, tries other calibration methods, and knows the classic troublemakers."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.accuracy.budget import AccuracyBudget
from calibration.uniform_reader import UniformBatchReader
from exporter.accuracy.fallback import FallbackRequest, gate_deficit, search_fallback
from exporter.accuracy.units import troublemakers
from exporter.validate import GateCheck, check_gate


def request_for(case, budget: AccuracyBudget, work) -> FallbackRequest:
    return FallbackRequest(
        float_path=case.float_path,
        scheme=case.target.quantization,
        input_specs=case.specs,
        make_reader=case.make_reader,
        evaluate=case.evaluate,
        tolerances=case.target.tolerances,
        budget=budget,
        work_dir=work,
        baseline_path=case.quant_path,
        baseline_summary=case.summary,
        latency_repeats=5,
    )


@pytest.fixture(scope="module")
def weight_outcome(weight_hostile, tmp_path_factory):
    budget = AccuracyBudget(try_calibration_methods=False)
    return search_fallback(request_for(weight_hostile, budget, tmp_path_factory.mktemp("fallback")))


def test_plain_int8_fails_the_gate(weight_hostile) -> None:
    checks = check_gate(weight_hostile.summary, weight_hostile.target.tolerances)
    assert not all(c.passed for c in checks)
    assert weight_hostile.summary["top1_agreement"] < 0.5


def test_fallback_keeps_exactly_the_hostile_layer_in_float(weight_outcome, weight_hostile) -> None:
    assert weight_outcome.met
    assert [n["module"] for n in weight_outcome.nodes_in_float] == ["features.3"]
    entry = weight_outcome.nodes_in_float[0]
    assert entry["op_type"] == "Conv" and entry["pinned"] and "isolated SQNR" in entry["why"]
    assert entry["size_cost_bytes"] > 0 and entry["float_weight_bytes"] > entry["size_cost_bytes"]
    assert all(c.passed for c in check_gate(weight_outcome.best_summary, weight_hostile.target.tolerances))
    # The file handed back really passes: evaluate it again from disk.
    again = weight_hostile.evaluate(weight_outcome.best_path)
    assert again["top1_agreement"] == pytest.approx(weight_outcome.best_summary["top1_agreement"])
    assert weight_outcome.sensitivity[0]["module"] == "features.3"
    assert weight_outcome.plot_svg.startswith("<svg")


def test_outcome_records_every_trial(weight_outcome) -> None:
    trials = weight_outcome.trials
    assert [t["trial"] for t in trials] == list(range(len(trials)))
    assert trials[0]["label"] == "plain" and not trials[0]["passed"]
    best = trials[weight_outcome.best_trial]
    assert best["passed"] and best["excluded_modules"] == ["features.3"]
    for trial in trials:
        assert {"calibration", "excluded", "summary", "passed", "latency_ms", "size_bytes", "seconds"} <= set(trial)
    assert weight_outcome.cost["size_bytes"] > 0
    data = weight_outcome.to_dict()
    assert data["best_path"] == str(weight_outcome.best_path) and data["met"] is True


def test_unreachable_budget_returns_the_closest_candidate(weight_hostile, tmp_path) -> None:
    budget = AccuracyBudget(min_sqnr_db=150.0, max_trials=3, try_calibration_methods=False)
    outcome = search_fallback(request_for(weight_hostile, budget, tmp_path))
    assert not outcome.met
    assert len(outcome.trials) == 4  # the plain model and three trials
    assert outcome.best_path.is_file()
    assert any("goal NOT met after 3 trial(s) (trial limit reached (3))" in note for note in outcome.notes)
    best = outcome.trials[outcome.best_trial]
    assert best["deficit"] == min(t["deficit"] for t in outcome.trials)
    assert "features.3" in best["excluded_modules"]
    assert any(c["figure"] == "sqnr_db" and not c["passed"] for c in outcome.gate)
    assert outcome.tolerances["min_sqnr_db"] == 150.0


def test_bisect_finds_the_shortest_passing_prefix_and_keeps_the_fastest(weight_hostile, tmp_path) -> None:
    budget = AccuracyBudget(strategy="bisect", try_calibration_methods=False, max_trials=6)
    outcome = search_fallback(request_for(weight_hostile, budget, tmp_path))
    assert outcome.met
    passing = [t for t in outcome.trials if t["passed"]]
    assert [t["excluded_modules"] for t in passing][-1] == ["features.3"]  # the shortest prefix, found last
    # Among passing candidates the fastest wins (ties within 5 % + 0.02 ms go to fewer float layers);
    # on this net a float first layer is in fact faster than its int8 version.
    best = outcome.trials[outcome.best_trial]
    assert best["latency_ms"] <= min(t["latency_ms"] for t in passing) * 1.05 + 0.02
    assert "features.3" in best["excluded_modules"]


def test_calibration_methods_are_tried_first(tiny_range, tmp_path) -> None:
    outcome = search_fallback(request_for(tiny_range, AccuracyBudget(max_trials=1), tmp_path))
    assert [t["label"] for t in outcome.trials] == ["plain", "calibration percentile"]
    assert outcome.trials[1]["summary"] is not None and "error" not in outcome.trials[1]
    assert not outcome.met and any("trial limit reached (1)" in note for note in outcome.notes)


def test_per_tensor_mix_takes_each_range_from_some_method(tiny_range, tmp_path) -> None:
    from onnxruntime.quantization.calibrate import load_tensors_data

    from exporter.accuracy.requantize import PER_TENSOR, Requantizer

    requantizer = Requantizer(request_for(tiny_range, AccuracyBudget(), tmp_path), tmp_path)
    caches = {m: load_tensors_data(requantizer.cache(m)).data for m in ("minmax", "percentile")}
    mixed = load_tensors_data(requantizer.cache(PER_TENSOR)).data
    assert set(mixed) == set(caches["minmax"])
    for name, data in mixed.items():
        assert any(np.allclose(data.range_value, caches[m][name].range_value) for m in caches), name
    assert "minmax" in requantizer.mix_note or "percentile" in requantizer.mix_note
    out = tmp_path / "mixed.onnx"
    requantizer.quantize(PER_TENSOR, [], out, 1)
    assert tiny_range.evaluate(out)["samples"] == 300


def test_tiny_range_output_is_kept_in_float(tiny_range, tmp_path) -> None:
    outcome = search_fallback(request_for(tiny_range, AccuracyBudget(try_calibration_methods=False), tmp_path))
    assert outcome.met
    assert [n["module"] for n in outcome.nodes_in_float] == ["classifier.2"]


def test_a_passing_plain_model_ends_the_search_at_once(weight_hostile, tmp_path) -> None:
    loose = dataclasses.replace(weight_hostile.target.tolerances, min_top1_agreement=0.0, min_cosine=0.0,
                                min_sqnr_db=None, max_accuracy_drop=None)
    request = dataclasses.replace(request_for(weight_hostile, AccuracyBudget(), tmp_path), tolerances=loose)
    outcome = search_fallback(request)
    assert outcome.met and len(outcome.trials) == 1 and outcome.best_path == weight_hostile.quant_path


def test_uniform_batches_cover_every_sample_once() -> None:
    class Reader:
        def __init__(self):
            self.batches = [np.arange(16), np.arange(16, 32), np.arange(32, 44)]

        def get_next(self):
            return {"x": self.batches.pop(0)} if self.batches else None

    reader = UniformBatchReader(Reader)
    sizes, values = [], []
    for batch in reader:
        sizes.append(len(batch["x"]))
        values.extend(batch["x"].tolist())
    assert set(sizes) == {4} and values == list(range(44))


def test_deficit_orders_candidates() -> None:
    near = [GateCheck("top1_agreement", 0.94, 0.95, ">=", False), GateCheck("cosine", 0.99, 0.98, ">=", True)]
    far = [GateCheck("top1_agreement", 0.50, 0.95, ">=", False), GateCheck("cosine", 0.90, 0.98, ">=", False)]
    assert gate_deficit([GateCheck("cosine", 0.99, 0.98, ">=", True)]) == 0.0
    assert 0 < gate_deficit(near) < gate_deficit(far)


def _graph(nodes, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers),
    )
    return helper.make_model(graph)


def test_troublemakers_of_a_transformer_encoder() -> None:
    w = numpy_helper.from_array(np.zeros((4, 4), np.float32), "w")
    model = _graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["q"], name="proj"),
            helper.make_node("MatMul", ["q", "x"], ["s"], name="scores"),
            helper.make_node("Softmax", ["s"], ["p"], name="softmax"),
            helper.make_node("Add", ["p", "x"], ["r"], name="residual"),
            helper.make_node("LayerNormalization", ["r", "w", "w"], ["y"], name="norm"),
        ],
        [w],
    )
    found = troublemakers(model)
    assert set(found) == {"scores", "softmax", "residual", "norm"}
    assert "attention" in found["scores"] and "normalization" in found["norm"]


def test_troublemakers_of_a_small_cnn() -> None:
    w = numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "w")
    g = numpy_helper.from_array(np.zeros((4, 4), np.float32), "g")
    model = _graph(
        [
            helper.make_node("Conv", ["x", "w"], ["a"], name="first"),
            helper.make_node("Conv", ["a", "w"], ["b"], name="middle"),
            helper.make_node("Gemm", ["b", "g"], ["y"], name="last"),
        ],
        [w, g],
    )
    assert troublemakers(model) == {
        "first": "first layer of a small convolutional net",
        "last": "last layer of a small convolutional net",
    }
