"""Per-layer error: the engineered layer ranks first, and the figures mean what they say."""

import numpy as np
import pytest

from exporter.accuracy.sensitivity import ErrorSums, layer_sensitivity, node_ranking


@pytest.fixture(scope="module")
def weight_rows(weight_hostile, tmp_path_factory):
    return layer_sensitivity(weight_hostile.float_path, weight_hostile.quant_path, weight_hostile.feeds(2),
                             tmp_path_factory.mktemp("sens_weight"))


def test_outlier_input_channel_ranks_first(weight_rows) -> None:
    worst = weight_rows[0]
    assert worst["module"] == "features.3" and worst["op_type"] == "Conv"
    ranking = node_ranking(weight_rows)
    assert ranking[0]["module"] == "features.3"
    assert ranking[0]["worst_sqnr_db"] < 5.0 < 20.0 < ranking[1]["worst_sqnr_db"]
    activation = next(r for r in weight_rows if r["module"] == "features.3" and r["kind"] == "activation")
    # The weights are the culprit, not the activations around the layer.
    assert activation["weight_sqnr_db"] < 5.0 and activation["input_sqnr_db"] > 30.0 and activation["output_sqnr_db"] > 30.0


def test_rows_carry_the_documented_fields(weight_rows) -> None:
    kinds = {r["kind"] for r in weight_rows}
    assert kinds == {"activation", "weight"}
    for row in weight_rows:
        assert {"tensor", "node", "op_type", "module", "sqnr_db", "relative_error", "kind"} <= set(row)
        assert row["module"], row
    weights = [r for r in weight_rows if r["kind"] == "weight"]
    assert {r["module"] for r in weights} == {"features.0", "features.3", "features.7", "classifier.0", "classifier.2"}
    assert all(r["tensor_sqnr_db"] is not None for r in weights)
    # The weight-space SQNR of the outlier layer looks fine: why the figures are taken in output space.
    assert next(r for r in weights if r["module"] == "features.3")["tensor_sqnr_db"] > 30.0
    assert [r["sqnr_db"] for r in weight_rows] == sorted(r["sqnr_db"] for r in weight_rows)


def test_tiny_range_output_ranks_first(tiny_range, tmp_path) -> None:
    rows = layer_sensitivity(tiny_range.float_path, tiny_range.quant_path, tiny_range.feeds(1), tmp_path)
    worst = rows[0]
    assert (worst["module"], worst["kind"]) == ("classifier.2", "activation")
    assert worst["output_sqnr_db"] < 10.0 < 30.0 < worst["weight_sqnr_db"]
    assert worst["cumulative_sqnr_db"] > 30.0  # plain SQNR of the logits: the offset hides the loss


def test_centered_sqnr_sees_through_an_offset() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((64, 10)) * 0.01
    reference = 30.0 + signal
    candidate = 30.0 + np.round(signal / 0.12) * 0.12  # one uint8 step of a [0, 30] range
    sums = ErrorSums()
    sums.add(reference, candidate)
    assert sums.plain_sqnr_db > 40.0
    assert sums.sqnr_db < 1.0
    exact = ErrorSums()
    exact.add(reference, reference)
    assert exact.sqnr_db == 200.0 and exact.relative_error == 0.0
