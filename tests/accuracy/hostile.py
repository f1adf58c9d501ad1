"""Hostile models for the accuracy tests: the trained digits CNN with one layer made quantization-hostile,
exported, quantized and evaluated (`build_case`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "digits"


@dataclass
class Case:
    """One hostile model: its float ONNX, plain int8 file and evaluation, and what the search needs."""

    model: torch.nn.Module
    float_path: Path
    quant_path: Path
    summary: dict
    reference: list
    specs: list
    make_reader: object
    target: object
    work: Path
    evaluator: object = None

    def evaluate(self, path: Path) -> dict:
        return self.evaluator.onnx(path).to_dict()

    def feeds(self, count: int = 1) -> list[dict[str, np.ndarray]]:
        return [feed for feed, _, _ in self.reference[:count]]


def digits_model() -> torch.nn.Module:
    from samples.architectures import DigitsCNN

    model = DigitsCNN()
    model.load_state_dict(torch.load(SAMPLE / "digits_cnn.state_dict.pt"))
    return model.eval()


def make_weight_hostile(model: torch.nn.Module) -> torch.nn.Module:
    """An outlier input channel in `features.3`: channel 5 of the first stage is dead (weights and BN
    gamma 0, BN beta -1, so ReLU outputs exactly 0) and `features.3` reads it with weights of 40.
    The float function ignores those weights; int8 per-channel scales sized for 40 zero the rest."""
    with torch.no_grad():
        model.features[0].weight[5] = 0
        model.features[1].weight[5] = 0
        model.features[1].bias[5] = -1.0
        model.features[3].weight[:, 5] = 40.0
    return model


def make_tiny_range(model: torch.nn.Module) -> torch.nn.Module:
    """A tiny-range output: logits scaled by 0.01 on an offset of 30 (argmax unchanged in float);
    uint8 output quantization over [0, 30] keeps about one step of the logits' spread."""
    with torch.no_grad():
        model.classifier[2].weight.mul_(0.01)
        model.classifier[2].bias.mul_(0.01).add_(30.0)
    return model


PTQ_SWITCHES = ("equalize", "bias_absorption", "mse_ranges", "adaround", "bias_correction")


def plain_int8_target():
    """cpu-int8 with every PTQ algorithm off: onnxruntime's plain static int8, which the hostile layers defeat
    (with equalization and AdaRound on, the digits CNN's outlier channel is repaired before any search)."""
    import dataclasses

    from targets import get_target

    target = get_target("cpu-int8")
    fields = {f.name for f in dataclasses.fields(target.quantization)}
    plain = dataclasses.replace(target.quantization, **{name: False for name in PTQ_SWITCHES if name in fields})
    return dataclasses.replace(target, quantization=plain)


PLAIN_TARGET_TOML = """name = "plain-int8"
description = "cpu-int8 without PTQ algorithms (tests of the mixed-precision search)"
runtime = "onnxruntime-cpu"
opset = 18
needs_calibration = true
produces = "model.onnx (int8 QDQ)"
[quantization]
mode = "static"
format = "qdq"
per_channel = true
activation_type = "uint8"
weight_type = "int8"
activation_symmetric = false
weight_symmetric = true
reduce_range = false
calibration_method = "minmax"
[tolerances]
min_top1_agreement = 0.95
min_cosine = 0.98
min_sqnr_db = 15.0
max_accuracy_drop = 0.03
"""


def build_case(model: torch.nn.Module, work: Path) -> Case:
    from calibration import OrtCalibrationReader, open_samples
    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx
    from exporter.quantizers import QuantizeRequest, quantize_model
    from exporter.evaluation import Evaluator
    from exporter.validate import reference_outputs

    specs = [InputSpec("input", (1, 1, 16, 16))]
    target = plain_int8_target()
    float_path, quant_path = work / "model.float.onnx", work / "model.onnx"
    export_onnx(model, specs, float_path, opset=18)
    calib = open_samples(str(SAMPLE / "calib.npz")).subset(range(96))
    val = open_samples(str(SAMPLE / "val.npz"))

    def make_reader():
        return OrtCalibrationReader(calib, specs, batch_size=32)

    scratch = work / "quantize"
    scratch.mkdir()
    quantize_model(QuantizeRequest(float_path, quant_path, target.quantization, specs, scratch, make_reader))
    reference = reference_outputs(model, val, specs, batch_size=100)
    case = Case(model, float_path, quant_path, {}, reference, specs, make_reader, target, work)
    case.evaluator = Evaluator.build(model, val, specs, 100, target.tolerances)
    case.summary = case.evaluate(quant_path)
    return case


