"""`bind_to_inputs`, `check_sample` and `infer_input_specs`: the rules and their exact messages."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibration import ListSampleSet, Sample, bind_to_inputs, check_sample, infer_input_specs
from exporter.errors import CalibrationError
from exporter.inputs import InputSpec


def two_key_set() -> ListSampleSet:
    return ListSampleSet(
        [Sample({"b": np.full(2, i, np.int64), "a": np.full(3, i, np.float32)}, origin=f"s{i}") for i in range(3)],
        description="pairs",
    )


def test_single_input_model_takes_the_one_array_whatever_its_key():
    samples = ListSampleSet([Sample({"whatever": np.arange(3.0)}, label=1, origin="o")])
    bound = bind_to_inputs(samples, ["input"])
    assert bound.keys == ("input",)
    assert bound.has_labels
    assert len(bound) == 1
    sample = bound[0]
    np.testing.assert_array_equal(sample.inputs["input"], [0.0, 1.0, 2.0])
    assert (sample.label, sample.origin) == (1, "o")
    assert bind_to_inputs(bound, ["input"]) is bound


def test_npz_single_input_any_key(tmp_path):
    from calibration import open_samples

    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "d.npz", pixels=data, labels=np.arange(4))
    bound = bind_to_inputs(open_samples(str(tmp_path / "d.npz")), ["input"])
    np.testing.assert_array_equal(np.stack([s.inputs["input"] for s in bound]), data)
    assert [s.label for s in bound] == [0, 1, 2, 3]


def test_multi_input_keys_match_in_any_order():
    bound = bind_to_inputs(two_key_set(), ["a", "b"])
    assert bound.keys == ("a", "b")
    sample = bound[2]
    assert list(sample.inputs) == ["a", "b"]
    np.testing.assert_array_equal(sample.inputs["b"], [2, 2])


def test_wrong_keys():
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration data pairs (3 samples) has keys ['b', 'a'] but the model's inputs are ['x', 'y']: "
            "name the arrays after the model inputs"
        ),
    ):
        bind_to_inputs(two_key_set(), ["x", "y"])


def test_several_keys_for_a_single_input_model():
    with pytest.raises(
        CalibrationError,
        match=re.escape("calibration data pairs (3 samples) has keys ['b', 'a'] but the model has one input ['x']"),
    ):
        bind_to_inputs(two_key_set(), ["x"])


SPEC = InputSpec("input", (1, 3, 32, 32), "float32")


def test_check_sample_casts_float64_and_accepts_a_leading_batch_of_one():
    data = np.random.default_rng(0).standard_normal((3, 32, 32))
    out = check_sample(Sample({"input": data}), 0, [SPEC])["input"]
    assert out.dtype == np.float32 and out.shape == (3, 32, 32)
    np.testing.assert_array_equal(out, data.astype(np.float32))
    batched = check_sample(Sample({"input": data[None]}), 0, [SPEC])["input"]
    assert batched.shape == (3, 32, 32)
    gray = InputSpec("input", (1, 1, 4, 4))
    assert check_sample(Sample({"input": np.zeros((4, 4))}), 0, [gray])["input"].shape == (1, 4, 4)


def test_shape_mismatch_names_sample_origin_and_both_shapes():
    sample = Sample({"input": np.zeros((3, 28, 28), np.float32)}, origin="data/cat/x.png")
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration sample 3 (data/cat/x.png): input 'input' has shape (3, 28, 28), expected (3, 32, 32) "
            "(--input-shape or the model's first layer decides)"
        ),
    ):
        check_sample(sample, 3, [SPEC])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf(bad):
    data = np.zeros((3, 32, 32), np.float32)
    data[1, 2, 3] = bad
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration sample 7 (calib.npz[7]): input 'input' contains NaN or Inf values; clean or drop that sample"
        ),
    ):
        check_sample(Sample({"input": data}, origin="calib.npz[7]"), 7, [SPEC])


def test_float64_overflowing_float32_is_caught():
    with pytest.raises(CalibrationError, match=re.escape("contains NaN or Inf values after casting to float32")):
        check_sample(Sample({"input": np.full((3, 32, 32), 1e300)}, origin="o"), 0, [SPEC])


def test_float_and_int_do_not_mix():
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration sample 0 (o): input 'input' has dtype int64, expected float32 (integer data for a float "
            "input); convert the data with .astype('float32')"
        ),
    ):
        check_sample(Sample({"input": np.zeros((3, 32, 32), np.int64)}, origin="o"), 0, [SPEC])
    ids = InputSpec("ids", (1, 4), "int64")
    with pytest.raises(CalibrationError, match=re.escape("input 'ids' has dtype float32, expected int64")):
        check_sample(Sample({"ids": np.zeros(4, np.float32)}), 0, [ids])


def test_int_to_int_casts_when_values_fit():
    spec = InputSpec("q", (1, 3), "uint8")
    out = check_sample(Sample({"q": np.array([0, 7, 255])}), 0, [spec])["q"]
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 7, 255])
    message = "input 'q' has values -1..300 that do not fit uint8 (0..255)"
    with pytest.raises(CalibrationError, match=re.escape(message)):
        check_sample(Sample({"q": np.array([-1, 7, 300])}, origin="o"), 0, [spec])


def test_missing_input_in_sample():
    with pytest.raises(CalibrationError, match=re.escape("calibration sample 0 (o): input 'input' is missing")):
        check_sample(Sample({"other": np.zeros(1)}, origin="o"), 0, [SPEC])


def test_infer_input_specs():
    specs = infer_input_specs(two_key_set(), ["a", "b"])
    assert specs == [InputSpec("a", (1, 3), "float32"), InputSpec("b", (1, 2), "int64")]
    f64 = ListSampleSet([Sample({"x": np.zeros((2, 5))})])
    assert infer_input_specs(f64, ["input"]) == [InputSpec("input", (1, 2, 5), "float32")]


def test_infer_from_empty_set():
    with pytest.raises(
        CalibrationError, match=re.escape("calibration data nothing (0 samples) contains no samples")
    ):
        infer_input_specs(ListSampleSet([], description="nothing"), ["input"])
