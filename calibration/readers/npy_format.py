"""Reading `.npy` headers and checking what they declare against the bytes that really exist.

A header is a claim: a 4 KB file can declare a billion rows. Every reader reads the header first,
checks that the declared data size equals the bytes the file (or the zip member) really holds,
that one sample is below `MAX_SAMPLE_BYTES`, and only then maps or streams the data, one row at a
time. Nothing is ever allocated from a declared size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from calibration.limits import MAX_SAMPLE_BYTES, format_bytes
from exporter.errors import CalibrationError


@dataclass(frozen=True)
class NpyHeader:
    """What a `.npy` header declares: shape, dtype, memory order, and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def data_bytes(self) -> int:
        """Bytes of array data the header declares (Python integers: no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def rows(self) -> int:
        """Declared length of the first (sample) axis; 0 for a 0-d array."""
        return self.shape[0] if self.shape else 0

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the array without its first axis)."""
        return self.shape[1:]

    @property
    def row_bytes(self) -> int:
        """Bytes of one sample."""
        return math.prod(self.row_shape) * self.dtype.itemsize


def read_npy_header(stream: BinaryIO, where: str) -> NpyHeader:
    """Parse the header at the start of `stream` (numpy's own parser, with its header-size limit).

    A stream that is not a `.npy`, an object (pickled) dtype, or a negative dimension raises
    `CalibrationError` naming `where`.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (OSError, ValueError, EOFError) as error:
        raise CalibrationError(f"cannot read {where}: {error}; save numeric arrays with np.save or np.savez") from error
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise CalibrationError(
            f"{where} holds {dtype} data: expected numbers (float or integer); convert it with .astype"
        )
    return NpyHeader(shape=tuple(int(d) for d in shape), dtype=dtype, fortran_order=bool(fortran), data_offset=stream.tell())


def check_declared_size(header: NpyHeader, available: int, where: str) -> None:
    """Raise `CalibrationError` unless the header's data fits the `available` bytes after it exactly,
    and one sample is at most `MAX_SAMPLE_BYTES`."""
    declared = header.data_bytes
    if declared != available:
        shape = "x".join(map(str, header.shape)) or "a scalar"
        raise CalibrationError(
            f"{where} declares {header.rows} sample{'' if header.rows == 1 else 's'} ({shape} {header.dtype}, {format_bytes(declared)}) but holds "
            f"{format_bytes(available)} of data: the file is truncated or crafted; save it again with np.save/np.savez"
        )
    if header.shape and header.row_bytes > MAX_SAMPLE_BYTES:
        raise CalibrationError(
            f"{where} has samples of {format_bytes(header.row_bytes)} each (shape {header.row_shape}), more than the "
            f"{format_bytes(MAX_SAMPLE_BYTES)} a calibration sample may take: check the sample axis comes first"
        )


def row_from_bytes(buffer: bytes, header: NpyHeader) -> np.ndarray:
    """One C-order sample decoded from exactly `header.row_bytes` bytes (a fresh, writable array)."""
    return np.frombuffer(buffer, dtype=header.dtype).reshape(header.row_shape).copy()
