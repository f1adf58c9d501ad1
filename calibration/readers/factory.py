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
from calibration.limits import DEFAULT_FACTORY_SAMPLES
from calibration.samples import Sample, SampleSet
from calibration.spool import SpooledSampleSet
from calibration.split import draw_indices
from exporter.errors import CalibrationError

FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
LABEL_KEYS = ("label", "labels")
SINGLE_KEY = "input"


@register_reader
class FactoryReader(SampleReader):
    """`package.module:function` (not an existing path): the module is imported with the working
    directory on `sys.path` and the function called with no arguments. Items are converted by
    `item_to_sample`. At most `limit` samples are taken (`options.max_samples`, or
    `DEFAULT_FACTORY_SAMPLES` with a note when it cuts the source short):

    - a result with `__len__` and `__getitem__` (a torch Dataset, a list, an array) is read lazily by
      index. Its length is a claim: when the last claimed index raises IndexError, the items are
      counted by reading 0, 1, 2, ... until one is missing, and only those are used. When it holds
      more than `limit` items, a seeded draw of `limit` indices is used (memory follows `limit`,
      never the claimed length);
    - any other iterable is read once, up to `limit` items, and spooled to disk (`SpooledSampleSet`).

    An exception raised by the dataset or the iterable is bad input naming the item.
    """

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
        limit = options.max_samples or DEFAULT_FACTORY_SAMPLES
        if _is_dataset(result):
            return _open_dataset(result, source, limit, options)
        spooled = SpooledSampleSet(
            result,
            lambda item, position: item_to_sample(item, f"{source}[{position}]"),
            limit,
            f"calibration factory {source}",
            options.scratch,
        )
        if spooled.stopped_by_limit and options.max_samples is None:
            spooled.notes = (
                f"calibration factory {source} yields more than {limit} items: used the first {limit} "
                "(--calib-samples and --val-samples choose how many)",
            )
        return spooled


def _open_dataset(dataset: Any, source: str, limit: int, options: DataOptions) -> SampleSet:
    """A random-access dataset, its claimed length checked (see `FactoryReader`)."""
    try:
        claimed = int(len(dataset))
    except Exception as error:  # noqa: BLE001 - the user's __len__ failed
        raise CalibrationError(f"calibration factory {source!r}: len() of its dataset raised {type(error).__name__}: {error}") from error
    if claimed < 0:
        raise CalibrationError(f"calibration factory {source!r}: len() of its dataset is {claimed}: expected 0 or more")
    notes: list[str] = []
    length = claimed
    if claimed and not _index_exists(dataset, claimed - 1, source):
        length = _count_items(dataset, source, min(claimed, limit))
        notes.append(
            f"calibration factory {source}: len() says {claimed} items but item {length} does not exist; "
            f"used the {length} that do"
        )
    indices = None
    if length > limit:
        indices = draw_indices(length, limit, options.seed)
        if options.max_samples is None:
            notes.append(
                f"calibration factory {source} has {length} items: used a seeded draw of {limit} "
                "(--calib-samples and --val-samples choose how many)"
            )
    samples = DatasetSampleSet(dataset, source, length, indices)
    samples.notes = tuple(notes)
    return samples


def _index_exists(dataset: Any, index: int, source: str) -> bool:
    """Whether `dataset[index]` exists (False on IndexError; any other error is bad input)."""
    try:
        dataset[index]
    except IndexError:
        return False
    except Exception as error:  # noqa: BLE001
        raise _item_error(source, index, error) from error
    return True


def _count_items(dataset: Any, source: str, limit: int) -> int:
    """How many items `dataset[0]`, `dataset[1]`, ... exist before the first IndexError (at most `limit`)."""
    for index in range(limit):
        if not _index_exists(dataset, index, source):
            return index
    return limit


def _item_error(source: str, index: int, error: Exception) -> CalibrationError:
    return CalibrationError(
        f"calibration factory {source!r}: reading item {index} raised {type(error).__name__}: {error}; fix the dataset"
    )


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
    """A random-access dataset read item by item: items `0 .. length-1`, or only `indices` of them
    (sorted) when given; keys and labels are judged from the first item."""

    def __init__(self, dataset: Any, source: str, length: int, indices: list[int] | None = None) -> None:
        self.dataset = dataset
        self.source = source
        self._indices = indices
        self._length = length if indices is None else len(indices)
        first = self[0] if self._length else None
        self.keys = tuple(first.inputs) if first else ()
        self.has_labels = first is not None and first.label is not None
        drawn = "" if indices is None else f" drawn from {length}"
        self.description = f"calibration factory {source} ({self._length} samples{drawn})"

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        position = self._check_index(index)
        item_index = position if self._indices is None else self._indices[position]
        origin = f"{self.source}[{item_index}]"
        try:
            item = self.dataset[item_index]
        except Exception as error:  # noqa: BLE001 - the user's __getitem__ failed: bad input naming the item
            raise _item_error(self.source, item_index, error) from error
        sample = item_to_sample(item, origin)
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
