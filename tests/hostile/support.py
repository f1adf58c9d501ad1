"""Helpers of the hostile-input suite: run the CLI in-process and check what it left behind."""


from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exporter.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "digits"
PT2 = str(SAMPLE / "digits_cnn.pt2")
CALIB = str(SAMPLE / "calib.npz")
STATE_DICT = str(SAMPLE / "digits_cnn.state_dict.pt")


@dataclass
class CliRun:
    """Exit code and captured streams of one in-process `exporter` run."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def assert_one_line_error(run: CliRun, code: int, *fragments: str) -> None:
    """Exit `code`, exactly one line on stderr starting with `error: `, holding every fragment, no traceback."""
    assert run.code == code, run.err
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert "Traceback" not in run.err


def leftovers(folder: Path) -> list[str]:
    """Hidden staging/lock/checkpoint folders or files beside an output folder (what a run must not leave)."""
    return sorted(n for n in os.listdir(folder) if n.startswith(".") and any(k in n for k in ("staging", "lock", "old")))


def work_folders(tmp: Path) -> list[str]:
    """The exporter's work folders in TMPDIR `tmp`."""
    return sorted(n for n in os.listdir(tmp) if n.startswith("exporter-work-"))
