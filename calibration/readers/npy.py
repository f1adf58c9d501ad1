"""Reader for one .npy file whose first axis indexes the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.array_rows import ArrayRowsSampleSet
from calibration.readers.base import SampleReader, register_reader
from calibration.samples import SampleSet
from exporter.errors import CalibrationError


@register_reader
class NpyReader(SampleReader):
    """A single `.npy` array, sample axis first, memory-mapped; its one key is the file stem."""

    name = "npy"
    description = "a .npy file with the sample axis first"

    @classmethod
    def accepts(cls, source: str) -> bool:
        path = Path(source)
        return path.is_file() and path.suffix.lower() == ".npy"

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        array = load_npy(Path(source), mmap=True)
        if array.ndim == 0:
            raise CalibrationError(
                f"npy file {source} holds a single value: expected an array with the sample axis first, "
                "e.g. np.save(path, np.stack(samples))"
            )
        key = Path(source).stem
        count = int(array.shape[0])
        return ArrayRowsSampleSet(
            loaders={key: lambda: array},
            length=count,
            labels=None,
            source_name=Path(source).name,
            description=f"npy file {source} ({count} samples, key {key!r})",
        )


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    """Load a numeric .npy file (memory-mapped when `mmap`); unreadable or object arrays raise `CalibrationError`."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CalibrationError(
            f"cannot read npy file {path}: {error}; save numeric arrays with np.save"
        ) from error
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = getattr(array, "dtype", type(array).__name__)
        raise CalibrationError(
            f"npy file {path} holds {kind} data: expected numbers (float or integer); convert it with .astype"
        )
    return array
