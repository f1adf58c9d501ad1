"""Fixtures for the calibration tests: tiny files written into tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, ...] | int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """Write a solid-colour image of `size` (width, height) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def image_writer():
    return write_image


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """Write `name.py` with `source` into tmp_path, make tmp_path the working directory, and forget the
    module afterwards so each test imports its own."""
    monkeypatch.chdir(tmp_path)
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
