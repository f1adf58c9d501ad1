"""Fixtures for the runtime tests: find node, chromium and the samples' node_modules.

A runtime that is missing skips its tests on a developer's machine; with CI=true (as .ci/run runs)
it fails them instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from exporter.browser import PageServer, chromium_command, find_chromium, run_page  # noqa: F401 (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def require(condition: bool, what: str) -> None:
    """Skip when `what` is missing, except in CI (CI=true), where a missing runtime is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI: .ci/run must install it")
    pytest.skip(f"{what} is not installed here (CI installs it)")


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with both samples' node_modules installed."""
    path = shutil.which("node")
    require(path is not None, "node")
    require((SAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "samples/node/node_modules (npm ci)")
    require((SAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "samples/web/node_modules (npm ci)")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless-capable `chromium`."""
    path = find_chromium()
    require(path is not None, "chromium")
    return path
