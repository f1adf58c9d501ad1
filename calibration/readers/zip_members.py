"""Rows of the arrays inside a `.npz` archive, read without inflating the whole member.

Each member's `.npy` header is checked against the member's real uncompressed size (the zip
directory's, which `zipfile` enforces while reading), and a compressed member may not inflate more
than `MAX_COMPRESSION_RATIO` times its compressed size unless it is small. Then:

- a stored (uncompressed, `np.savez`) member is memory-mapped straight from the archive, so any
  row costs one read of that row;
- a deflated (`np.savez_compressed`) member is streamed: rows are read forward from an open
  decompressor, skipped rows are inflated in 256 KiB chunks and dropped, and asking for an earlier
  row reopens the member. Samples are read in increasing order (the splits sort their indices), so
  one pass over a set inflates the member at most once, holding one row.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from calibration.limits import MAX_COMPRESSION_RATIO, SMALL_MEMBER_BYTES, format_bytes
from calibration.readers.npy_format import NpyHeader, check_declared_size, read_npy_header, row_from_bytes
from exporter.errors import CalibrationError

SKIP_CHUNK = 1 << 18
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


@dataclass(frozen=True)
class NpzMember:
    """One array of an archive: its key, zip entry and checked `.npy` header."""

    key: str
    info: zipfile.ZipInfo
    header: NpyHeader

    @property
    def compressed(self) -> bool:
        """True for a deflated (or otherwise compressed) member."""
        return self.info.compress_type != zipfile.ZIP_STORED


def read_members(path: Path) -> list[NpzMember]:
    """Every `.npy` member of the archive with its header checked (see the module docstring).

    Raises `CalibrationError` for an unreadable archive, an encrypted member, a header that does
    not match the member's size, or an implausible compression ratio.
    """
    members: list[NpzMember] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    continue
                key = info.filename[: -len(".npy")]
                where = f"array {key!r} of npz file {path}"
                if info.flag_bits & 0x1:
                    raise CalibrationError(f"{where} is encrypted: save the arrays with np.savez")
                _check_ratio(info, where)
                with archive.open(info) as stream:
                    header = read_npy_header(stream, where)
                check_declared_size(header, info.file_size - header.data_offset, where)
                members.append(NpzMember(key=key, info=info, header=header))
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
        raise CalibrationError(f"cannot read npz file {path}: {error}; save it with np.savez") from error
    return members


def _check_ratio(info: zipfile.ZipInfo, where: str) -> None:
    if info.compress_type == zipfile.ZIP_STORED or info.file_size <= SMALL_MEMBER_BYTES:
        return
    if info.file_size > max(info.compress_size, 1) * MAX_COMPRESSION_RATIO:
        ratio = info.file_size / max(info.compress_size, 1)
        raise CalibrationError(
            f"{where} would inflate {format_bytes(info.compress_size)} to {format_bytes(info.file_size)} "
            f"({ratio:.0f}:1, above the {MAX_COMPRESSION_RATIO}:1 real data compresses to): the file looks like a "
            "zip bomb; save the real samples with np.savez"
        )


class MemberRows:
    """Random access to the rows (samples) of one member: memory-mapped when stored, streamed when deflated."""

    def __init__(self, path: Path, member: NpzMember) -> None:
        self.path = path
        self.member = member
        self.where = f"array {member.key!r} of npz file {path}"
        if member.compressed and member.header.fortran_order and len(member.header.shape) > 1:
            raise CalibrationError(
                f"{self.where} is compressed and in Fortran order, which cannot be read one sample at a time: "
                "save it with np.savez, or np.ascontiguousarray it first"
            )
        self._mapped: np.ndarray | None = None
        self._archive: zipfile.ZipFile | None = None
        self._stream: BinaryIO | None = None
        self._next_row = 0

    def row(self, index: int) -> np.ndarray:
        """Sample `index` (a fresh array in memory)."""
        if not self.member.compressed:
            return np.array(self._map()[index])
        header = self.member.header
        try:
            if self._stream is None or index < self._next_row:
                self._open()
            self._skip((index - self._next_row) * header.row_bytes)
            data = self._stream.read(header.row_bytes)
        except Exception as error:  # noqa: BLE001 - OSError, EOFError, zlib.error, BadZipFile (CRC): a damaged member
            self.close()
            raise CalibrationError(f"cannot read sample {index} of {self.where}: {error}") from error
        if len(data) != header.row_bytes:
            self.close()
            raise CalibrationError(f"{self.where} ends before sample {index}: the file is truncated; save it again")
        self._next_row = index + 1
        return row_from_bytes(data, header)

    def all_rows(self) -> np.ndarray:
        """The whole member (only for small arrays such as labels; the caller bounds its size)."""
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member.info) as stream:
            stream.read(self.member.header.data_offset)
            data = stream.read(self.member.header.data_bytes)
        header = self.member.header
        order = "F" if header.fortran_order else "C"
        return np.frombuffer(data, dtype=header.dtype).reshape(header.shape, order=order).copy()

    def _map(self) -> np.ndarray:
        if self._mapped is None:
            header = self.member.header
            if header.data_bytes == 0:
                self._mapped = np.empty(header.shape, dtype=header.dtype)
            else:
                self._mapped = np.memmap(
                    self.path,
                    dtype=header.dtype,
                    mode="r",
                    offset=self._data_start() + header.data_offset,
                    shape=header.shape,
                    order="F" if header.fortran_order else "C",
                )
        return self._mapped

    def _data_start(self) -> int:
        """Offset in the archive of the member's first byte (after its local file header)."""
        with open(self.path, "rb") as file:
            file.seek(self.member.info.header_offset)
            signature, name_length, extra_length = LOCAL_HEADER.unpack(file.read(LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            raise CalibrationError(f"{self.where}: bad zip local header; save the file again with np.savez")
        return self.member.info.header_offset + LOCAL_HEADER.size + name_length + extra_length

    def _open(self) -> None:
        self.close()
        self._archive = zipfile.ZipFile(self.path)
        self._stream = self._archive.open(self.member.info)
        self._stream.read(self.member.header.data_offset)
        self._next_row = 0

    def _skip(self, count: int) -> None:
        while count > 0:
            chunk = self._stream.read(min(count, SKIP_CHUNK))
            if not chunk:
                raise EOFError("unexpected end of member")
            count -= len(chunk)

    def close(self) -> None:
        """Drop the open decompressor (the next row reopens it)."""
        if self._stream is not None:
            self._stream.close()
        if self._archive is not None:
            self._archive.close()
        self._stream, self._archive, self._next_row = None, None, 0

    def __getstate__(self) -> dict:
        # Copies (onnxruntime deep-copies readers) reopen their own stream and map.
        state = dict(self.__dict__)
        state.update(_mapped=None, _archive=None, _stream=None, _next_row=0)
        return state
