"""edge-exporter: turn a trained PyTorch model into a small, fast, validated ONNX file.

The public API is `export(...)` (same as `exporter export` on the command line) and the error
types in `exporter.errors`. Heavy modules (torch, onnxruntime) load on first use, so importing
this package and `exporter --help` stay fast.
"""

from __future__ import annotations

from typing import Any

from exporter.errors import (
    CalibrationError,
    CompressionError,
    ExporterError,
    ExportError,
    LoadError,
    OutputExistsError,
    PlanError,
    QuantizationError,
    ValidationFailed,
)

__version__ = "0.1.0"

__all__ = [
    "export",
    "ExporterError",
    "PlanError",
    "OutputExistsError",
    "LoadError",
    "ExportError",
    "CalibrationError",
    "CompressionError",
    "QuantizationError",
    "ValidationFailed",
]


def __getattr__(name: str) -> Any:
    if name == "export":
        from exporter.api import export

        return export
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")
