"""Session fixtures of the accuracy tests: each hostile model is exported, quantized and evaluated once."""

from __future__ import annotations

import pytest

from tests.accuracy.hostile import Case, build_case, digits_model, make_tiny_range, make_weight_hostile


@pytest.fixture(scope="session")
def weight_hostile(tmp_path_factory) -> Case:
    """Digits CNN with an outlier input channel in `features.3` (see `make_weight_hostile`)."""
    return build_case(make_weight_hostile(digits_model()), tmp_path_factory.mktemp("weight_hostile"))


@pytest.fixture(scope="session")
def tiny_range(tmp_path_factory) -> Case:
    """Digits CNN whose last layer has a tiny-range output on a large offset (see `make_tiny_range`)."""
    return build_case(make_tiny_range(digits_model()), tmp_path_factory.mktemp("tiny_range"))
