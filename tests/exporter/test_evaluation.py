"""The Evaluator: figures against the exported model, accuracy against the original, fixed-batch files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporter.evaluation import Evaluator
from exporter.figures import KindDecision
from exporter.validate import Reference, ReferenceBatch
from targets import get_target

INT8 = get_target("cpu-int8").tolerances


def _identity_file(path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _reference(outputs: list[np.ndarray], feeds: list[np.ndarray], labels: list[np.ndarray]) -> Reference:
    batches = [ReferenceBatch({"input": f}, (o,), lab) for f, o, lab in zip(feeds, outputs, labels)]
    return Reference(batches, ("output",), (KindDecision("output", "logits", "test"),))


@pytest.fixture()
def case(tmp_path):
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((5, 4)).astype(np.float32) for _ in range(3)]
    labels = [f.argmax(1) for f in feeds]
    labels[0][:2] = (labels[0][:2] + 1) % 4  # the original model is right on 13 of 15
    path = tmp_path / "identity.onnx"
    _identity_file(path)
    return path, feeds, labels


def test_gate_compares_with_the_exported_model_and_accuracy_with_the_original(case):
    path, feeds, labels = case
    evaluator = Evaluator(original=_reference(feeds, feeds, labels), tolerances=INT8)
    plain = evaluator.onnx(path).outputs[0]
    assert (plain.cosine, plain.top1_agreement, plain.max_abs_error) == (pytest.approx(1.0), 1.0, 0.0)
    assert plain.reference_accuracy == pytest.approx(13 / 15) and plain.accuracy_drop == pytest.approx(0.0)

    # After a compression pass: the compressed model's outputs are the file's reference (the file is the
    # identity, so it differs from them by exactly the compression change); accuracy stays the original's.
    compressed = [f * 0.5 for f in feeds]
    evaluator.use_exported(_reference(compressed, feeds, labels))
    gate = evaluator.onnx(path).outputs[0]
    assert gate.max_abs_error == pytest.approx(max(float(np.abs(f * 0.5).max()) for f in feeds))
    assert gate.reference_accuracy == pytest.approx(13 / 15)
    assert evaluator.onnx(path, versus="original").outputs[0].max_abs_error == 0.0
    assert [c.figure for c in evaluator.gate(evaluator.onnx(path))] == ["top1_agreement", "cosine", "sqnr_db", "accuracy_drop"]


def test_fixed_batch_files_see_cut_or_repeated_batches(case):
    path, feeds, labels = case
    evaluator = Evaluator(original=_reference(feeds, feeds, labels), tolerances=INT8, fixed_batch=2)
    assert evaluator.onnx(path).samples == 6  # 3 batches cut to 2 rows
    evaluator = Evaluator(original=_reference(feeds, feeds, labels), tolerances=INT8, fixed_batch=7)
    figures = evaluator.onnx(path)
    assert figures.samples == 21 and figures.outputs[0].max_abs_error == 0.0  # rows repeated with their outputs


def test_reference_unpacks_as_feed_first_output_labels(case):
    _, feeds, labels = case
    reference = _reference(feeds, feeds, labels)
    feed, output, lab = reference[0]
    assert feed["input"] is feeds[0] and output is feeds[0] and lab is labels[0]
    assert len(reference) == 3 and reference.stacked(0).shape == (15, 4)
    assert np.array_equal(reference.labels(), np.concatenate(labels))
