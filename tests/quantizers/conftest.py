"""Fixtures for the quantizer tests: the shared float ONNX files of `sample_models` (exported once per session)."""

from __future__ import annotations

import pytest

from tests.quantizers import sample_models


@pytest.fixture(scope="session")
def digits_onnx():
    return sample_models.digits_onnx()


@pytest.fixture(scope="session")
def encoder_onnx():
    return sample_models.encoder_onnx()
