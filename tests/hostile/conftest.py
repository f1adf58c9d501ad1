"""Fixtures of the hostile-input suite."""

from __future__ import annotations

import pytest

from tests.hostile.support import REPO, CliRun, main


@pytest.fixture
def cli(capfd, monkeypatch):
    """Run `exporter ARGS` in-process (from the repo root) and capture stdout/stderr at the file-descriptor level."""
    monkeypatch.chdir(REPO)

    def run(*args: str) -> CliRun:
        capfd.readouterr()
        code = main([str(a) for a in args])
        captured = capfd.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


