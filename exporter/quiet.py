"""Silencing third-party chatter: onnxruntime's quantization tools and torch's exporters print and log freely."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """Swallow stdout and root-logger messages below CRITICAL (onnxruntime's quantization tools use both)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """Silence torch.onnx / torch.export progress prints, warnings and optional-dependency notices."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """For a whole CLI run without `-v`: no logged tracebacks or warnings from torch, onnx, onnxruntime, onnxscript.

    The exporter's own errors say what went wrong in one line; the libraries' logs (torch.export.load logs a
    full traceback before raising) and Python warnings would bury it.
    """
    names = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    children = [lg for name, lg in logging.root.manager.loggerDict.items()
                if isinstance(lg, logging.Logger) and name.split(".")[0] in names and lg.level not in (logging.NOTSET,)]
    child_levels = [lg.level for lg in children]
    for lg in children:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers + children, levels + child_levels):
            lg.setLevel(level)
