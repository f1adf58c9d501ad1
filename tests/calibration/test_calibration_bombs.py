"""Hostile array files: header bombs and zip bombs are refused before anything is allocated, and a
compressed archive is read one row at a time. Every bomb is built here, a few KB on disk."""

from __future__ import annotations

import re
import tracemalloc
import zipfile

import numpy as np
import pytest

from calibration import open_samples, split_samples
from calibration import limits
from exporter.errors import CalibrationError

MiB = 1 << 20


def npy_header(shape: tuple[int, ...], dtype: str = "<f4", fortran: bool = False) -> bytes:
    """The bytes of a version 1.0 `.npy` header declaring `shape`."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def write_member(archive: zipfile.ZipFile, name: str, header: bytes, data_bytes: int, chunk: bytes = b"") -> None:
    """Stream one member: `header`, then `data_bytes` bytes (zeros, or `chunk` repeated), 1 MiB at a time."""
    block = (chunk or b"\0") * (MiB // max(1, len(chunk or b"\0")))
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(header)
        left = data_bytes
        while left > 0:
            piece = block[: min(left, len(block))]
            member.write(piece)
            left -= len(piece)


def peak_bytes(action) -> int:
    """Peak traced allocation (Python and numpy) while running `action`."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- header bombs ----------------------------------------------------------------------------


def test_npy_header_declaring_billions_of_samples_fails_fast_with_one_line(tmp_path):
    bomb = tmp_path / "bomb.npy"
    bomb.write_bytes(npy_header((10**10, 3, 224, 224)) + b"\0" * 4000)
    assert bomb.stat().st_size < 5000
    error = None

    def attempt():
        nonlocal error
        with pytest.raises(CalibrationError) as caught:
            open_samples(str(bomb))
        error = caught.value

    assert peak_bytes(attempt) < MiB
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"npy file {bomb} declares 10000000000 samples (10000000000x3x224x224 float32, 5.3 PiB)")
    assert "but holds 3.9 KiB of data: the file is truncated or crafted" in message


def test_npz_member_header_declaring_more_than_the_member_holds(tmp_path):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        write_member(archive, "input.npy", npy_header((10**9, 3, 32, 32)), 4096)
    with pytest.raises(
        CalibrationError,
        match=re.escape(f"array 'input' of npz file {bomb} declares 1000000000 samples (1000000000x3x32x32 float32, "),
    ):
        open_samples(str(bomb))


def test_npz_labels_header_bomb_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "labels.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        write_member(archive, "input.npy", npy_header((4, 2)), 32)
        write_member(archive, "labels.npy", npy_header((10**12,), "<i8"), 64)
    with pytest.raises(CalibrationError, match=re.escape("array 'labels' of npz file")) as caught:
        open_samples(str(bomb))
    assert "declares 1000000000000 samples" in str(caught.value)


def test_npy_folder_file_with_a_lying_header(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((2, 3), np.float32))
    (folder / "b.npy").write_bytes(npy_header((1, 50000, 50000)) + b"\0" * 100)
    samples = open_samples(str(folder))
    assert samples[0].inputs["samples"].shape == (2, 3)
    with pytest.raises(CalibrationError, match=re.escape(f"npy file {folder / 'b.npy'} declares 1 sample (1x50000x50000")):
        samples[1]


def test_a_sample_above_the_per_sample_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("calibration.readers.npy_format.MAX_SAMPLE_BYTES", 1000)
    np.save(tmp_path / "wide.npy", np.zeros((2, 500), np.float32))  # 2000 bytes per sample
    with pytest.raises(CalibrationError, match=re.escape("has samples of 2.0 KiB each (shape (500,)), more than the 1000 B")):
        open_samples(str(tmp_path / "wide.npy"))


# --- zip bombs --------------------------------------------------------------------------------


def test_zip_bomb_is_refused_by_its_compression_ratio(tmp_path):
    bomb = tmp_path / "bomb.npz"
    rows = (256 * MiB) // (3 * 64 * 64 * 4)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        write_member(archive, "input.npy", npy_header((rows, 3, 64, 64)), rows * 3 * 64 * 64 * 4)
    assert bomb.stat().st_size < 512 * 1024  # 256 MiB of zeros in a few hundred KB
    error = None

    def attempt():
        nonlocal error
        with pytest.raises(CalibrationError) as caught:
            open_samples(str(bomb))
        error = caught.value

    assert peak_bytes(attempt) < MiB
    message = str(error)
    assert "\n" not in message
    assert re.fullmatch(
        rf"array 'input' of npz file {re.escape(str(bomb))} would inflate \d+\.\d KiB to 256\.0 MiB \(\d+:1, above the "
        r"100:1 real data compresses to\): the file looks like a zip bomb; save the real samples with np\.savez",
        message,
    )


def test_small_compressed_members_of_zeros_are_fine(tmp_path):
    np.savez_compressed(tmp_path / "zeros.npz", input=np.zeros((50, 4, 4), np.float32))
    samples = open_samples(str(tmp_path / "zeros.npz"))
    assert len(samples) == 50
    assert samples[49].inputs["input"].shape == (4, 4)


def test_compressed_npz_reads_only_rows_not_the_member(tmp_path):
    """A 16 MiB compressed member (ratio about 4:1, plausible) of which 100 samples are used: the
    split and one pass over the calibration subset hold a row at a time, never the member."""
    rng = np.random.default_rng(0)
    rows, shape = 2048, (2, 32, 32)
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("input.npy", "w", force_zip64=True) as member:
            member.write(npy_header((rows, *shape), "<f4"))
            for start in range(0, rows, 128):
                block = rng.integers(0, 16, size=(128, *shape)).astype(np.float32)
                member.write(block.tobytes())
    member_bytes = rows * int(np.prod(shape)) * 4
    assert member_bytes == 16 * MiB
    samples = open_samples(str(path))
    calib, val = split_samples(samples, 100, 20, seed=0)
    seen = []
    peak = peak_bytes(lambda: seen.extend(float(calib[i].inputs["input"].sum()) for i in range(len(calib))))
    assert len(seen) == 100
    assert peak < 2 * MiB  # one 8 KiB row plus 256 KiB skip chunks, against 16 MiB for the member
    # the values are the right rows
    with np.load(path) as whole:
        expected = whole["input"][list(calib.indices)].sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(np.array(seen, dtype=np.float32), expected)


def test_stored_npz_is_memory_mapped(tmp_path):
    data = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    np.savez(tmp_path / "stored.npz", input=data, labels=np.arange(6))
    samples = open_samples(str(tmp_path / "stored.npz"))
    assert [int(samples[i].label) for i in range(6)] == list(range(6))
    np.testing.assert_array_equal(samples[4].inputs["input"], data[4])
    assert isinstance(samples._columns["input"]._map(), np.memmap)


def test_compressed_fortran_member_is_refused(tmp_path):
    np.savez_compressed(tmp_path / "f.npz", input=np.asfortranarray(np.zeros((4, 3), np.float32)))
    with pytest.raises(CalibrationError, match="is compressed and in Fortran order"):
        open_samples(str(tmp_path / "f.npz"))


def test_limits_are_what_the_docs_say():
    assert limits.MAX_COMPRESSION_RATIO == 100
    assert limits.DEFAULT_FACTORY_SAMPLES == 10_000
    assert limits.format_bytes(5 * (1 << 50) + (1 << 49)) == "5.5 PiB"


def test_image_declaring_a_billion_pixels_is_refused_before_decoding(tmp_path):
    """A 100-byte PNG whose header declares 40000 x 40000 pixels: Pillow's decompression-bomb check
    refuses it at open, and the reader turns that into one line naming the file."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png)
    samples = open_samples(str(folder))
    error = None

    def attempt():
        nonlocal error
        with pytest.raises(CalibrationError) as caught:
            samples[0]
        error = caught.value

    assert peak_bytes(attempt) < MiB
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"cannot read image {folder / 'bomb.png'}: Image size (1600000000 pixels) exceeds limit")
    assert message.endswith("; remove or replace the file")
