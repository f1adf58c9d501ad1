"""Reader for `package.module:function`, a user function that returns a Dataset or an iterable of samples."""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.base import SampleReader, register_reader
from calibration.samples import ListSampleSet, Sample, SampleSet
from exporter.errors import CalibrationError

FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
LABEL_KEYS = ("label", "labels")
SINGLE_KEY = "input"


@register_reader
class FactoryReader(SampleReader):
    """`package.module:function` (not an existing path): the module is imported with the working
    directory on `sys.path` and the function called with no arguments. A result with `__len__` and
    `__getitem__` (a torch Dataset, a list, an array) is read lazily; any other iterable is read
    into memory, at most `options.max_samples` items. Items are converted by `item_to_sample`."""

    name = "factory"
    description = "package.module:function returning a Dataset or an iterable of samples"

    @classmethod
    def accepts(cls, source: str) -> bool:
        return bool(FACTORY_PATTERN.match(source)) and not os.path.exists(source)

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        result = _call_factory(source)
        if _is_a(result, "DataLoader"):
            raise CalibrationError(
                f"calibration factory {source!r} returned a DataLoader, which yields batches: return its "
                "dataset instead (loader.dataset)"
            )
        if isinstance(result, (Mapping, str, bytes)) or not (_is_dataset(result) or isinstance(result, Iterable)):
            raise CalibrationError(
                f"calibration factory {source!r} returned a {type(result).__name__}: expected a Dataset "
                "(__len__ and __getitem__) or an iterable of samples"
            )
        if _is_dataset(result):
            return DatasetSampleSet(result, source)
        samples = []
        for position, item in enumerate(result):
            if options.max_samples is not None and position >= options.max_samples:
                break
            samples.append(item_to_sample(item, f"{source}[{position}]"))
        return ListSampleSet(samples, description=f"calibration factory {source}")


def _is_a(result: Any, class_name: str) -> bool:
    """True when `result`'s class or a base is called `class_name` (torch classes without importing torch)."""
    return any(cls.__name__ == class_name for cls in type(result).__mro__)


def _is_dataset(result: Any) -> bool:
    """Random access: `__len__` and `__getitem__`, and not a torch IterableDataset (whose `__getitem__` raises)."""
    return (
        hasattr(result, "__len__")
        and hasattr(result, "__getitem__")
        and not isinstance(result, (Mapping, str, bytes))
        and not _is_a(result, "IterableDataset")
    )


def _call_factory(source: str) -> Any:
    """Import `module` from `module:function` with the working directory importable, and call `function()`."""
    module_name, function_name = source.split(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure while importing user code is the user's to fix
        raise CalibrationError(
            f"cannot import calibration factory {source!r}: {error}; run from the folder that holds the "
            "package or install it"
        ) from error
    finally:
        if added:
            sys.path.remove(cwd)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise CalibrationError(
            f"calibration factory {source!r}: module {module_name!r} has no function {function_name!r}; "
            f"define {function_name}() returning a Dataset or an iterable of samples"
        )
    try:
        return function()
    except Exception as error:  # noqa: BLE001
        raise CalibrationError(
            f"calibration factory {source!r} raised {type(error).__name__}: {error}"
        ) from error


class DatasetSampleSet(SampleSet):
    """A random-access dataset read item by item; keys and labels are judged from item 0."""

    def __init__(self, dataset: Any, source: str) -> None:
        self.dataset = dataset
        self.source = source
        self._length = len(dataset)
        first = self[0] if self._length else None
        self.keys = tuple(first.inputs) if first else ()
        self.has_labels = first is not None and first.label is not None
        self.description = f"calibration factory {source} ({self._length} samples)"

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        position = self._check_index(index)
        origin = f"{self.source}[{position}]"
        sample = item_to_sample(self.dataset[position], origin)
        if self.keys and set(sample.inputs) != set(self.keys):
            raise CalibrationError(
                f"calibration sample {origin} has keys {sorted(sample.inputs)} but the first sample has "
                f"{sorted(self.keys)}: every sample must carry the same arrays"
            )
        return sample


def item_to_sample(item: Any, origin: str) -> Sample:
    """Convert one dataset item to a `Sample`. Accepted: an array or tensor (one input, key `input`);
    a tuple/list `(x,)` or `(x, label)` where `x` is an array, tensor or dict; a dict of arrays
    keyed by input name with an optional `label`/`labels` entry. Tensors become numpy arrays."""
    label: Any = None
    if isinstance(item, (tuple, list)):
        if len(item) not in (1, 2):
            raise CalibrationError(
                f"calibration sample {origin} is a {type(item).__name__} of {len(item)} items: expected "
                "x, (x,), (x, label) or a dict of arrays"
            )
        item, label = item[0], (item[1] if len(item) == 2 else None)
    if isinstance(item, Mapping):
        entries = dict(item)
        for key in LABEL_KEYS:
            if key in entries:
                found = entries.pop(key)
                label = found if label is None else label
        inputs = {str(key): _to_array(value, origin, str(key)) for key, value in entries.items()}
        if not inputs:
            raise CalibrationError(f"calibration sample {origin} is a dict without arrays: key them by input name")
    else:
        inputs = {SINGLE_KEY: _to_array(item, origin, SINGLE_KEY)}
    return Sample(inputs=inputs, label=_to_label(label, origin), origin=origin)


def _to_array(value: Any, origin: str, key: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    if type(value).__module__.startswith("PIL."):
        raise CalibrationError(
            f"calibration sample {origin}: {key!r} is a PIL image; give the dataset a transform that makes "
            "an array or tensor (e.g. torchvision ToTensor plus Normalize)"
        )
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise CalibrationError(f"calibration sample {origin}: {key!r} is not an array ({error})") from error
    if array.dtype.kind not in "biuf":
        raise CalibrationError(
            f"calibration sample {origin}: {key!r} is a {type(value).__name__} of dtype {array.dtype}; "
            "expected a numeric array or tensor"
        )
    return array


def _to_label(value: Any, origin: str) -> int | None:
    if value is None:
        return None
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    number = np.asarray(value)
    scalar = number.reshape(()).item() if number.size == 1 and number.dtype.kind in "biuf" else None
    if scalar is None or (isinstance(scalar, float) and not (math.isfinite(scalar) and scalar.is_integer())):
        raise CalibrationError(
            f"calibration sample {origin} has label {value!r}: expected one integer class index"
        )
    return int(scalar)
