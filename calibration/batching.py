"""Grouping checked samples into batches with the batch axis first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from calibration.binding import bind_to_inputs, check_sample
from calibration.samples import SampleSet
from exporter.errors import PlanError
from exporter.inputs import InputSpec


@dataclass(frozen=True)
class Batch:
    """Arrays for one model run keyed by input name (batch axis first), the labels when every sample
    in the set has one, and the indices of its samples in the set."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    indices: tuple[int, ...]


def batch_count(sample_count: int, batch_size: int) -> int:
    """How many batches `sample_count` samples make; the last batch may be short."""
    return -(-sample_count // batch_size)


def check_batch_size(batch_size: int) -> None:
    """Raise `PlanError` unless `batch_size` is a positive integer."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise PlanError(f"bad batch size {batch_size!r}: expected a positive integer")


def make_batch(samples: SampleSet, specs: Sequence[InputSpec], indices: Sequence[int]) -> Batch:
    """Read, check (`check_sample`) and stack the bound samples at `indices` into one `Batch`."""
    arrays: dict[str, list[np.ndarray]] = {spec.name: [] for spec in specs}
    labels: list[int | None] = []
    for index in indices:
        sample = samples[index]
        for name, array in check_sample(sample, index, specs).items():
            arrays[name].append(array)
        labels.append(sample.label)
    with_labels = samples.has_labels and all(label is not None for label in labels)
    return Batch(
        inputs={name: np.stack(rows) for name, rows in arrays.items()},
        labels=np.asarray(labels, dtype=np.int64) if with_labels else None,
        indices=tuple(indices),
    )


def iter_batches(samples: SampleSet, specs: Sequence[InputSpec], batch_size: int) -> Iterator[Batch]:
    """Yield the set in order as batches of `batch_size` (the last may be short), keyed by the spec
    names (the set is bound to them first) and with every sample checked. One batch is held at a time."""
    check_batch_size(batch_size)
    bound = bind_to_inputs(samples, [spec.name for spec in specs])
    for start in range(0, len(bound), batch_size):
        yield make_batch(bound, specs, range(start, min(start + batch_size, len(bound))))
