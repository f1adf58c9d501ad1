"""Builders of hostile files: pickles whose `__reduce__` writes a marker file when (and only when) unpickled."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "digits"


class Planted:
    """Unpickles by running `eval(code)`: the code writes `marker`, then evaluates to `result_code`'s value."""

    def __init__(self, marker: Path, result_code: str = "None") -> None:
        self.marker = Path(marker)
        self.result_code = result_code

    def __reduce__(self):
        code = f"__import__('pathlib').Path({str(self.marker)!r}).write_text('ran') and ({self.result_code})"
        return (eval, (code,))


def planted_torch_save(marker: Path, result_code: str = "None") -> bytes:
    """A `torch.save` archive whose only object runs code when unpickled."""
    buffer = io.BytesIO()
    torch.save(Planted(marker, result_code), buffer)
    return buffer.getvalue()


def rewrite_zip(source: Path, dest: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> Path:
    """Copy the zip `source` to `dest`, replacing members whose name ends with a key of `replace`, adding `add`."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            data = src.read(info.filename)
            for tail, new in replace.items():
                if info.filename.endswith(tail):
                    data = new
            out.writestr(info.filename, data)
        for tail, data in add.items():
            out.writestr(f"{root}/{tail}", data)
    return dest


def hostile_pt2(dest: Path, marker: Path) -> Path:
    """The digits `.pt2` with sample inputs that unpickle by running code (and then yield valid inputs)."""
    inputs = "((__import__('torch').zeros(2, 1, 16, 16),), {})"
    return rewrite_zip(SAMPLE / "digits_cnn.pt2", dest, {"data/sample_inputs/model.pt": planted_torch_save(marker, inputs)})


def hostile_checkpoint(dest: Path, marker: Path) -> Path:
    """A `checkpoint.pt` that runs code when unpickled."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(planted_torch_save(marker, "{'format': 1}"))
    return dest


def pickle_bytes(obj) -> bytes:
    """Plain pickle bytes of `obj`."""
    return pickle.dumps(obj)
