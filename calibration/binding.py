"""Fitting samples to the model: key them by input name, check shapes and dtypes, infer specs."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from calibration.samples import Sample, SampleSet
from exporter.errors import CalibrationError
from exporter.inputs import InputSpec

# Data dtypes the exporter cannot feed as they are, and what they become when specs are inferred.
INFERRED_DTYPES = {
    "float64": "float32",
    "int8": "int64",
    "int16": "int64",
    "uint16": "int64",
    "uint32": "int64",
    "uint64": "int64",
}


def bind_to_inputs(samples: SampleSet, input_names: Sequence[str]) -> SampleSet:
    """A view of `samples` whose arrays are keyed by the model's input names.

    A single-input model takes the one array of each sample whatever its key; a model with several
    inputs needs keys equal to its input names (in any order). Anything else raises
    `CalibrationError`. Binding an already-bound set returns it unchanged.
    """
    names = tuple(input_names)
    keys = tuple(samples.keys)
    if keys == names or (not keys and len(samples) == 0):
        return samples
    if len(names) == 1 and len(keys) == 1:
        return BoundSampleSet(samples, {names[0]: keys[0]})
    if len(names) == 1:
        raise CalibrationError(
            f"calibration data {samples.description} has keys {list(keys)} but the model has one input "
            f"{list(names)}: give one array per sample, or name it {names[0]!r} and drop the others"
        )
    if set(keys) != set(names):
        raise CalibrationError(
            f"calibration data {samples.description} has keys {list(keys)} but the model's inputs are "
            f"{list(names)}: name the arrays after the model inputs"
        )
    return BoundSampleSet(samples, {name: name for name in names})


class BoundSampleSet(SampleSet):
    """A view of a parent set with each sample's arrays re-keyed: `mapping` is model input -> source key."""

    def __init__(self, parent: SampleSet, mapping: dict[str, str]) -> None:
        self.parent = parent
        self.mapping = mapping
        self.keys = tuple(mapping)
        self.has_labels = parent.has_labels
        self.description = parent.description
        self.notes = parent.notes

    def __len__(self) -> int:
        return len(self.parent)

    def __getitem__(self, index: int) -> Sample:
        sample = self.parent[index]
        missing = [key for key in self.mapping.values() if key not in sample.inputs]
        if missing:
            raise CalibrationError(
                f"calibration sample {index} ({sample.origin}) has keys {sorted(sample.inputs)}, missing "
                f"{missing}: every sample must carry the same arrays"
            )
        inputs = {name: sample.inputs[key] for name, key in self.mapping.items()}
        return Sample(inputs=inputs, label=sample.label, origin=sample.origin)


def check_sample(sample: Sample, index: int, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """Validate one bound sample against the model's input specs and return its arrays in the spec dtypes.

    Rules, per input: the array must exist; its shape must equal `spec.sample_shape`, except that one
    extra or missing leading axis of size 1 is reshaped away; floats may be cast to another float
    dtype and integers to another integer dtype whose range holds the values, but floats and
    integers (or booleans) never mix; float values must be finite.
    """
    where = f"calibration sample {index} ({sample.origin or 'no origin'})"
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in sample.inputs:
            raise CalibrationError(
                f"{where}: input {spec.name!r} is missing (the sample has {sorted(sample.inputs)}); "
                "name the arrays after the model inputs"
            )
        array = np.asarray(sample.inputs[spec.name])
        expected = tuple(spec.sample_shape)
        if array.shape != expected:
            if array.shape == (1, *expected) or (1, *array.shape) == expected:
                array = array.reshape(expected)
            else:
                raise CalibrationError(
                    f"{where}: input {spec.name!r} has shape {array.shape}, expected {expected} "
                    "(--input-shape or the model's first layer decides)"
                )
        target = np.dtype(spec.dtype)
        _check_dtype(array, target, where, spec.name)
        with np.errstate(over="ignore"):  # an overflow shows up as Inf, reported just below
            converted = np.ascontiguousarray(array, dtype=target)
        if target.kind == "f" and not np.isfinite(converted).all():
            raise CalibrationError(
                f"{where}: input {spec.name!r} contains NaN or Inf values"
                f"{' after casting to ' + target.name if np.isfinite(array).all() else ''}; clean or drop that sample"
            )
        checked[spec.name] = converted
    return checked


def _kind(dtype: np.dtype) -> str:
    return {"f": "float", "i": "integer", "u": "integer", "b": "bool"}.get(dtype.kind, dtype.kind)


def _check_dtype(array: np.ndarray, target: np.dtype, where: str, name: str) -> None:
    """Raise unless `array` converts to `target` without changing what the values mean."""
    if _kind(array.dtype) != _kind(target):
        raise CalibrationError(
            f"{where}: input {name!r} has dtype {array.dtype}, expected {target} ({_kind(array.dtype)} data "
            f"for a {_kind(target)} input); convert the data with .astype('{target}')"
        )
    if target.kind in "iu" and array.size and not np.can_cast(array.dtype, target):
        low, high = int(array.min()), int(array.max())
        limits = np.iinfo(target)
        if low < limits.min or high > limits.max:
            raise CalibrationError(
                f"{where}: input {name!r} has values {low}..{high} that do not fit {target} "
                f"({limits.min}..{limits.max}); fix the data or the input dtype"
            )


def infer_input_specs(samples: SampleSet, input_names: Sequence[str]) -> list[InputSpec]:
    """Input specs read off the first sample: shape `(1, *sample shape)` and the sample's dtype, with
    float64 data promoted to float32 (and narrow or unsigned integers other than uint8 to int64).
    An empty set raises `CalibrationError`."""
    bound = bind_to_inputs(samples, input_names)
    if len(bound) == 0:
        raise CalibrationError(f"calibration data {samples.description} contains no samples")
    first = bound[0]
    specs = []
    for name in input_names:
        array = np.asarray(first.inputs[name])
        dtype = INFERRED_DTYPES.get(array.dtype.name, array.dtype.name)
        specs.append(InputSpec(name=name, shape=(1, *array.shape), dtype=dtype))
    return specs
