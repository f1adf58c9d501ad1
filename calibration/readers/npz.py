"""Reader for a .npz archive of arrays keyed by input name, with an optional labels array."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.array_rows import ArrayRowsSampleSet, integer_labels
from calibration.readers.base import SampleReader, register_reader
from calibration.samples import SampleSet
from exporter.errors import CalibrationError

LABEL_KEYS = ("labels", "label", "y")


@register_reader
class NpzReader(SampleReader):
    """A `.npz` archive: each array is one input (sample axis first); the first of `labels`, `label`
    or `y` present holds the class labels and is not an input. All arrays need the same length.
    Shapes are read from the headers; an input array is loaded on first use."""

    name = "npz"
    description = "a .npz file of arrays named after the model inputs (optional 'labels')"

    @classmethod
    def accepts(cls, source: str) -> bool:
        path = Path(source)
        return path.is_file() and path.suffix.lower() == ".npz"

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        path = Path(source)
        headers = _read_headers(path)
        label_key = next((k for k in LABEL_KEYS if k in headers), None)
        input_keys = [k for k in headers if k != label_key]
        if not input_keys:
            found = f"only {label_key!r}" if label_key else "no arrays"
            raise CalibrationError(
                f"npz file {source} has {found}: expected one array per model input, e.g. "
                "np.savez(path, input=x, labels=y)"
            )
        for key, (shape, dtype) in headers.items():
            if not shape:
                raise CalibrationError(
                    f"array {key!r} in npz file {source} is a single value: expected the sample axis first"
                )
            if dtype.kind not in "biuf":
                raise CalibrationError(
                    f"array {key!r} in npz file {source} has dtype {dtype}: expected numbers; convert it with .astype"
                )
        lengths = {key: shape[0] for key, (shape, _) in headers.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
            raise CalibrationError(
                f"npz file {source} has arrays of different lengths ({listed}): every array needs one row per sample"
            )
        count = next(iter(lengths.values()))
        labels = None
        if label_key is not None:
            try:
                labels = integer_labels(_load_key(path, label_key), f"{label_key!r} in npz file {source}")
            except ValueError as error:
                raise CalibrationError(f"{error}; store integer class indices") from error
        keys_text = ", ".join(repr(k) for k in input_keys)
        label_text = f", labels {label_key!r}" if label_key else ""
        return ArrayRowsSampleSet(
            loaders={key: (lambda key=key: _load_key(path, key)) for key in input_keys},
            length=count,
            labels=labels,
            source_name=path.name,
            description=(
                f"npz file {source} ({count} samples, key{'s' if len(input_keys) > 1 else ''} {keys_text}{label_text})"
            ),
        )


def _read_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in the archive, read from the .npy headers without loading data."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    version = np.lib.format.read_magic(stream)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                headers[member[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CalibrationError(f"cannot read npz file {path}: {error}; save it with np.savez") from error
    return headers


def _load_key(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CalibrationError(f"cannot read array {key!r} of npz file {path}: {error}") from error
