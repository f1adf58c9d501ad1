"""Reader for one .npy file whose first axis indexes the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.array_rows import ArrayRowsSampleSet, MappedRows
from calibration.limits import MAX_SAMPLE_BYTES, format_bytes
from calibration.readers.base import SampleReader, register_reader
from calibration.readers.npy_format import check_declared_size, read_npy_header
from calibration.samples import SampleSet
from exporter.errors import CalibrationError


@register_reader
class NpyReader(SampleReader):
    """A single `.npy` array, sample axis first, memory-mapped after its header was checked against the
    file size (so one row is read per sample, whatever the file declares); its one key is the file stem."""

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
            columns={key: MappedRows(lambda: array)},
            length=count,
            labels=None,
            source_name=Path(source).name,
            description=f"npy file {source} ({count} samples, key {key!r})",
        )


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    """Load a numeric .npy file (memory-mapped when `mmap`) after checking its header against the file size.

    A header that declares more (or less) data than the file holds, an object (pickled) dtype, or a
    sample above `MAX_SAMPLE_BYTES` raises `CalibrationError` before anything is allocated. Without
    `mmap` the whole file is one sample and must itself be below `MAX_SAMPLE_BYTES`.
    """
    where = f"npy file {path}"
    try:
        with open(path, "rb") as stream:
            header = read_npy_header(stream, where)
        size = path.stat().st_size
    except OSError as error:
        raise CalibrationError(f"cannot read {where}: {error}") from error
    check_declared_size(header, size - header.data_offset, where)
    if not mmap and header.data_bytes > MAX_SAMPLE_BYTES:
        raise CalibrationError(
            f"{where} holds {format_bytes(header.data_bytes)}, more than the {format_bytes(MAX_SAMPLE_BYTES)} one "
            "calibration sample may take: save one sample per file"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap and header.data_bytes else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CalibrationError(
            f"cannot read {where}: {error}; save numeric arrays with np.save"
        ) from error
