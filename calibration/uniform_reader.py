"""A calibration reader wrapper whose batches all have the same size."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


class UniformBatchReader:
    """A calibration reader whose batches all have the same size: the gcd of the source's batch sizes.

    onnxruntime's histogram calibrators (Entropy, Percentile, Distribution) stack the outputs of all
    batches with `np.asarray`, which fails when the last batch is shorter ("inhomogeneous shape").
    The batch sizes come from the reader's sample count and batch size when it has them
    (`OrtCalibrationReader`), else from a first pass that only counts; batches are then split,
    never held together. (`calibration.statistics` needs no uniform batches; onnxruntime's own
    calibrators do.)
    """

    def __init__(self, make_reader: Callable[[], Any]) -> None:
        self.make_reader = make_reader
        reader = make_reader()
        if hasattr(reader, "samples") and hasattr(reader, "batch_size"):
            count, batch = len(reader.samples), reader.batch_size
            sizes = [batch] * (count // batch) + ([count % batch] if count % batch else [])
        else:
            sizes = []
            while (batch := reader.get_next()) is not None:
                sizes.append(len(next(iter(batch.values()))))
        self.size = math.gcd(*sizes) if sizes else 1
        self.rewind()

    def rewind(self) -> None:
        """Start again from the first sample."""
        self.reader = self.make_reader()
        self.pending: list[dict[str, np.ndarray]] = []

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch of exactly `size` samples, or None at the end."""
        if not self.pending:
            batch = self.reader.get_next()
            if batch is None:
                return None
            count = len(next(iter(batch.values())))
            self.pending = [{k: v[i : i + self.size] for k, v in batch.items()} for i in range(0, count, self.size)]
        return self.pending.pop(0)

    def __iter__(self):
        while (batch := self.get_next()) is not None:
            yield batch
