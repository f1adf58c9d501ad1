"""Checkpoints that let a long run resume where it stopped.

One file per run, `<folder>/checkpoint.pt`, rewritten atomically after every epoch. It holds the
student's and the optimizer's state, the number of epochs and steps done, the best student so far
with its epoch and figures, the history, the samples seen and the seconds spent, and a
fingerprint of the run (data size, student shapes and starting weights, training settings that
change the result). Resuming with a different fingerprint raises `CompressionError` naming the
first difference, because continuing it would train a different student than the one asked for.
Checkpoints are our own files, written by this code, so loading them with `weights_only=False`
is safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.errors import CompressionError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1

# Settings that do not change the trained student, so a resume may change them (e.g. more minutes).
RESUMABLE_CHANGES = ("epochs", "minutes", "teacher_device", "student_device")


def fingerprint(model: nn.Module, sample_count: int, settings: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run: data size, parameter shapes, a checksum of the starting weights, settings."""
    with torch.no_grad():
        shapes = [[name, list(p.shape)] for name, p in model.state_dict().items()]
        checksum = sum(float(p.double().abs().sum()) for p in model.state_dict().values() if p.is_floating_point())
    kept = {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}
    return {
        "samples": sample_count,
        "shapes": shapes,
        "start_checksum": round(checksum, 3),
        "settings": kept,
    }


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], path: Path, flag: str) -> None:
    """Raise `CompressionError` when the checkpoint at `path` belongs to a different run."""
    for key in ("samples", "shapes", "start_checksum"):
        if saved.get(key) != current.get(key):
            what = {"samples": "training data", "shapes": "student model", "start_checksum": "student weights"}[key]
            raise CompressionError(
                f"checkpoint {path} was written for a different {what} ({key} differs): drop --resume to start "
                f"over, or point {flag} elsewhere"
            )
    old, new = saved.get("settings", {}), current.get("settings", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise CompressionError(
                f"checkpoint {path} was written with {key}={old.get(key)!r} but this run has {key}={new.get(key)!r}: "
                "use the same settings to resume, or drop --resume to start over"
            )


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `<folder>/checkpoint.pt` atomically (a crash mid-write keeps the old file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    temporary = path.with_suffix(".tmp")
    torch.save({"format": FORMAT_VERSION, **state}, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The saved state in `folder`, or None when there is none; an unreadable file raises `CompressionError`."""
    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types for a truncated or foreign file
        raise CompressionError(f"cannot read checkpoint {path}: {exc}; delete it or drop --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CompressionError(f"checkpoint {path} has an unknown format: delete it or drop --resume")
    return state
