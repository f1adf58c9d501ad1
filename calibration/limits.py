"""The bounds every calibration reader enforces, so memory follows the batch size and the sample
count, never what a file or a factory claims.

- `MAX_SAMPLE_BYTES`: one sample of one input (one row of an array file, one `.npy` of a folder).
  A 3x4096x4096 float32 image is 192 MiB; anything above 1 GiB is a crafted or mistaken file.
- `MAX_COMPRESSION_RATIO` and `SMALL_MEMBER_BYTES`: a compressed `.npz` member may inflate at most
  this many times its compressed size, unless it is small anyway. Real calibration data (images,
  features, token ids) deflates 1.5-20x; an all-zero array deflates about 1000x, which is what a
  zip bomb is made of.
- `MAX_LABEL_BYTES`: a labels array is read whole (8M int64 labels).
- `DEFAULT_FACTORY_SAMPLES`: how many items a calibration factory is read for when neither
  `--calib-samples` nor the validation count bounds it (an iterable that never ends stops here,
  with a note in the report).
"""

from __future__ import annotations

MAX_SAMPLE_BYTES = 1 << 30
MAX_COMPRESSION_RATIO = 100
SMALL_MEMBER_BYTES = 64 << 20
MAX_LABEL_BYTES = 64 << 20
DEFAULT_FACTORY_SAMPLES = 10_000


def format_bytes(count: int) -> str:
    """`count` bytes in the largest binary unit that keeps a number >= 1 (e.g. `2.5 GiB`)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
