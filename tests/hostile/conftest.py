"""Fixtures of the hostile-input suite."""

from __future__ import annotations

import pytest

from tests.hostile.support import REPO, CliRun, main


@pytest.fixture
def cli(capfd, monkeypatch, tmp_path_factory):
    """Run `exporter ARGS` in-process (from the repo root) and capture stdout/stderr at the file-descriptor level.

    Work folders go to a private TMPDIR, and every run must leave none behind there.
    """
    import os
    import tempfile

    monkeypatch.chdir(REPO)
    work_tmp = tmp_path_factory.mktemp("work-tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(work_tmp))

    def run(*args: str) -> CliRun:
        capfd.readouterr()
        code = main([str(a) for a in args])
        captured = capfd.readouterr()
        assert not [n for n in os.listdir(work_tmp) if n.startswith("exporter-work-")], "a work folder was left behind"
        return CliRun(code, captured.out, captured.err)

    return run


