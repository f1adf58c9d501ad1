"""Agreement figures, output kinds and the validation gate (one rule table for every output kind)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from exporter.errors import PlanError
from exporter.figures import (
    RULES,
    Figures,
    OutputFigures,
    check,
    compare_output,
    decide_kinds,
    detect_kind,
    meets,
    parse_output_kinds,
    rule_passes,
)
from exporter.metrics import OutputComparison, cosine_similarity, sqnr_db
from exporter.validate import check_gate
from targets import get_target
from targets.profile import Target, Tolerances

INT8 = get_target("cpu-int8").tolerances


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _classifier_logits(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a confident classifier: the true class 6 above Gaussian noise; labels right 90 % of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.standard_normal((n, classes))
    winners = np.where(rng.random(n) < 0.9, labels, (labels + 1) % classes)
    logits[np.arange(n), winners] += 6.0
    return logits.astype(np.float32), labels


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_cosine_and_sqnr_known_values():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert cosine_similarity(a, a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(0.0)
    ref = np.ones((4, 10))
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)  # noise 1% of power
    assert sqnr_db(ref, ref) == float("inf")


def test_comparison_summary_numbers():
    comparison = OutputComparison()
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [2.0, 3.0, 0.0]])
    cand = ref.copy()
    cand[3] = [3.5, 3.0, 0.0]  # flips the top-1 of the last sample
    comparison.add(ref[:2], cand[:2], np.array([0, 1]))
    comparison.add(ref[2:], cand[2:], np.array([2, 0]))
    s = comparison.summary()
    assert s["samples"] == 4
    assert s["top1_agreement"] == 0.75
    assert s["max_abs_error"] == pytest.approx(1.5)
    assert s["mean_abs_error"] == pytest.approx(1.5 / 12)
    assert s["reference_accuracy"] == 0.75 and s["candidate_accuracy"] == 1.0


# --- output kinds ------------------------------------------------------------------------------------


def test_detect_kind_by_what_the_values_are():
    logits, labels = _classifier_logits()
    rng = np.random.default_rng(1)
    cases = {
        "softmax rows": (_softmax(logits), None, "probabilities"),
        "log-softmax rows": (np.log(_softmax(logits)), None, "logits"),
        "unit-norm 256-d rows": (_unit_rows(64, 256, 2), None, "embedding"),
        "voice activity per frame": (1 / (1 + np.exp(-rng.standard_normal((32, 50)))), None, "probability"),
        "one probability per sample": (rng.random((32, 1)), None, "probability"),
        "one unbounded value per sample": (rng.standard_normal((32, 1)) * 5, None, "regression"),
        "feature map": (rng.standard_normal((4, 8, 6, 6)), None, "regression"),
        "logits with labels": (logits, labels, "logits"),
        "peaked logits, no labels": (logits, None, "logits"),
        "unnormalised Gaussian 384-d": (rng.standard_normal((100, 384)) * 3, None, "embedding"),
    }
    for case, (values, lab, expected) in cases.items():
        kind, reason = detect_kind(np.asarray(values, dtype=np.float32), lab)
        assert kind == expected, f"{case}: {kind} ({reason})"


def test_embedding_with_one_dominant_dimension_is_not_called_logits():
    # Transformer CLS vectors: one "rogue" dimension far above the rest in every row.
    rows = np.random.default_rng(3).standard_normal((100, 384))
    rows[:, 17] += 40.0
    kind, reason = detect_kind(rows.astype(np.float32))
    assert kind == "embedding"
    assert "arg-max on 1 of 384 columns" in reason


def test_labels_that_do_not_match_the_argmax_do_not_make_a_classifier():
    # Speaker embeddings with speaker-id labels: the arg-max of an embedding is not the speaker.
    rows = np.random.default_rng(4).standard_normal((120, 64)) * 2
    labels = np.random.default_rng(5).integers(0, 10, 120)
    kind, reason = detect_kind(rows.astype(np.float32), labels)
    assert kind == "embedding"
    assert "labels match its arg-max on only" in reason


def test_an_output_shaped_like_an_input_is_a_state_not_logits():
    # Silero VAD returns its LSTM state (N, 2, 128) beside the probability; it is fed back as input 'state'.
    rng = np.random.default_rng(6)
    state = np.concatenate([np.tanh(rng.standard_normal((50, 1, 128))), rng.standard_normal((50, 1, 128)) * 3], axis=1)
    state[:, :, 7] += 8.0  # a few cells far above the rest, as trained LSTM states have
    assert detect_kind(state.astype(np.float32))[0] == "logits"  # alone, it looks like peaked scores
    kind, reason = detect_kind(state.astype(np.float32), None, {"x": (50, 576), "state": (50, 2, 128)})
    assert (kind, reason) == ("regression", "it has the shape of input 'state' (2, 128) (a state fed back, or an input-shaped result)")


def test_reasons_say_why():
    assert detect_kind(_unit_rows(8, 32, 0)) == ("embedding", "every row of 32 values has unit L2 norm")
    logits, labels = _classifier_logits()
    kind, reason = detect_kind(logits, labels)
    assert reason == f"the arg-max of its 10 columns matches the labels on {np.mean(logits.argmax(1) == labels):.0%} of samples"


def test_parse_output_kinds_and_its_messages():
    assert parse_output_kinds(None) == ()
    assert parse_output_kinds(["embedding"]) == (("", "embedding"),)
    assert parse_output_kinds(["output_0=logits", "output_1=Embedding"]) == (("output_0", "logits"), ("output_1", "embedding"))
    with pytest.raises(PlanError) as bad:
        parse_output_kinds(["vector"])
    assert str(bad.value) == (
        "bad --output-kind 'vector': expected KIND or OUTPUT=KIND with KIND one of logits, probabilities, "
        "probability, embedding, regression (e.g. --output-kind embedding or --output-kind output_1=logits)"
    )
    with pytest.raises(PlanError, match=r"^--output-kind sets 'output_1' twice$"):
        parse_output_kinds(["output_1=logits", "output_1=embedding"])


def test_decide_kinds_override_by_name_and_unknown_name():
    logits, labels = _classifier_logits()
    emb = _unit_rows(len(logits), 32, 6)
    names = ("output_0", "output_1")
    detected = decide_kinds(names, [logits, emb], labels)
    assert [(d.kind, d.overridden) for d in detected] == [("logits", False), ("embedding", False)]
    forced = decide_kinds(names, [logits, emb], labels, (("output_1", "regression"),))
    assert [d.kind for d in forced] == ["logits", "regression"]
    assert forced[1].reason == "set by --output-kind regression" and forced[1].overridden
    every = decide_kinds(names, [logits, emb], labels, (("", "embedding"),))
    assert [d.kind for d in every] == ["embedding", "embedding"]
    with pytest.raises(PlanError) as bad:
        decide_kinds(names, [logits, emb], labels, (("scores", "logits"),))
    assert str(bad.value) == "--output-kind names output 'scores' but the model's outputs are output_0, output_1"


# --- figures per kind ------------------------------------------------------------------------------


def test_speaker_embedding_at_cosine_09995_passes_and_is_not_judged_by_agreement():
    # The case from the issue: a 256-d L2-normalised embedding whose int8 copy keeps cosine 0.9995.
    ref = _unit_rows(200, 256, 7)
    noise = np.random.default_rng(8).standard_normal(ref.shape) * 0.0316 / np.sqrt(256)
    cand = ref + noise.astype(np.float32)
    kind, _ = detect_kind(ref)
    figures = Figures((compare_output("output", kind, ref, cand),))
    out = figures.outputs[0]
    assert out.kind == "embedding" and out.top1_agreement is None
    assert 0.9993 < out.cosine < 0.9997
    checks = check(figures, INT8)
    assert [(c.figure, c.tolerance, c.threshold) for c in checks] == [("cosine", "min_embedding_cosine", 0.99)]
    assert all(c.passed for c in checks)
    # Judged as logits, the arg-max of near-tied embedding values flips and the gate would fail.
    as_logits = Figures((compare_output("output", "logits", ref, cand),))
    assert as_logits.outputs[0].top1_agreement < INT8.min_top1_agreement
    assert not meets(as_logits, INT8)


def test_embedding_falls_back_to_min_cosine_when_no_embedding_threshold_is_set():
    ref = _unit_rows(50, 64, 9)
    figures = Figures((compare_output("output", "embedding", ref, ref * 0.5 + _unit_rows(50, 64, 10) * 0.5),))
    checks = check(figures, Tolerances(min_cosine=0.98, min_top1_agreement=0.95))
    assert [(c.figure, c.tolerance, c.passed) for c in checks] == [("cosine", "min_cosine", False)]


def test_classifier_judged_by_agreement_cosine_sqnr_and_accuracy_drop():
    logits, labels = _classifier_logits()
    cand = logits + np.random.default_rng(11).standard_normal(logits.shape).astype(np.float32) * 0.8
    figures = Figures((compare_output("output", "logits", logits, cand, labels),))
    out = figures.outputs[0]
    expected_top1 = float(np.mean(logits.argmax(1) == cand.argmax(1)))
    assert out.top1_agreement == pytest.approx(expected_top1)
    assert out.reference_accuracy == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    assert out.accuracy_drop == pytest.approx(out.reference_accuracy - out.candidate_accuracy)
    checks = {c.figure: c for c in check(figures, INT8)}
    assert list(checks) == ["top1_agreement", "cosine", "sqnr_db", "accuracy_drop"]
    assert checks["top1_agreement"].measured == pytest.approx(expected_top1)
    assert checks["sqnr_db"].measured == pytest.approx(sqnr_db(logits, cand))


def test_probability_judged_by_mean_error_and_decision_agreement():
    rng = np.random.default_rng(12)
    ref = 1 / (1 + np.exp(-rng.standard_normal((400, 1)) * 3))
    cand = np.clip(ref + rng.standard_normal(ref.shape) * 0.02, 0, 1)
    labels = (ref[:, 0] >= 0.5).astype(np.int64)
    labels[:20] = 1 - labels[:20]  # the reference is right on 95 %
    out = compare_output("vad", "probability", ref, cand, labels)
    assert out.top1_agreement is None
    assert out.decision_agreement == pytest.approx(float(np.mean((ref >= 0.5) == (cand >= 0.5))))
    assert out.reference_accuracy == pytest.approx(0.95)
    assert out.mean_abs_error == pytest.approx(float(np.mean(np.abs(ref - cand))))
    checks = check(Figures((out,)), INT8)
    assert [c.figure for c in checks] == ["decision_agreement", "mean_abs_error", "accuracy_drop"]
    assert [c.tolerance for c in checks] == ["min_decision_agreement", "max_probability_mean_abs_error", "max_accuracy_drop"]
    assert all(c.passed for c in checks)
    flipped = compare_output("vad", "probability", ref, 1.0 - ref)
    failed = {c.figure: c for c in check(Figures((flipped,)), INT8)}
    assert not failed["decision_agreement"].passed and not failed["mean_abs_error"].passed


def test_every_output_is_judged_and_a_bad_second_output_is_named():
    logits, labels = _classifier_logits()
    emb = _unit_rows(len(logits), 32, 13)
    figures = Figures((
        compare_output("output_0", "logits", logits, logits, labels),
        compare_output("output_1", "embedding", emb, _unit_rows(len(logits), 32, 14)),
    ))
    checks = check_gate(figures, INT8)
    assert [(c.output, c.figure) for c in checks] == [
        ("output_0", "top1_agreement"), ("output_0", "cosine"), ("output_0", "sqnr_db"),
        ("output_0", "accuracy_drop"), ("output_1", "cosine"),
    ]
    bad = [c for c in checks if not c.passed]
    assert len(bad) == 1
    assert bad[0].describe() == f"output_1: cosine {bad[0].measured:.4g} >= 0.99: FAIL"
    assert abs(bad[0].measured) < 0.2  # unrelated random directions


def test_aggregate_is_the_worst_output_and_round_trips():
    a = OutputFigures("output_0", "logits", 10, 0.5, 0.1, 0.999, 30.0, top1_agreement=0.9)
    b = OutputFigures("output_1", "regression", 10, 2.0, 0.3, 0.95, 12.0)
    figures = Figures((a, b))
    assert figures.value("cosine") == 0.95 and figures.value("sqnr_db") == 12.0
    assert figures.value("max_abs_error") == 2.0 and figures.value("top1_agreement") == 0.9
    assert figures.value("decision_agreement") is None
    data = figures.to_dict()
    assert data["cosine"] == 0.95 and [o["name"] for o in data["outputs"]] == ["output_0", "output_1"]
    assert Figures.from_dict(data) == figures
    assert figures.output("output_1") == b


def test_legacy_flat_summary_is_still_judged_as_one_classifier():
    summary = {"top1_agreement": 0.94, "cosine": 0.995, "sqnr_db": 21.0, "max_abs_error": 0.3,
               "reference_accuracy": 0.98, "candidate_accuracy": 0.95}
    checks = {c.figure: c for c in check_gate(summary, Tolerances(min_top1_agreement=0.95, min_cosine=0.99, max_accuracy_drop=0.02))}
    assert set(checks) == {"top1_agreement", "cosine", "accuracy_drop"}
    assert not checks["top1_agreement"].passed and checks["cosine"].passed
    assert checks["accuracy_drop"].measured == pytest.approx(0.03) and not checks["accuracy_drop"].passed
    assert checks["top1_agreement"].describe() == "top1_agreement 0.94 >= 0.95: FAIL"


def test_regression_outputs_have_no_top1():
    comparison = OutputComparison()
    comparison.add(np.ones((3, 1)), np.ones((3, 1)))
    assert comparison.summary()["top1_agreement"] is None
    out = compare_output("output", "regression", np.arange(6.0).reshape(3, 2), np.arange(6.0).reshape(3, 2) + 0.1)
    assert out.top1_agreement is None and out.decision_agreement is None
    assert out.max_abs_error == pytest.approx(0.1)


def test_the_one_rule_comparison():
    assert rule_passes(0.95, 0.95, ">=") and not rule_passes(0.9499, 0.95, ">=")
    assert rule_passes(0.03 + 1e-13, 0.03, "<=") and not rule_passes(0.0301, 0.03, "<=")
    with pytest.raises(ValueError):
        rule_passes(1.0, 1.0, "==")
    # every rule names a real Tolerances field and a real figure
    fields = {f.name for f in dataclasses.fields(Tolerances)}
    figures = {f.name for f in dataclasses.fields(OutputFigures)} | {"accuracy_drop"}
    for rule in RULES:
        assert set(rule.tolerance) <= fields and rule.figure in figures


@pytest.mark.parametrize(
    "table, message",
    [
        ({"min_embedding_cosine": 1.5}, "t.toml: tolerances.min_embedding_cosine must be in (0, 1], got 1.5"),
        ({"max_probability_mean_abs_error": 0.0}, "t.toml: tolerances.max_probability_mean_abs_error must be in (0, 1), got 0.0"),
        ({"decision_threshold": 1.0}, "t.toml: tolerances.decision_threshold must be in (0, 1), got 1.0"),
        ({"min_decision_agreement": "high"}, "t.toml: [tolerances]: field 'min_decision_agreement' must be a number, got 'high'"),
        ({"max_accuracy_drop": 3}, "t.toml: tolerances.max_accuracy_drop must be a fraction in [0, 1), got 3.0"),
        ({"min_cosine_embedding": 0.9}, "t.toml: [tolerances]: unknown field 'min_cosine_embedding'"),
    ],
)
def test_target_tolerances_are_validated(table, message):
    with pytest.raises(PlanError) as bad:
        Target.from_dict({"name": "t", "description": "d", "tolerances": table}, "t.toml")
    assert str(bad.value).startswith(message)


def test_a_cosine_search_goal_also_holds_embeddings_to_it():
    from exporter.accuracy.budget import AccuracyBudget

    goal = AccuracyBudget.parse("cosine=0.9999").tolerances(INT8)
    assert (goal.min_cosine, goal.min_embedding_cosine) == (0.9999, 0.9999)
    ref = _unit_rows(100, 64, 15)
    near = ref + np.random.default_rng(16).standard_normal(ref.shape).astype(np.float32) * 0.03 / 8
    figures = Figures((compare_output("output", "embedding", ref, near),))
    assert 0.999 < figures.value("cosine") < 0.9999
    assert meets(figures, INT8) and not meets(figures, goal)
