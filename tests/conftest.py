"""Shared fixtures: the bundled sample, and exports of it made once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "digits"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled digits sample (models in every format, calib.npz, val.npz, images/)."""
    return SAMPLE


@pytest.fixture(scope="session")
def sample_export(tmp_path_factory) -> "object":
    """One cpu-int8 export of the sample's .pt2 program, shared by every test that only reads it."""
    from exporter.api import export

    out = tmp_path_factory.mktemp("sample_export") / "out"
    return export(
        str(SAMPLE / "digits_cnn.pt2"),
        target="cpu-int8",
        calib=str(SAMPLE / "calib.npz"),
        val=str(SAMPLE / "val.npz"),
        out=str(out),
        latency_repeats=5,
    )


@pytest.fixture(scope="session")
def val_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) of the sample's validation set."""
    data = np.load(SAMPLE / "val.npz")
    return data["input"], data["labels"]
