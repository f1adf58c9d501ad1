"""Empirical bias correction: the mean output shift of int8 weights shrinks; no data, no change."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from calibration import ListSampleSet, Sample
from exporter.errors import PlanError
from exporter.inputs import InputSpec
from exporter.passes import PASSES
from exporter.passes.base import PassContext
from exporter.passes.bias_correct import quantized_weight

BiasCorrect = PASSES.get("bias_correct")


def skewed_net() -> nn.Module:
    """Non-negative weights with one large tap per filter: rounding zeroes many small positive weights,
    so int8 outputs are biased low on non-negative inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    ).eval()
    with torch.no_grad():
        model[2].weight.abs_()
        model[2].weight[:, :, 0, 0] *= 20
    return model


def context(model: nn.Module, calib) -> tuple[PassContext, torch.Tensor]:
    rng = np.random.default_rng(0)
    data = rng.random((64, 3, 8, 8), dtype=np.float32)
    samples = ListSampleSet([Sample({"input": row}) for row in data]) if calib else None
    specs = [InputSpec("input", (1, 3, 8, 8))]
    x = torch.from_numpy(data)
    return PassContext(example_inputs=(x[:2],), input_specs=specs, teacher=model, calib=samples, batch_size=16), x


def fake_quantized(model: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        for module in copy_.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(quantized_weight(module.weight))
    return copy_


def test_mean_shift_of_int8_weights_shrinks() -> None:
    model = skewed_net()
    ctx, x = context(model, calib=True)
    corrected, record = BiasCorrect(BiasCorrect.Config()).run(model, ctx)
    assert [c["layer"] for c in record.changes] == ["0", "2", "5"]
    assert corrected[2].bias is not None and model[2].bias is None  # a bias was added, the input model untouched
    with torch.no_grad():
        reference = model(x)
        before = (fake_quantized(model)(x) - reference).mean(dim=0).abs().mean()
        after = (fake_quantized(corrected)(x) - reference).mean(dim=0).abs().mean()
    assert after < 0.7 * before


def test_without_calibration_data_nothing_changes() -> None:
    model = skewed_net()
    ctx, _ = context(model, calib=False)
    corrected, record = BiasCorrect(BiasCorrect.Config()).run(model, ctx)
    assert record.changes == [] and record.skipped[0]["reason"].startswith("bias correction needs calibration data")
    assert all(torch.equal(a, b) for a, b in zip(corrected.state_dict().values(), model.state_dict().values()))


def test_simulated_weights_match_onnxruntime() -> None:
    from onnxruntime.quantization.quant_utils import quantize_data
    from onnx import TensorProto

    weight = torch.randn(4, 3, 3, 3)
    for reduce_range in (True, False):
        ours = quantized_weight(weight, reduce_range=reduce_range)
        for channel in range(4):
            row = weight[channel].numpy().ravel()
            zero, scale, q = quantize_data(row, TensorProto.INT8, True, reduce_range=reduce_range)
            theirs = (q.astype(np.float32) - zero) * scale
            np.testing.assert_allclose(ours[channel].numpy().ravel(), theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_samples": 0}, "bias_correct.max_samples must be at least 1, got 0"),
        ({"min_relative_shift": 1.5}, "bias_correct.min_relative_shift must be in [0, 1), got 1.5"),
        ({"bits": 7}, "unknown setting 'bits' for pass 'bias_correct': valid settings are max_samples, "
                      "min_relative_shift, per_channel, reduce_range"),
    ],
)
def test_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(PlanError) as info:
        BiasCorrect.Config.from_dict(settings, "bias_correct")
    assert str(info.value) == message
