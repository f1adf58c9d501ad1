"""Choosing the devices the teacher and the student run on."""

from __future__ import annotations

import torch

from exporter.errors import CompressionError
from exporter.training.settings import device_syntax_error


def resolve_device(value: str, where: str) -> torch.device:
    """The `torch.device` for `value`; raise `CompressionError` when this machine does not have it.

    Rules: `cpu` always exists; `cuda[:N]` needs `torch.cuda.is_available()` and N below the device
    count; `mps` and `xpu` need their backend's `is_available()`.
    """
    error = device_syntax_error(value, where)
    if error:
        raise CompressionError(error)
    device = torch.device(value)
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CompressionError(
                f"{where}: {value} requested but torch.cuda.is_available() is False; use cpu, or a machine "
                "with a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CompressionError(
                f"{where}: {value} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
    if backend is None or not backend.is_available():
        raise CompressionError(f"{where}: {value} requested but torch.{device.type} is not available on this machine")
    return device
