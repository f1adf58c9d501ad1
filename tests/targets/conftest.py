"""Fixtures for the target tests: the shared float ONNX files of `tests/quantizers/sample_models`."""

from __future__ import annotations

import pytest

from tests.quantizers import sample_models


@pytest.fixture(scope="session")
def digits_onnx():
    return sample_models.digits_onnx()


@pytest.fixture(scope="session")
def digits_fixed_onnx():
    return sample_models.digits_fixed_onnx()
