"""The mixed-precision search on the digits CNN: supplied timings decide speed, measured errors decide accuracy,
the budget bounds it, the cache is reused. No test here depends on a measured time: timings and whole-model
latencies are supplied wherever a decision depends on them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporter.accuracy.latency import UnitTiming
from exporter.accuracy.search import SearchRequest, run_search
from exporter.accuracy.units import quantized_units


def unit_named(case, module: str) -> str:
    units = quantized_units(onnx.load(str(case.quant_path)))
    return next(u.name for u in units if u.module == module)


def supplied_timings(case, slow: dict[str, tuple[float, float]] = {}) -> dict[str, UnitTiming]:  # noqa: B006 (read only)
    """Every unit 0.01 ms in int8 and 0.02 ms in float, except the `slow` ones (int8 ms, float ms)."""
    units = quantized_units(onnx.load(str(case.quant_path)))
    return {u.name: UnitTiming(*slow.get(u.name, (0.01, 0.02))) for u in units}


def clock_from(timings: dict[str, UnitTiming]):
    """Whole-model latency of each candidate file from the supplied unit timings: no measurement."""

    def clock(files):
        result = {}
        for key, path in files.items():
            model = onnx.load(str(path))
            dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
            total = 0.0
            for name, t in timings.items():
                node = next((n for n in model.graph.node if n.name == name), None)
                is_float = node is None or (node.op_type in ("Conv", "Gemm") and node.input[1] not in dequantized)
                total += t.float_ms if is_float else t.int8_ms
            result[key] = total
        return result

    return clock


def request(case, work: Path, **changes) -> SearchRequest:
    base = SearchRequest(
        float_path=case.float_path, plain_path=case.quant_path, prepared_path=case.work / "quantize" / "preprocessed.onnx",
        plain_figures=case.evaluator.onnx(case.quant_path), evaluator=case.evaluator, goal=case.target.tolerances,
        work_dir=work, latency_feed={"input": case.feeds(1)[0]["input"][:1]},
        ranking_feeds=[{"input": f["input"][:32]} for f in case.feeds(1)], seconds=120.0, max_trials=8,
        scheme=repr(case.target.quantization),
    )
    return dataclasses.replace(base, **changes)


def runs_in_float(path: Path, node_name: str, tmp_path: Path) -> bool:
    """Does onnxruntime, after its own graph optimizations (QDQ fusion, WeightBiasQuantization), still run
    `node_name` as a float Conv/Gemm with a float weight initializer?"""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    floats = {i.name for i in optimized.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    node = [n for n in optimized.graph.node if n.name == node_name]
    return len(node) == 1 and node[0].op_type in ("Conv", "FusedConv", "Gemm", "FusedGemm") and node[0].input[1] in floats


@pytest.fixture(scope="module")
def loose(weight_hostile):
    """The hostile case judged with a goal its plain int8 model meets (so only speed can move a unit)."""
    return dataclasses.replace(weight_hostile.target.tolerances, min_top1_agreement=0.0, min_cosine=0.0,
                               min_sqnr_db=None, max_accuracy_drop=None)


def test_a_unit_slower_in_int8_ends_float_in_the_graph_onnxruntime_runs(weight_hostile, loose, tmp_path) -> None:
    slow = unit_named(weight_hostile, "features.7")
    timings = supplied_timings(weight_hostile, {slow: (0.2, 0.05)})
    outcome = run_search(request(weight_hostile, tmp_path / "search", goal=loose, timings=timings, clock=clock_from(timings)))
    assert outcome.met and outcome.best.float_units == (slow,)
    assert runs_in_float(outcome.best_path, slow, tmp_path)
    for other in (unit_named(weight_hostile, m) for m in ("features.0", "features.3", "classifier.0")):
        assert not runs_in_float(outcome.best_path, other, tmp_path)  # the rest stays int8
    row = next(d for d in outcome.decisions if d.node == slow)
    assert row.precision == "float" and row.why.startswith("int8 slower: 0.200 ms vs 0.050 ms")
    assert row.module == "features.7" and row.saved_ms == pytest.approx(-0.15)
    assert {d.precision for d in outcome.decisions if d.node != slow} == {"int8"}
    # The written file computes what the plain model computes, up to that layer's int8 error.
    session = ort.InferenceSession(str(outcome.best_path), providers=["CPUExecutionProvider"])
    feed = weight_hostile.feeds(1)[0]
    out = session.run(None, feed)[0]
    plain = ort.InferenceSession(str(weight_hostile.quant_path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.mean(out.argmax(1) == plain.argmax(1)) > 0.9


def test_when_every_mix_is_slower_the_float_model_is_written(weight_hostile, loose, tmp_path) -> None:
    timings = {name: UnitTiming(0.05, 0.01) for name in supplied_timings(weight_hostile)}
    outcome = run_search(request(weight_hostile, tmp_path / "search", goal=loose, timings=timings,
                                 clock=lambda files: {k: (1.0 if p == weight_hostile.float_path else 2.0) for k, p in files.items()}))
    assert outcome.chose_float_model and outcome.met
    assert "no int8 candidate that meets the goal is faster than the float model on this CPU: the float model is written" in outcome.why
    assert outcome.best_path.read_bytes() == weight_hostile.float_path.read_bytes()
    assert {d.precision for d in outcome.decisions} == {"float"}


def test_hostile_layer_goes_float_and_the_goal_is_met(weight_hostile, tmp_path) -> None:
    assert weight_hostile.summary["top1_agreement"] < 0.5  # plain int8 fails the gate
    timings = supplied_timings(weight_hostile)
    outcome = run_search(request(weight_hostile, tmp_path / "search", timings=timings, clock=clock_from(timings)))
    hostile = unit_named(weight_hostile, "features.3")
    assert outcome.met and hostile in outcome.best.float_units
    again = weight_hostile.evaluator.onnx(outcome.best_path)  # the written file, judged again from disk
    assert all(c.passed for c in weight_hostile.evaluator.gate(again))
    worst = min((d for d in outcome.decisions if d.error_db is not None), key=lambda d: d.error_db)
    assert worst.module == "features.3" and worst.precision == "float" and worst.why.startswith("error: int8 alone costs")
    assert [t.label for t in outcome.trials][0] == "plain int8" and outcome.trials[-1].is_float_model


def test_time_budget_respected_and_best_candidate_written(weight_hostile, tmp_path) -> None:
    timings = supplied_timings(weight_hostile)
    outcome = run_search(request(weight_hostile, tmp_path / "zero", timings=timings, clock=clock_from(timings), seconds=0.0))
    assert [t.label for t in outcome.trials] == ["plain int8", "float model"]  # no search trial fits in 0 s
    assert outcome.stop_reason.startswith("time budget reached")
    assert outcome.met and outcome.chose_float_model  # only the float model meets the goal
    one = run_search(request(weight_hostile, tmp_path / "one", timings=timings, clock=clock_from(timings), max_trials=1))
    assert [t.number for t in one.trials] == [0, 1, 2] and one.trials[2].is_float_model  # exactly one search trial
    assert one.best_path.is_file()
    best = weight_hostile.evaluator.onnx(one.best_path)
    assert best.value("top1_agreement") == pytest.approx(one.best.figures.value("top1_agreement"))


def test_unmet_goal_says_why_and_writes_the_closest(weight_hostile, tmp_path) -> None:
    timings = supplied_timings(weight_hostile)
    goal = dataclasses.replace(weight_hostile.target.tolerances, min_sqnr_db=150.0)
    outcome = run_search(request(weight_hostile, tmp_path / "s", goal=goal, timings=timings, clock=clock_from(timings),
                                 max_trials=2))
    assert not outcome.met and outcome.why.startswith("goal NOT met after 2 trial(s) (trial limit reached (2))")
    closest = min(outcome.trials, key=lambda t: t.deficit)
    assert outcome.best.deficit == closest.deficit and "sqnr_db" in outcome.why
    assert outcome.best_path.is_file()


def test_measurements_are_cached_and_reused(weight_hostile, tmp_path) -> None:
    cache = tmp_path / "search-cache.json"
    first = run_search(request(weight_hostile, tmp_path / "a", cache_out=cache, max_trials=2))
    assert first.cache_hit == {"timings": False, "errors": False} and cache.is_file()
    second = run_search(request(weight_hostile, tmp_path / "b", cache_in=cache, cache_out=tmp_path / "again.json",
                                goal=dataclasses.replace(weight_hostile.target.tolerances, min_cosine=0.999), max_trials=2))
    assert second.cache_hit == {"timings": True, "errors": True}
    assert {d.node: d.error_db for d in second.decisions} == {d.node: d.error_db for d in first.decisions}
    other = run_search(request(weight_hostile, tmp_path / "c", cache_in=cache, max_trials=1,
                               ranking_feeds=[{"input": weight_hostile.feeds(1)[0]["input"][:16]}]))
    assert other.cache_hit["errors"] is False  # other calibration batches: another key
