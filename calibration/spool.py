"""A one-shot iterable made random-access: samples are written to disk as they arrive, then memory-mapped.

A factory that returns a generator can be read only once, but the split, calibration and
validation each read their samples again. Keeping every sample in a list would make memory grow
with the sample count; spooling keeps one sample in memory while reading and one row per sample
afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from calibration.limits import MAX_SAMPLE_BYTES, format_bytes
from calibration.samples import Sample, SampleSet
from exporter.errors import CalibrationError


class SpooledSampleSet(SampleSet):
    """The first `limit` items of `items`, converted by `to_sample` and spooled to one raw file per key.

    Every sample must carry the keys, shape and dtype of the first (a leading axis of 1 is dropped,
    and a float or integer is cast to the first sample's dtype of the same kind); anything else
    raises `CalibrationError` naming the item. `stopped_by_limit` tells whether items remained.
    The folder is removed when the set is garbage-collected.
    """

    def __init__(
        self,
        items: Iterable,
        to_sample: Callable[[object, int], Sample],
        limit: int,
        name: str,
        scratch: Path | None = None,
    ) -> None:
        if scratch is not None:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="spooled-samples-", dir=scratch))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        self.name = name
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._labels: list[int | None] = []
        self._maps: dict[str, np.ndarray] = {}
        self.stopped_by_limit = False
        files = {}
        try:
            iterator = iter(items)
            while True:
                if len(self._labels) >= limit:
                    self.stopped_by_limit = _has_more(iterator, name, limit)
                    break
                position = len(self._labels)
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception as error:  # noqa: BLE001 - the user's iterable failed: bad input
                    raise CalibrationError(
                        f"calibration {name} raised {type(error).__name__} while producing item {position}: {error}; "
                        "fix the factory"
                    ) from error
                sample = to_sample(item, position)
                for key, array in self._fit(sample, position).items():
                    if key not in files:
                        files[key] = open(self._path(key), "wb")
                    files[key].write(array.tobytes())
                self._labels.append(sample.label)
        finally:
            for file in files.values():
                file.close()
        self._length = len(self._labels)
        self.keys = tuple(self._layout)
        self.has_labels = self._length > 0 and all(label is not None for label in self._labels)
        self.description = f"{name} ({self._length} samples)"

    def _fit(self, sample: Sample, position: int) -> dict[str, np.ndarray]:
        """The sample's arrays in the first sample's layout (which the first sample sets)."""
        origin = sample.origin or f"item {position}"
        if not self._layout:
            for key, array in sample.inputs.items():
                if array.nbytes > MAX_SAMPLE_BYTES:
                    raise CalibrationError(
                        f"calibration sample {origin}: {key!r} takes {format_bytes(array.nbytes)}, more than the "
                        f"{format_bytes(MAX_SAMPLE_BYTES)} a calibration sample may take"
                    )
                self._layout[key] = (array.shape, array.dtype)
            return {key: np.ascontiguousarray(array) for key, array in sample.inputs.items()}
        if set(sample.inputs) != set(self._layout):
            raise CalibrationError(
                f"calibration sample {origin} has keys {sorted(sample.inputs)} but the first sample has "
                f"{sorted(self._layout)}: every sample must carry the same arrays"
            )
        fitted = {}
        for key, (shape, dtype) in self._layout.items():
            array = sample.inputs[key]
            if array.shape != shape:
                if array.size != int(np.prod(shape)) or (array.shape != (1, *shape) and (1, *array.shape) != shape):
                    raise CalibrationError(
                        f"calibration sample {origin}: {key!r} has shape {array.shape} but the first sample's is "
                        f"{shape}: every sample must have the same shape"
                    )
                array = array.reshape(shape)
            if array.dtype != dtype:
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise CalibrationError(
                        f"calibration sample {origin}: {key!r} has dtype {array.dtype} but the first sample's is "
                        f"{dtype}: give every sample the same dtype"
                    )
                array = array.astype(dtype)
            fitted[key] = np.ascontiguousarray(array)
        return fitted

    def _path(self, key: str) -> Path:
        return self.folder / f"{list(self._layout).index(key)}.bin"

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        position = self._check_index(index)
        inputs = {key: np.array(self._map(key)[position]) for key in self.keys}
        return Sample(inputs=inputs, label=self._labels[position], origin=f"{self.name}[{position}]")

    def _map(self, key: str) -> np.ndarray:
        if key not in self._maps:
            shape, dtype = self._layout[key]
            if self._length * dtype.itemsize * int(np.prod(shape)) == 0:
                self._maps[key] = np.zeros((self._length, *shape), dtype=dtype)
            else:
                self._maps[key] = np.memmap(self._path(key), dtype=dtype, mode="r", shape=(self._length, *shape))
        return self._maps[key]

    def __getstate__(self) -> dict:
        # Copies (onnxruntime deep-copies readers) map the same files again; only the original removes them.
        state = dict(self.__dict__)
        state["_maps"] = {}
        state["_cleanup"] = None
        return state


def _has_more(iterator, name: str, limit: int) -> bool:
    """Whether the iterable had an item beyond `limit` (reads at most one more)."""
    try:
        next(iterator)
    except StopIteration:
        return False
    except Exception:  # noqa: BLE001 - an error past the limit does not matter: those items are not used
        return True
    return True
