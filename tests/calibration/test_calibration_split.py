"""`split_samples`: seeded, disjoint, exact sizes, clamped defaults and explicit-count errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibration import ListSampleSet, Sample, split_samples
from exporter.errors import CalibrationError, PlanError


def numbered(count: int) -> ListSampleSet:
    return ListSampleSet([Sample({"x": np.array([i])}, origin=str(i)) for i in range(count)], description="numbers")


def values(samples) -> list[int]:
    return [int(s.inputs["x"][0]) for s in samples]


def test_default_split_sizes_disjoint_and_covering():
    calib, val = split_samples(numbered(50), None, None)
    assert (len(calib), len(val)) == (40, 10)
    assert set(values(calib)).isdisjoint(values(val))
    assert sorted(values(calib) + values(val)) == list(range(50))
    assert values(calib) == sorted(values(calib))
    assert calib.description == "40 of numbers (50 samples)"


def test_split_is_deterministic_and_seeded():
    first = [values(s) for s in split_samples(numbered(30), 10, 5, seed=3)]
    again = [values(s) for s in split_samples(numbered(30), 10, 5, seed=3)]
    other = [values(s) for s in split_samples(numbered(30), 10, 5, seed=4)]
    assert first == again
    assert first != other
    assert [len(v) for v in first] == [10, 5]
    assert set(first[0]).isdisjoint(first[1])


def test_validation_set_does_not_depend_on_the_calibration_count():
    _, val_small = split_samples(numbered(40), 5, None)
    _, val_large = split_samples(numbered(40), 30, None)
    assert values(val_small) == values(val_large) and len(val_small) == 8


def test_clamping_when_counts_are_not_given():
    calib, val = split_samples(numbered(1), None, None)
    assert (values(calib), values(val)) == ([0], [])
    calib, val = split_samples(numbered(2), None, None)
    assert (len(calib), len(val)) == (1, 1)
    calib, val = split_samples(numbered(10), 9, None)  # default val of 2 shrinks to the 1 left over
    assert (len(calib), len(val)) == (9, 1)
    calib, val = split_samples(numbered(10), None, 0)
    assert (len(calib), len(val)) == (10, 0)


def test_explicit_counts_that_do_not_fit():
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "asked for 8 calibration + 5 validation samples but calibration data numbers (10 samples) has only 10: "
            "lower --calib-samples or the validation count"
        ),
    ):
        split_samples(numbered(10), 8, 5)
    message = "asked for 11 calibration samples but calibration data numbers (10 samples) has only 10"
    with pytest.raises(CalibrationError, match=re.escape(message)):
        split_samples(numbered(10), 11, None)
    message = "has only 10 and calibration needs at least 1: ask for at most 9"
    with pytest.raises(CalibrationError, match=re.escape(message)):
        split_samples(numbered(10), None, 10)
    with pytest.raises(CalibrationError, match=re.escape("calibration data nothing (0 samples) contains no samples")):
        split_samples(ListSampleSet([], description="nothing"), None, None)


def test_bad_split_options():
    with pytest.raises(PlanError, match=re.escape("bad calibration sample count 0: expected a positive integer")):
        split_samples(numbered(5), 0, None)
    with pytest.raises(PlanError, match=re.escape("bad validation fraction 1.5: expected a number between 0 and 1")):
        split_samples(numbered(5), None, None, val_fraction=1.5)
