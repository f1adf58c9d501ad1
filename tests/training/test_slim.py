"""The `slim` pass: the L1 penalty drives BatchNorm scales down, dead channels become exact zeros,
and the `prune` hand-off removes exactly those channels."""

import pytest
import torch

from exporter.errors import PlanError
from exporter.passes import PASSES
from exporter.passes.slim import producers_of_batchnorms, zero_dead_channels
from samples.architectures import DigitsCNN
from tests.training.helpers import make_context, run_pass

Slim = PASSES.get("slim")
BN_LAYERS = ("features.1", "features.4", "features.8")


def test_slim_is_registered_before_prune() -> None:
    assert (Slim.name, Slim.shorthand, Slim.order) == ("slim", "penalty", 15)
    assert Slim.order < PASSES.get("prune").order < PASSES.get("distill").order
    assert Slim.Config.from_dict({"penalty": "0.2"}, "slim").penalty == 0.2


@pytest.fixture(scope="module")
def slimmed(teacher, calib, val):
    """slim without the prune hand-off, and the same run with it (the training is deterministic)."""
    ctx = make_context(teacher, calib, val)
    zeroed, zeroed_record = run_pass("slim", teacher, ctx, penalty=1.0, prune=False)
    pruned, pruned_record = run_pass("slim", teacher, ctx, penalty=1.0)
    return zeroed, zeroed_record, pruned, pruned_record


def test_penalty_drives_scales_down_and_kills_channels(slimmed, teacher) -> None:
    zeroed, record, _, _ = slimmed
    rows = {row["layer"]: row for row in record.changes}
    assert tuple(rows) == BN_LAYERS
    total_before = total_after = 0.0
    for name in BN_LAYERS:
        scale = teacher.get_submodule(name).weight.detach().abs()
        (mean_before, mean_after), (ratio_before, ratio_after) = rows[name]["mean_scale"], rows[name]["l1_over_l2"]
        assert mean_before == pytest.approx(float(scale.mean()), abs=1e-5)
        # The penalised L1/L2 ratio of every layer's scales falls: some channels shrink far more than others.
        assert ratio_after < 0.85 * ratio_before
        assert rows[name]["dead_channels"] >= 0.2 * rows[name]["channels"]
        total_before += mean_before * rows[name]["channels"]
        total_after += mean_after * rows[name]["channels"]
    assert total_after < 0.95 * total_before
    dead = record.summary["dead_channels"]
    assert record.summary["channels"] == 112 and 30 <= dead <= 80
    # Dead channels have exactly zero scale and shift; live ones are above the threshold.
    zero_count = 0
    for name in BN_LAYERS:
        bn = zeroed.get_submodule(name)
        is_dead = bn.weight == 0
        assert torch.equal(bn.bias[is_dead], torch.zeros(int(is_dead.sum())))
        live = bn.weight.detach()[~is_dead].abs()
        assert float(live.min()) >= 0.05 * float(live.max())
        zero_count += int(is_dead.sum())
    assert zero_count == dead
    assert record.params_after == record.params_before
    assert record.summary["after_zeroing"]["agreement"] >= 0.95


def test_plain_l1_with_frozen_statistics_shrinks_every_layer(teacher, calib, val) -> None:
    ctx = make_context(teacher, calib, val)
    _, record = run_pass("slim", teacher, ctx, penalty=0.1, normalize=False, prune=False)
    for row in record.changes:
        mean_before, mean_after = row["mean_scale"]
        assert mean_after < 0.9 * mean_before, row["layer"]
    assert record.summary["dead_channels"] > 0


def test_prune_removes_exactly_the_dead_channels(slimmed) -> None:
    zeroed, zeroed_record, pruned, record = slimmed
    rows = {row["layer"]: row for row in zeroed_record.changes}
    widths = {name: rows[name]["channels"] - rows[name]["dead_channels"] for name in BN_LAYERS}
    for name in BN_LAYERS:
        assert pruned.get_submodule(name).num_features == widths[name]
    assert pruned.classifier[0].in_features == widths["features.8"] * 16
    assert record.params_after < 0.8 * record.params_before
    assert record.summary["prune"]["layer_ratios"][0].startswith("features.")
    # Removing channels whose normalised output is exactly 0 changes nothing.
    x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = zeroed(x)
        # Float32 rounding only: fewer channels sum in another order, so the bound scales with the outputs
        # (a channel that was not really dead would change them by orders of magnitude more).
        torch.testing.assert_close(pruned(x), expected, rtol=0, atol=1e-5 * max(1.0, float(expected.abs().max())))
    assert record.summary["after_prune"]["agreement"] == record.summary["after_zeroing"]["agreement"]


def test_without_penalty_no_channel_dies(teacher, calib, val) -> None:
    _, record = run_pass("slim", teacher, make_context(teacher, calib.subset(range(64)), val), penalty=0.0, epochs=1)
    assert record.summary["dead_channels"] == 0 and record.params_after == record.params_before
    assert any("no channel fell below the threshold" in note for note in record.notes)


def test_zeroing_respects_threshold_and_max_ratio() -> None:
    model = DigitsCNN()
    with torch.no_grad():
        model.features[1].weight.copy_(torch.linspace(0.0, 1.0, 16))
    rows = zero_dead_channels(model, threshold=0.25, max_ratio=0.9)
    assert rows[0]["dead_channels"] == 4  # 0, 1/15, 2/15, 3/15 < 0.25
    assert rows[1]["dead_channels"] == 0
    rows = zero_dead_channels(model, threshold=0.9, max_ratio=0.5)
    assert rows[0]["dead_channels"] == 8
    assert torch.count_nonzero(model.features[1].weight) == 8


def test_producers_are_the_layers_feeding_each_batchnorm() -> None:
    assert producers_of_batchnorms(DigitsCNN()) == {
        "features.1": "features.0",
        "features.4": "features.3",
        "features.8": "features.7",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"penalty": -1}, "bad slim penalty -1.0: expected 0 or more, e.g. 1"),
        ({"threshold": 1}, "bad slim threshold 1.0: expected a fraction of the largest scale in [0, 1)"),
        ({"max_ratio": 1}, "bad slim max_ratio 1.0: expected a fraction in [0, 1)"),
        ({"nproc": 3}, "slim batch_size 32 does not split over 3 processes: use a multiple of 3"),
        ({"epochs": 0}, "bad slim epochs 0: expected 1 or more"),
    ],
)
def test_bad_settings_raise_plan_errors(settings: dict, message: str) -> None:
    with pytest.raises(PlanError) as error:
        Slim.Config.from_dict(settings, "slim")
    assert str(error.value) == message
