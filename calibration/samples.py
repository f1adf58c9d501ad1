"""What calibration data is: a `Sample` (one element, no batch axis) and a lazy `SampleSet` of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from exporter.errors import CalibrationError


@dataclass(frozen=True)
class Sample:
    """One element of a dataset: its arrays keyed by the source's own names, without a batch axis.

    `label` is the class index when the source has one; `origin` says where the sample came from
    (a file path, `data.npz[17]`, ...) so that error messages can point at it.
    """

    inputs: dict[str, np.ndarray]
    label: int | None = None
    origin: str = ""


class SampleSet(ABC):
    """A random-access collection of samples that reads each one only when it is asked for.

    Subclasses implement `__len__` and `__getitem__` and set three attributes: `keys` (the array
    names every sample carries), `has_labels` (every sample has a label) and `description` (one
    human phrase naming the source, used in error messages). A reader that had to bound or correct
    what the source claimed says so in `notes` (lines for the report).
    """

    keys: tuple[str, ...] = ()
    has_labels: bool = False
    description: str = "calibration samples"
    notes: tuple[str, ...] = ()

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def subset(self, indices: Iterable[int]) -> "SampleSet":
        """The samples at `indices` of this set, in that order, still read lazily."""
        return Subset(self, indices)

    def _check_index(self, index: int) -> int:
        """Bounds-check `index` (negative counts from the end) and return it as a non-negative int."""
        size = len(self)
        position = int(index)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"sample index {index} out of range for {size} samples")
        return position

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


class Subset(SampleSet):
    """A view of some samples of a parent set; a subset of a subset points at the original parent."""

    def __init__(self, parent: SampleSet, indices: Iterable[int]) -> None:
        positions = [parent._check_index(i) for i in indices]
        if isinstance(parent, Subset):
            positions = [parent.indices[p] for p in positions]
            parent = parent.parent
        self.parent = parent
        self.indices: tuple[int, ...] = tuple(positions)
        self.keys = parent.keys
        self.has_labels = parent.has_labels and len(self.indices) > 0
        self.description = f"{len(self.indices)} of {parent.description}"
        self.notes = parent.notes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.parent[self.indices[self._check_index(index)]]


class ListSampleSet(SampleSet):
    """Samples already in memory (a factory's plain iterable, tests); all must carry the same keys."""

    def __init__(self, samples: Sequence[Sample], description: str = "in-memory samples") -> None:
        self._samples: list[Sample] = list(samples)
        self.keys = tuple(self._samples[0].inputs) if self._samples else ()
        for sample in self._samples:
            if set(sample.inputs) != set(self.keys):
                raise CalibrationError(
                    f"calibration sample {sample.origin or '?'} has keys {sorted(sample.inputs)} but the first "
                    f"sample has {sorted(self.keys)}: every sample must carry the same arrays"
                )
        self.has_labels = bool(self._samples) and all(s.label is not None for s in self._samples)
        self.description = f"{description} ({len(self._samples)} samples)"

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        return self._samples[self._check_index(index)]
