"""Low-bit experiments usable with any target: `binarize` and `stochastic_round` (they live in
`exporter/passes/`; their tests sit here with the targets they are meant to be combined with)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from exporter.errors import CompressionError, PlanError
from exporter.inputs import InputSpec
from exporter.passes import PASSES, PassContext
from exporter.passes.stochastic_round import stochastic_round_weight
from tests.quantizers import sample_models as sm


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10),
    ).eval()


def run_pass(name: str, model: nn.Module, **settings):
    cls = PASSES.get(name)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ctx = PassContext(example_inputs=(x,), input_specs=[InputSpec("input", (2, 1, 8, 8))], teacher=model)
    return cls(cls.Config.from_dict(settings, name)).run(model, ctx)


def test_binarize_default_skips_first_and_last_layer():
    model = tiny_cnn()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    new, record = run_pass("binarize", model)
    assert [c["layer"] for c in record.changes] == ["2", "5"]
    assert [s["layer"] for s in record.skipped] == ["0", "7"]
    for name in ("2", "5"):
        weight = dict(new.named_modules())[name].weight.detach()
        flat = weight.reshape(weight.shape[0], -1)
        alpha = original[f"{name}.weight"].reshape(weight.shape[0], -1).abs().mean(1)
        # every weight is +alpha_c or -alpha_c, with the sign of the original weight
        assert torch.allclose(flat.abs(), alpha[:, None].expand_as(flat))
        assert torch.equal(flat >= 0, original[f"{name}.weight"].reshape(weight.shape[0], -1) >= 0)
        assert all(torch.unique(row).numel() <= 2 for row in flat)
    assert torch.equal(new[0].weight, original["0.weight"]) and torch.equal(new[7].weight, original["7.weight"])
    assert torch.equal(new[2].bias, original["2.bias"])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in original.items())  # caller's model untouched
    summary = record.summary
    assert summary["layers_binarized"] == 2 and summary["distinct_values_per_channel"] == 2
    assert summary["weights_binarized"] == 8 * 8 * 9 + 512 * 32
    assert 0 < summary["mean_relative_weight_error"] < 1
    assert summary["packed_bytes_at_1_bit"] == (576 + 7) // 8 + 4 * 8 + (16384 + 7) // 8 + 4 * 32
    assert record.changes[0]["distinct_values"] <= 2 * 8


def test_binarize_layer_patterns():
    _, record = run_pass("binarize", tiny_cnn(), layers="0,7")
    assert [c["layer"] for c in record.changes] == ["0", "7"]
    with pytest.raises(CompressionError) as info:
        run_pass("binarize", tiny_cnn(), layers="features.*")
    assert str(info.value) == "binarize: pattern 'features.*' matches no Conv/Linear layer; layers are: 0, 2, 5, 7"


def test_binarize_costs_accuracy_on_the_sample_and_says_so():
    model = sm.digits_model()
    data = sm.digits_data()
    new, record = run_pass_on_digits("binarize", model)
    with torch.no_grad():
        out = new(torch.from_numpy(data["val"])).numpy()
    figures = sm.agreement(sm.digits_reference(), out, data["val_labels"])
    assert figures["top1_agreement"] < 0.9  # an honest experiment: no retraining, large loss
    assert any("expect a large accuracy cost" in note for note in record.notes)


def run_pass_on_digits(name: str, model: nn.Module, **settings):
    cls = PASSES.get(name)
    x = torch.from_numpy(sm.digits_data()["val"][:2])
    ctx = PassContext(example_inputs=(x,), input_specs=sm.DIGITS_SPECS, teacher=model)
    return cls(cls.Config.from_dict(settings, name)).run(model, ctx)


def test_stochastic_round_levels_and_reproducibility():
    model = tiny_cnn()
    new, record = run_pass("stochastic_round", model, bits=3, seed=7)
    assert len(record.changes) == 4 and record.skipped == []
    for module in (new[0], new[2], new[5], new[7]):
        flat = module.weight.detach().reshape(module.weight.shape[0], -1)
        assert all(torch.unique(row).numel() <= 2**3 - 1 for row in flat)
    again, _ = run_pass("stochastic_round", model, bits=3, seed=7)
    other, _ = run_pass("stochastic_round", model, bits=3, seed=8)
    assert torch.equal(again[5].weight, new[5].weight)
    assert not torch.equal(other[5].weight, new[5].weight)
    summary = record.summary
    assert summary["bits"] == 3 and summary["layers_rounded"] == 4
    # honest: per weight, stochastic rounding is noisier than rounding to nearest
    assert summary["mean_relative_weight_error"] > summary["mean_nearest_rounding_error"] > 0


def test_stochastic_round_is_unbiased():
    weight = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([stochastic_round_weight(weight, 4, generator)[0] for _ in range(400)])
    step = weight.abs().amax(1, keepdim=True) / 7
    # mean of 400 draws is within a few standard errors (step / 2 / sqrt(400)) of the weight
    assert torch.all((draws.mean(0) - weight).abs() <= 4 * step / 2 / 20)
    nearest = stochastic_round_weight(weight, 4, generator)[1]
    assert torch.all((nearest - weight).abs() <= step / 2 + 1e-6)


def test_stochastic_round_8_bits_keeps_the_sample_accurate():
    data = sm.digits_data()
    new, record = run_pass_on_digits("stochastic_round", sm.digits_model(), bits=8)
    with torch.no_grad():
        out = new(torch.from_numpy(data["val"])).numpy()
    figures = sm.agreement(sm.digits_reference(), out, data["val_labels"])
    assert figures["top1_agreement"] >= 0.98 and figures["cosine"] > 0.999, figures
    assert record.summary["mean_relative_weight_error"] < 0.02


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("stochastic_round", {"bits": 1}, "stochastic_round.bits must be between 2 and 16, got 1 (for 1 bit use the binarize pass)"),
        ("stochastic_round", {"bits": 4, "seed": -1}, "stochastic_round.seed must be >= 0, got -1"),
        ("stochastic_round", {"bitz": 4}, "unknown setting 'bitz' for pass 'stochastic_round': valid settings are bits, layers, seed"),
        ("binarize", {"layers": ["  "]}, "binarize.layers: empty pattern in ['']"),
    ],
)
def test_bad_settings(name, settings, message):
    cls = PASSES.get(name)
    with pytest.raises(PlanError) as info:
        cls.Config.from_dict(settings, name)
    assert str(info.value) == message


def test_registered_order():
    assert (PASSES.get("binarize").order, PASSES.get("stochastic_round").order) == (60, 61)
    assert PASSES.get("stochastic_round").shorthand == "bits"


def test_passes_work_on_torchscript_models():
    scripted = torch.jit.script(tiny_cnn())
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    before = scripted(x)
    new, record = run_pass("binarize", scripted)
    assert [c["layer"] for c in record.changes] == ["2", "5"]
    assert torch.unique(new.state_dict()["2.weight"][0]).numel() == 2
    assert torch.equal(scripted(x), before)  # the caller's scripted model is untouched
    _, record = run_pass("stochastic_round", scripted, bits=4)
    assert record.summary["layers_rounded"] == 4
