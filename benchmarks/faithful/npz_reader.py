"""A calibration reader over calib.npz for onnxruntime's CalibrationDataReader protocol.

Self-contained (numpy only) so the Quark and NNCF scripts, which run in their own venvs, can
import it by path as well as the benchmark itself.
"""

from __future__ import annotations

import numpy as np


def load_inputs(path: str, input_names: list[str], limit: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of `path` for `input_names` (by name, else in file order), `labels` dropped."""
    data = np.load(path)
    keys = [k for k in data.files if k != "labels"]
    if all(name in keys for name in input_names):
        chosen = {name: data[name] for name in input_names}
    else:
        chosen = {name: data[key] for name, key in zip(input_names, keys)}
    if limit is not None:
        chosen = {k: v[:limit] for k, v in chosen.items()}
    return chosen


class NpzReader:
    """Yields {input name: batch} dicts, `batch` samples at a time; `rewind()` starts over."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int = 1) -> None:
        self.arrays = arrays
        self.batch = batch
        self.count = len(next(iter(arrays.values())))
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None at the end."""
        if self.position >= self.count:
            return None
        start, self.position = self.position, self.position + self.batch
        return {k: np.ascontiguousarray(v[start : self.position]) for k, v in self.arrays.items()}

    def rewind(self) -> None:
        """Start again from the first sample."""
        self.position = 0

    def __iter__(self):
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item

    def __len__(self) -> int:
        return (self.count + self.batch - 1) // self.batch
