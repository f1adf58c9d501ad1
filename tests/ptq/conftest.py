"""Shared fixtures: the imbalanced depthwise net as float ONNX, its calibration and held-out images."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from tests.ptq.nets import ArrayReader, export, images, imbalanced_mobile_block

SPREAD = 3000.0  # depthwise channel ranges spread over 3.5 decades: plain int8 fails the cosine bar


@pytest.fixture(scope="session")
def block_onnx(tmp_path_factory):
    """Float ONNX of `imbalanced_mobile_block()` (seeded)."""
    return export(imbalanced_mobile_block(spread=SPREAD), tmp_path_factory.mktemp("ptq") / "block.onnx")


@pytest.fixture(scope="session")
def calib_images():
    return images(64, seed=1)


@pytest.fixture(scope="session")
def val_images():
    return images(256, seed=2)


def run(path, array: np.ndarray) -> np.ndarray:
    """The model's first output on `array` (input `input`)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": array})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine similarity of two (N, K) arrays."""
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def quantize(float_path, work, calib, **fields):
    """Static int8 (cpu-int8's scheme, full-range weights) with `fields` overriding the PTQ switches."""
    from exporter.quantizers.base import QuantizeRequest, quantize_model
    from targets import get_target

    base = dataclasses.replace(
        get_target("cpu-int8").quantization,
        reduce_range=False,
        equalize=False,
        mse_ranges=False,
        adaround=False,
        bias_correction=False,
        adaround_iterations=100,
        adaround_samples=512,
    )
    work.mkdir(parents=True, exist_ok=True)
    info = quantize_model(
        QuantizeRequest(float_path, work / "model.onnx", dataclasses.replace(base, **fields), [], work, make_reader=lambda: ArrayReader(calib))
    )
    return work / "model.onnx", info
