"""Agreement figures and the validation gate."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.metrics import OutputComparison, cosine_similarity, sqnr_db
from exporter.validate import check_gate
from targets.profile import Tolerances


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


def test_gate_checks_each_threshold_and_skips_unset_ones():
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
