"""Checkpoints that let a long run resume where it stopped.

One file per run, `<folder>/checkpoint.pt`, rewritten atomically after every epoch. It holds the
student's and the optimizer's state, the number of epochs and steps done, the best student so far
with its epoch and figures, the history, the samples seen and the seconds spent, and a
fingerprint of the run (data size, student shapes and starting weights, training settings that
change the result). Resuming with a different fingerprint raises `CompressionError` naming the
first difference, because continuing it would train a different student than the one asked for.

The checkpoint folder sits beside the output folder, where others may be able to write, so a
checkpoint is never unpickled: it holds only tensors and plain data, loads with `weights_only=True`,
and must match the sha256 digest (`checkpoint.sha256`) that the run which wrote it left beside it.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.errors import CompressionError

CHECKPOINT_NAME = "checkpoint.pt"
DIGEST_NAME = "checkpoint.sha256"
FORMAT_VERSION = 1

# Settings that do not change the trained student, so a resume may change them (e.g. more minutes).
RESUMABLE_CHANGES = ("epochs", "minutes", "patience", "teacher_device", "student_device")


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
    """Write `state` to `<folder>/checkpoint.pt` atomically, with its sha256 digest beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **_plain(state)}, buffer)
    data = buffer.getvalue()
    _write_atomically(folder / DIGEST_NAME, (hashlib.sha256(data).hexdigest() + "\n").encode())
    _write_atomically(path, data)
    return path


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The saved state in `folder`, or None when there is none; a foreign or unreadable file raises `CompressionError`.

    Nothing is unpickled: the file must match the digest its run wrote and load with `weights_only=True`.
    """
    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        return None
    data = path.read_bytes()
    digest_path = folder / DIGEST_NAME
    try:
        expected = digest_path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        expected = ""
    if not hmac.compare_digest(expected, hashlib.sha256(data).hexdigest()):
        raise CompressionError(
            f"checkpoint {path} does not match the digest {digest_path.name} its run wrote (changed by someone else, "
            "or the run died while saving): delete the folder or drop --resume"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a truncated or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CompressionError(f"cannot read checkpoint {path} without unpickling it ({first}): delete it or drop --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CompressionError(f"checkpoint {path} has an unknown format: delete it or drop --resume")
    return state


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into Python numbers and tensors (what `weights_only` loads)."""
    import numpy as np

    if isinstance(value, dict):
        plain = type(value)((k, _plain(v)) for k, v in value.items()) if isinstance(value, OrderedDict) else {
            k: _plain(v) for k, v in value.items()}
        if hasattr(value, "_metadata"):
            plain._metadata = value._metadata  # state dicts carry module versions
        return plain
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value
