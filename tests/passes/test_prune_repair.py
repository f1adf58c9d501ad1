"""Repair after pruning (`prune.repair`): removed inputs' mean into consumer biases, BatchNorm statistics re-estimated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from calibration.samples import ListSampleSet, Sample
from exporter.inputs import InputSpec
from exporter.passes import PASSES, PassContext
from exporter.program_graph import capture, lift
from samples.architectures import DigitsCNN

DIGITS = Path(__file__).resolve().parents[2] / "samples" / "digits"
PRUNE = PASSES.get("prune")


def _context(model: nn.Module, inputs: np.ndarray, name: str = "x") -> PassContext:
    specs = [InputSpec(name, (1, *inputs.shape[1:]))]
    calib = ListSampleSet([Sample({name: row}) for row in inputs])
    return PassContext(
        example_inputs=(torch.from_numpy(inputs[:2]),), input_specs=specs, teacher=model, calib=calib, batch_size=32
    )


def test_compensation_is_exact_when_the_removed_channels_are_constant():
    """Channels whose output never varies carry only their mean: moving it into the next bias loses nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight[4:] = 0.0  # channels 4-7: constant relu(bias) > 0, and the weakest by L1 norm
        model[0].bias[4:] = torch.tensor([0.5, 1.0, 1.5, 2.0])
    inputs = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    ctx = _context(model, inputs)
    x = torch.from_numpy(inputs)
    repaired, record = PRUNE(PRUNE.Config(ratio=0.5)).run(model, ctx)
    cut_only, _ = PRUNE(PRUNE.Config(ratio=0.5, repair="none")).run(model, ctx)
    assert repaired[0].out_features == 4 and repaired[2].in_features == 4
    with torch.no_grad():
        torch.testing.assert_close(repaired(x), model(x), atol=1e-5, rtol=1e-5)
        assert (cut_only(x) - model(x)).abs().max() > 0.5  # without repair the offsets are lost
    assert any("1 layer(s) took their removed inputs' mean into their bias" in note for note in record.notes)


def test_repair_brings_a_pruned_trained_cnn_back_without_training():
    """The sample digits CNN (trained weights) loses most of its accuracy to 50% L1 pruning; the repair recovers it."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(DIGITS / "digits_cnn.state_dict.pt", weights_only=True))
    model.eval()
    calib, val = np.load(DIGITS / "calib.npz"), np.load(DIGITS / "val.npz")
    x, labels = torch.from_numpy(val["input"]), torch.from_numpy(val["labels"])
    lifted = lift(capture(model, (x[:2],)))
    ctx = _context(lifted, calib["input"], name="input")

    def accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(x).argmax(1) == labels).float().mean())

    repaired, record = PRUNE(PRUNE.Config(ratio=0.5)).run(lifted, ctx)
    cut_only, _ = PRUNE(PRUNE.Config(ratio=0.5, repair="none")).run(lifted, ctx)
    assert accuracy(model) > 0.95
    assert accuracy(repaired) > accuracy(cut_only) + 0.4  # measured 0.81 against 0.19
    assert accuracy(repaired) > 0.7
    assert any("BatchNorm(s) re-estimated" in note for note in record.notes)
    # BatchNorm statistics really moved to the pruned model's own activations.
    before = lifted.get_submodule("features.4").running_mean
    after = repaired.get_submodule("features.4").running_mean
    kept = len(after)
    assert kept < len(before) and not torch.allclose(after, before[:kept])
