"""Training data as random-access batches, and the order and sharding of the steps.

The step rule, identical for any number of processes: epoch `e` visits the samples in the
permutation drawn from `numpy.random.default_rng([seed, e])`; step `k` takes positions
`k*B .. (k+1)*B-1` of it (B = the global batch); a last partial batch is dropped (so every step
has B samples) unless the whole set is smaller than B, which is then one step. Within a step,
process `r` of `N` takes the r-th of N contiguous, nearly equal chunks. Losses are summed per
sample and divided by the global step size, so averaging gradients over processes (what DDP does)
gives exactly the gradient one process would compute on the whole step.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.batching import make_batch
from calibration.samples import SampleSet
from exporter.inputs import InputSpec
from exporter.progress import progress_bar


class TrainData(ABC):
    """Random-access training data: `len`, `batch(indices) -> (inputs by name, labels or None)`."""

    has_labels: bool = False

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def batch(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Stacked arrays (batch axis first) keyed by input name, and the labels when every sample has one."""


class SampleData(TrainData):
    """A bound `SampleSet` read lazily through the calibration package's checks (one process)."""

    def __init__(self, samples: SampleSet, specs: Sequence[InputSpec]) -> None:
        self.samples = samples
        self.specs = tuple(specs)
        self.has_labels = samples.has_labels

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        made = make_batch(self.samples, self.specs, list(indices))
        return made.inputs, made.labels


class ArrayData(TrainData):
    """Arrays with the sample axis first (memory-mapped `.npy` files for torchrun workers)."""

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray | None) -> None:
        self.arrays = arrays
        self.labels = labels
        self.has_labels = labels is not None
        self._length = len(next(iter(arrays.values()))) if arrays else 0

    def __len__(self) -> int:
        return self._length

    def batch(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        rows = np.asarray(indices, dtype=np.int64)
        inputs = {name: np.ascontiguousarray(array[rows]) for name, array in self.arrays.items()}
        return inputs, None if self.labels is None else np.asarray(self.labels[rows])

    @classmethod
    def load(cls, folder: Path) -> "ArrayData":
        """Open what `write_arrays` wrote, memory-mapped."""
        index = json.loads((folder / "arrays.json").read_text())
        arrays = {name: np.load(folder / file, mmap_mode="r") for name, file in index["inputs"].items()}
        labels = np.load(folder / index["labels"]) if index["labels"] else None
        return cls(arrays, labels)


def write_arrays(data: TrainData, folder: Path, batch_size: int = 256, desc: str = "writing data") -> None:
    """Copy `data` into one `.npy` file per input (and `labels.npy`), one batch in memory at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    count = len(data)
    first, labels = data.batch([0])
    files = {name: f"input_{i}.npy" for i, name in enumerate(first)}
    outputs = {
        name: np.lib.format.open_memmap(
            folder / files[name], mode="w+", dtype=array.dtype, shape=(count, *array.shape[1:])
        )
        for name, array in first.items()
    }
    all_labels = np.zeros(count, dtype=np.int64) if labels is not None else None
    bar = progress_bar(desc, total=count, unit="sample")
    try:
        for start in range(0, count, batch_size):
            rows = list(range(start, min(start + batch_size, count)))
            inputs, batch_labels = data.batch(rows)
            for name, array in inputs.items():
                outputs[name][start : start + len(rows)] = array
            if all_labels is not None and batch_labels is not None:
                all_labels[start : start + len(rows)] = batch_labels
            bar.update(len(rows))
    finally:
        bar.close()
    for array in outputs.values():
        array.flush()
    if all_labels is not None:
        np.save(folder / "labels.npy", all_labels)
    index = {"inputs": files, "labels": "labels.npy" if all_labels is not None else None}
    (folder / "arrays.json").write_text(json.dumps(index))


def steps_per_epoch(sample_count: int, batch_size: int) -> int:
    """Steps in one epoch: full batches only, or one step when the set is smaller than a batch."""
    return max(1, sample_count // batch_size)


def epoch_steps(sample_count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Every step's sample indices for one epoch, in order."""
    order = np.random.default_rng([seed, epoch]).permutation(sample_count)
    size = min(batch_size, sample_count)
    return [order[k * size : (k + 1) * size] for k in range(steps_per_epoch(sample_count, batch_size))]


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The chunk of one step that process `rank` of `world_size` trains on (contiguous, nearly equal)."""
    return np.array_split(indices, world_size)[rank]
