"""Everything about the user's calibration and validation data.

Open a source (`open_samples`), split it (`split_samples`), key it by the model's inputs
(`bind_to_inputs`, `infer_input_specs`), and feed it in checked batches (`iter_batches`, or
`OrtCalibrationReader` for onnxruntime's `quantize_static`). `OrtCalibrationReader` loads
onnxruntime on first use. Readers are bounded by `limits`; activation ranges are collected one
batch at a time by `statistics.collect_ranges`, or over torchrun processes by `sharding`.
"""

from __future__ import annotations

from typing import Any

from calibration.batching import Batch, iter_batches
from calibration.binding import bind_to_inputs, check_sample, infer_input_specs
from calibration.preprocess import DataOptions, ImagePreprocess
from calibration.readers import READERS
from calibration.samples import ListSampleSet, Sample, SampleSet
from calibration.source import open_samples
from calibration.split import split_samples

__all__ = [
    "open_samples",
    "Sample",
    "SampleSet",
    "ListSampleSet",
    "DataOptions",
    "ImagePreprocess",
    "split_samples",
    "bind_to_inputs",
    "check_sample",
    "infer_input_specs",
    "Batch",
    "iter_batches",
    "OrtCalibrationReader",
    "READERS",
]


def __getattr__(name: str) -> Any:
    if name == "OrtCalibrationReader":
        from calibration.ort_reader import OrtCalibrationReader

        return OrtCalibrationReader
    raise AttributeError(f"module 'calibration' has no attribute {name!r}")
