"""Samples that are rows of arrays with the sample axis first (the .npy and .npz readers share this)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from calibration.samples import Sample, SampleSet


class RowSource(Protocol):
    """One array's samples, read one at a time: `row(i)` returns sample `i` as a fresh array."""

    def row(self, index: int) -> np.ndarray: ...


class MappedRows:
    """Rows of an array that is cheap to keep open (a memory-mapped `.npy`), opened on first use."""

    def __init__(self, open_array) -> None:
        self._open_array = open_array
        self._array: np.ndarray | None = None

    def row(self, index: int) -> np.ndarray:
        """A copy of row `index`: only that row's pages are read."""
        if self._array is None:
            self._array = self._open_array()
        return np.array(self._array[index])

    def __getstate__(self) -> dict:
        # Copies reopen the map rather than duplicate an array.
        return {**self.__dict__, "_array": None}


class ArrayRowsSampleSet(SampleSet):
    """Row `i` of every array is sample `i`; all arrays have `length` rows.

    Each array is a `RowSource`, so a sample costs one row per input in memory, never a whole array.
    """

    def __init__(
        self,
        columns: dict[str, RowSource],
        length: int,
        labels: np.ndarray | None,
        source_name: str,
        description: str,
    ) -> None:
        self._columns = columns
        self._length = length
        self._labels = labels
        self._source_name = source_name
        self.keys = tuple(columns)
        self.has_labels = labels is not None and length > 0
        self.description = description

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        row = self._check_index(index)
        label = None if self._labels is None else int(self._labels[row])
        return Sample(
            inputs={key: column.row(row) for key, column in self._columns.items()},
            label=label,
            origin=f"{self._source_name}[{row}]",
        )


def integer_labels(values: np.ndarray, where: str) -> np.ndarray:
    """Class labels as int64: a 1-D (or N x 1) array of whole numbers, else `ValueError` saying why."""
    labels = np.asarray(values)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"labels {where} have shape {labels.shape}, expected one class index per sample")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise ValueError(f"labels {where} are not whole numbers (dtype {labels.dtype})")
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"labels {where} have dtype {labels.dtype}, expected integer class indices")
    return labels.astype(np.int64)
