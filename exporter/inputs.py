"""What the model takes: one `InputSpec` per model input, and how to parse `--input-shape`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.errors import PlanError

SUPPORTED_DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its ONNX name, full shape with the batch axis first, and numpy dtype name.

    A sample (one element of a dataset) has shape `shape[1:]`; the exported file keeps axis 0
    dynamic unless the target asks for fixed shapes.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        return self.shape[1:]

    def example(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A deterministic random array of this spec with `batch` rows (for tracing and timing)."""
        rng = np.random.default_rng(seed)
        shape = (batch, *self.sample_shape)
        if self.dtype.startswith("float"):
            return rng.standard_normal(shape).astype(self.dtype)
        if self.dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(0, 10, shape).astype(self.dtype)

    def to_dict(self) -> dict:
        """Plain-data form for the plan and the report."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """Inverse of `to_dict`."""
        return cls(name=data["name"], shape=tuple(int(d) for d in data["shape"]), dtype=data.get("dtype", "float32"))


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse `--input-shape` text such as `1,3,32,32` (or `1x3x32x32`) into a tuple of positive ints."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise PlanError(
            f"bad --input-shape {text!r}: expected comma-separated positive integers with the batch first, "
            "e.g. --input-shape 1,3,32,32"
        )
    return dims
