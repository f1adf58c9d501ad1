"""Cross-layer equalization: the float function is unchanged, int8 error drops on a depthwise net."""

import numpy as np
import pytest
import torch
from torch import nn

from exporter.errors import PlanError
from exporter.passes import PASSES
from exporter.passes.base import PassContext
from exporter.inputs import InputSpec

Equalize = PASSES.get("equalize")


class DepthwiseNet(nn.Module):
    """Depthwise-separable blocks whose depthwise channels span three decades of range (as after
    BatchNorm folding in MobileNets) while the pointwise layer after them compensates, so every
    channel matters equally; one block still has its BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.act0 = nn.ReLU()
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU()
        self.pw1 = nn.Conv2d(16, 32, 1)
        self.act2 = nn.ReLU()
        self.dw2 = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.act3 = nn.ReLU()
        self.pw2 = nn.Conv2d(32, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.stem(x))
        x = self.act1(self.bn1(self.dw1(x)))
        x = self.act2(self.pw1(x))
        x = self.act3(self.dw2(x))
        return self.pw2(x).mean(dim=(2, 3))


def depthwise_net() -> nn.Module:
    torch.manual_seed(0)
    model = DepthwiseNet().eval()
    with torch.no_grad():
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.bias.zero_()
        model.dw2.bias.zero_()
        for dw, bn, pw, channels in ((model.dw1, model.bn1, model.pw1, 16), (model.dw2, None, model.pw2, 32)):
            gain = torch.logspace(-2, 1, channels)[torch.randperm(channels)]
            (bn.weight if bn is not None else dw.weight).mul_(gain.reshape((-1,) + (() if bn is not None else (1, 1, 1))))
            pw.weight.div_(gain.reshape(1, -1, 1, 1))
    return model


def equalize(model: nn.Module, inputs: torch.Tensor, **settings):
    specs = [InputSpec("input", tuple(inputs.shape))]
    config = Equalize.Config.from_dict(settings, "equalize")
    return Equalize(config).run(model, PassContext(example_inputs=(inputs,), input_specs=specs, teacher=model))


def test_float_output_is_unchanged_and_pairs_are_recorded() -> None:
    model = depthwise_net()
    x = torch.rand(8, 3, 16, 16)
    equalized, record = equalize(model, x)
    assert torch.max(torch.abs(equalized(x) - model(x))) < 1e-4
    pairs = [(c["layer"], c["next"]) for c in record.changes]
    assert pairs == [("stem", "dw1"), ("dw1", "pw1"), ("pw1", "dw2"), ("dw2", "pw2")]
    assert record.changes[1]["through"] == ["bn1", "act1"]
    spread = {c["layer"]: c["channel_range_spread"] for c in record.changes}
    assert all(after <= before * 1.001 for before, after in spread.values())
    assert spread["dw1"][1] < spread["dw1"][0] / 10 and spread["dw2"][1] < spread["dw2"][0] / 10
    assert record.params_before == record.params_after


def test_int8_error_drops(tmp_path) -> None:
    from calibration import ListSampleSet, OrtCalibrationReader, Sample
    from exporter.metrics import sqnr_db
    from exporter.onnx_export import export_onnx
    from exporter.quantizers import QuantizeRequest, quantize_model
    from exporter.runtime import run_onnx, session_for
    from tests.accuracy.hostile import plain_int8_target

    model = depthwise_net()
    rng = np.random.default_rng(0)
    data = rng.random((96, 3, 16, 16), dtype=np.float32)
    samples = ListSampleSet([Sample({"input": row}) for row in data[:64]])
    specs = [InputSpec("input", (1, 3, 16, 16))]
    equalized, _ = equalize(model, torch.from_numpy(data[:2]))
    errors = {}
    for name, candidate in (("plain", model), ("equalized", equalized)):
        work = tmp_path / name
        work.mkdir()
        export_onnx(candidate, specs, work / "f.onnx", opset=18)
        quantize_model(QuantizeRequest(work / "f.onnx", work / "q.onnx", plain_int8_target().quantization, specs, work,
                                       lambda: OrtCalibrationReader(samples, specs, 16)))
        out = run_onnx(session_for(work / "q.onnx"), {"input": data[64:]})[0]
        with torch.no_grad():
            reference = model(torch.from_numpy(data[64:])).numpy()
        errors[name] = sqnr_db(reference, out)
    assert errors["equalized"] > errors["plain"] + 3.0, errors


class Relu6Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Conv2d(2, 4, 1), nn.ReLU6(), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.act(self.a(x)))


def test_relu6_pairs_are_skipped_or_replaced() -> None:
    x = torch.rand(2, 2, 4, 4)
    _, record = equalize(Relu6Pair().eval(), x)
    assert record.changes == []
    assert record.skipped == [{"layer": "a", "reason": "ReLU6 'act' is not scale-equivariant (relu6='replace' swaps it for ReLU)"}]
    replaced, record = equalize(Relu6Pair().eval(), x, relu6="replace")
    assert isinstance(replaced.act, nn.ReLU) and record.changes[0]["relu6_replaced"] == "act"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rounds": 0}, "equalize.rounds must be at least 1, got 0"),
        ({"max_scale": 1}, "equalize.max_scale must be greater than 1, got 1.0"),
        ({"relu6": "clip"}, "bad value 'clip' for equalize.relu6: expected one of skip, replace"),
    ],
)
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(PlanError) as info:
        Equalize.Config.from_dict(settings, "equalize")
    assert str(info.value) == message
