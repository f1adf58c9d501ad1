"""A missing runtime skips on a developer's machine but fails in CI (CI=true), so CI cannot pass by skipping."""

from __future__ import annotations

import pytest

from .conftest import require


def test_missing_runtime_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed here"):
        require(False, "chromium")


def test_missing_runtime_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing in CI: .ci/run must install it"):
        require(False, "chromium")
    require(True, "chromium")  # present: nothing happens
