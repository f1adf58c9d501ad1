"""Reader for a .npz archive of arrays keyed by input name, with an optional labels array."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.array_rows import ArrayRowsSampleSet, integer_labels
from calibration.limits import MAX_LABEL_BYTES, format_bytes
from calibration.readers.base import SampleReader, register_reader
from calibration.readers.zip_members import MemberRows, NpzMember, read_members
from calibration.samples import SampleSet
from exporter.errors import CalibrationError

LABEL_KEYS = ("labels", "label", "y")


@register_reader
class NpzReader(SampleReader):
    """A `.npz` archive: each array is one input (sample axis first); the first of `labels`, `label`
    or `y` present holds the class labels and is not an input. All arrays need the same length.
    Shapes are read from the headers and checked against the members' real sizes; samples are read
    one row at a time (memory-mapped when stored, streamed when compressed: see `zip_members`)."""

    name = "npz"
    description = "a .npz file of arrays named after the model inputs (optional 'labels')"

    @classmethod
    def accepts(cls, source: str) -> bool:
        path = Path(source)
        return path.is_file() and path.suffix.lower() == ".npz"

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        path = Path(source)
        members = {member.key: member for member in read_members(path)}
        label_key = next((k for k in LABEL_KEYS if k in members), None)
        input_keys = [k for k in members if k != label_key]
        if not input_keys:
            found = f"only {label_key!r}" if label_key else "no arrays"
            raise CalibrationError(
                f"npz file {source} has {found}: expected one array per model input, e.g. "
                "np.savez(path, input=x, labels=y)"
            )
        for key, member in members.items():
            if not member.header.shape:
                raise CalibrationError(
                    f"array {key!r} in npz file {source} is a single value: expected the sample axis first"
                )
        lengths = {key: member.header.rows for key, member in members.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
            raise CalibrationError(
                f"npz file {source} has arrays of different lengths ({listed}): every array needs one row per sample"
            )
        count = next(iter(lengths.values()))
        labels = None
        if label_key is not None:
            labels = _read_labels(path, members[label_key], f"{label_key!r} in npz file {source}")
        keys_text = ", ".join(repr(k) for k in input_keys)
        label_text = f", labels {label_key!r}" if label_key else ""
        return ArrayRowsSampleSet(
            columns={key: MemberRows(path, members[key]) for key in input_keys},
            length=count,
            labels=labels,
            source_name=path.name,
            description=(
                f"npz file {source} ({count} samples, key{'s' if len(input_keys) > 1 else ''} {keys_text}{label_text})"
            ),
        )


def _read_labels(path: Path, member: NpzMember, where: str) -> np.ndarray:
    """The whole labels array (its size checked first: at most `MAX_LABEL_BYTES`), as int64 class indices."""
    if member.header.data_bytes > MAX_LABEL_BYTES:
        raise CalibrationError(
            f"labels {where} take {format_bytes(member.header.data_bytes)}, more than the "
            f"{format_bytes(MAX_LABEL_BYTES)} allowed for labels: store one integer class index per sample"
        )
    try:
        return integer_labels(MemberRows(path, member).all_rows(), where)
    except ValueError as error:
        raise CalibrationError(f"{error}; store integer class indices") from error
    except (OSError, zipfile.BadZipFile) as error:
        raise CalibrationError(f"cannot read labels {where}: {error}") from error
