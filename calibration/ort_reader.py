"""onnxruntime's calibration data protocol over a `SampleSet`: rewindable, checked, one batch at a time."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from calibration.batching import batch_count, check_batch_size, make_batch
from calibration.binding import bind_to_inputs
from calibration.samples import SampleSet
from exporter.inputs import InputSpec
from exporter.progress import progress_bar


class OrtCalibrationReader(CalibrationDataReader):
    """Feeds `quantize_static` one checked batch per `get_next()` call, then `None`.

    The samples are bound to the spec names when the reader is built (so wrong keys fail before
    quantization starts) and each sample is checked as its batch is read (so a bad sample raises
    `CalibrationError` from inside `quantize_static`). `rewind()` starts again from the first batch;
    `set_range(start, end)` limits reading to batches `start..end-1` (onnxruntime's strided
    calibration); `len()` is the number of batches in the whole set. A progress bar runs while
    batches are read and closes at exhaustion. `rendezvous` (an `exporter.training.settings.Rendezvous`)
    asks `calibrate_ranges` to shard the set over that many torchrun processes (`calibration.sharding`).
    """

    def __init__(
        self,
        samples: SampleSet,
        specs: Sequence[InputSpec],
        batch_size: int = 1,
        desc: str = "calibrating",
        rendezvous: Any = None,
    ) -> None:
        check_batch_size(batch_size)
        self.rendezvous = rendezvous
        self.specs = tuple(specs)
        self.samples = bind_to_inputs(samples, [spec.name for spec in self.specs])
        self.batch_size = batch_size
        self.desc = desc
        self._start = 0
        self._end = len(self)
        self._next = 0
        self._bar = None

    def __len__(self) -> int:
        return batch_count(len(self.samples), self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch keyed by input name, or `None` once the range is exhausted."""
        if self._next >= self._end:
            self._close_bar()
            return None
        if self._bar is None:
            self._bar = progress_bar(self.desc, total=self._end - self._start, unit="batch")
        first = self._next * self.batch_size
        indices = range(first, min(first + self.batch_size, len(self.samples)))
        try:
            batch = make_batch(self.samples, self.specs, indices)
        except BaseException:
            self._close_bar()
            raise
        self._next += 1
        self._bar.update(1)
        return batch.inputs

    def rewind(self) -> None:
        """Start again from the first batch of the whole set (any `set_range` is cleared)."""
        self._close_bar()
        self._start, self._end, self._next = 0, len(self), 0

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only batches `start_index` to `end_index - 1` (clipped to the set), starting now."""
        start = max(0, int(start_index))
        end = min(len(self), int(end_index))
        self._close_bar()
        self._start, self._end, self._next = start, max(start, end), start

    def __iter__(self) -> "OrtCalibrationReader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self) -> dict:
        # onnxruntime deep-copies readers (smooth quant); a live progress bar cannot be copied.
        state = dict(self.__dict__)
        state["_bar"] = None
        return state
