"""Fixtures of the compression-pass tests; the tiny models themselves live in `tiny_models`."""

from __future__ import annotations

import pytest

from tests.passes.tiny_models import FAMILIES


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    """Every tiny-model family name in turn."""
    return request.param
