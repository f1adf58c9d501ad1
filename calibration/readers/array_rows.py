"""Samples that are rows of arrays with the sample axis first (the .npy and .npz readers share this)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from calibration.samples import Sample, SampleSet


class ArrayRowsSampleSet(SampleSet):
    """Row `i` of every array is sample `i`; all arrays have `length` rows.

    Each array comes from a loader called on first use and kept (a memory-mapped .npy costs
    nothing to keep); only the requested row is copied into memory per sample.
    """

    def __init__(
        self,
        loaders: dict[str, Callable[[], np.ndarray]],
        length: int,
        labels: np.ndarray | None,
        source_name: str,
        description: str,
    ) -> None:
        self._loaders = loaders
        self._arrays: dict[str, np.ndarray] = {}
        self._length = length
        self._labels = labels
        self._source_name = source_name
        self.keys = tuple(loaders)
        self.has_labels = labels is not None and length > 0
        self.description = description

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        row = self._check_index(index)
        label = None if self._labels is None else int(self._labels[row])
        return Sample(
            inputs={key: np.array(self._array(key)[row]) for key in self.keys},
            label=label,
            origin=f"{self._source_name}[{row}]",
        )

    def _array(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            self._arrays[key] = self._loaders[key]()
        return self._arrays[key]

    def __getstate__(self) -> dict:
        # Loaders may be closures; drop the cache so copies reload rather than duplicate arrays.
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


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
