"""Structured channel pruning: smaller tensors, correct dependencies, honest skips."""

import pytest
import torch
from torch import nn

from exporter.errors import CompressionError, PlanError
from exporter.modelstats import count_macs, count_params
from exporter.passes import PASSES
from tests.passes.tiny_models import build, make_context, randomize_bn

Prune = PASSES.get("prune")


def prune(model: nn.Module, inputs: tuple[torch.Tensor, ...], **settings):
    """Run the pass through its public contract and return (pruned model, record)."""
    return Prune(Prune.Config.from_dict(settings, "prune")).run(model, make_context(model, inputs))


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def kill_odd_channels(model: nn.Module) -> nn.Module:
    """Make every odd output channel of every layer but the head exactly zero (weights, bias, BN).

    Removing exactly those channels must then leave the model's output unchanged, which checks that
    every dependent layer lost the matching inputs (and only those).
    """
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head:
                m.weight[1::2] = 0
                if m.bias is not None:
                    m.bias[1::2] = 0
            if isinstance(m, nn.BatchNorm2d):
                m.weight[1::2] = 0
                m.bias[1::2] = 0
                m.running_mean[1::2] = 0
    return model


def test_half_ratio_gives_exactly_the_half_width_model(family: str) -> None:
    model, inputs = build(family)
    half, _ = build(family, w=0.5)
    pruned, record = prune(model, inputs, ratio=0.5)
    assert shapes(pruned) == shapes(half)
    assert type(pruned) is type(model)
    assert (record.params_after, record.macs_after) == (count_params(half), count_macs(half, inputs))
    assert record.params_after < 0.35 * record.params_before and record.macs_after < 0.35 * record.macs_before
    assert pruned(*inputs).shape == model(*inputs).shape
    assert record.changes and all("layer" in row for row in record.changes)


def test_removing_dead_channels_keeps_the_output(family: str) -> None:
    model, inputs = build(family)
    kill_odd_channels(model)
    pruned, _ = prune(model, inputs, ratio=0.5, importance="l1")
    torch.testing.assert_close(pruned(*inputs), model(*inputs), rtol=0, atol=1e-5)


def test_original_model_is_not_modified() -> None:
    model, inputs = build("residual")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune(model, inputs, ratio=0.5)
    assert shapes(model) == {k: tuple(v.shape) for k, v in before.items()}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_residual_channels_are_tied_across_the_block() -> None:
    model, inputs = build("residual")
    pruned, _ = prune(model, inputs, ratio=0.5)
    rows = {row["layer"]: row for row in _changes(model, inputs)}
    assert rows["layer1.0.conv2"]["out_channels"] == rows["stem.0"]["out_channels"] == [16, 8]
    assert pruned.layer2.shortcut[0].out_channels == pruned.layer2.conv2.out_channels == 16


def _changes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[dict]:
    return prune(model, inputs, ratio=0.5)[1].changes


def test_head_is_kept_and_named_in_the_record() -> None:
    model, inputs = build("plain_cnn")
    _, record = prune(model, inputs, ratio=0.5)
    assert record.skipped == [
        {"layer": "classifier.2", "reason": "its channels reach the model output, whose shape must not change"}
    ]


def test_ignore_keeps_a_layer_at_full_width() -> None:
    model, inputs = build("mlp")
    pruned, record = prune(model, inputs, ratio=0.5, ignore=["net.0"])
    assert pruned.net[0].out_features == 128 and pruned.net[2].out_features == 32
    assert {"layer": "net.0", "reason": "matches the prune ignore pattern 'net.0'"} in record.skipped


def test_ignore_pattern_matching_nothing_is_an_error() -> None:
    model, inputs = build("mlp")
    with pytest.raises(CompressionError, match=r"prune ignore pattern 'head\*' matches no layer of the model"):
        prune(model, inputs, ignore=["head*"])


def test_layer_ratios_override_the_global_ratio() -> None:
    model, inputs = build("mlp")
    pruned, _ = prune(model, inputs, ratio=0.5, layer_ratios=["net.2=0.75", "net.*=0"])
    assert (pruned.net[0].out_features, pruned.net[2].out_features) == (128, 16)


def test_round_to_keeps_multiples() -> None:
    model, inputs = build("mlp")
    pruned, _ = prune(model, inputs, ratio=0.3, round_to=16)
    assert (pruned.net[0].out_features, pruned.net[2].out_features) == (96, 48)


def test_global_scope_removes_the_ratio_of_all_channels() -> None:
    model, inputs = build("concat")
    _, record = prune(model, inputs, ratio=0.5, scope="global")
    prunable = record.summary["channels_before"] - 10  # the head's 10 outputs are kept
    assert record.summary["channels_before"] - record.summary["channels_after"] == prunable // 2


def test_bn_scale_importance_removes_the_smallest_gammas() -> None:
    model, inputs = build("plain_cnn")
    with torch.no_grad():
        model.features[8].weight.copy_(torch.arange(32.0) + 1)  # BN after features.7: channel i has gamma i+1
    pruned, _ = prune(model, inputs, ratio=0.5, importance="bn_scale")
    torch.testing.assert_close(pruned.features[8].weight, torch.arange(16.0, 32.0) + 1)


def test_grouped_conv_loses_channels_evenly_per_group() -> None:
    model, inputs = build("plain_cnn")
    with torch.no_grad():
        model.features[0].weight[:8] *= 100  # the first input group is far more important
    pruned, _ = prune(model, inputs, ratio=0.5)
    conv = pruned.features[3]
    assert (conv.groups, conv.in_channels, conv.weight.shape[1]) == (2, 8, 4)


class Roll(nn.Module):
    """Rolls channels: no pruner can follow that, so the conv feeding it must stay whole."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(torch.roll(self.a(x), 1, dims=1)).mean((2, 3)))


class Slice(Roll):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.fc(self.b(torch.cat([y[:, 8:], y[:, :8]], 1)).mean((2, 3)))


class Shuffle(Roll):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        return self.fc(self.b(y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)).mean((2, 3)))


class HardCodedView(Roll):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.a(x)).view(-1, 16, 64).mean(2))


class DataDependent(Roll):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.sum() > 0:
            y = -y
        return self.fc(self.b(y).mean((2, 3)))


@pytest.mark.parametrize(
    ("cls", "layer", "reason"),
    [
        (Roll, "a", "it goes through 'roll' (roll), which the pruner cannot follow"),
        (Slice, "a", "'getitem' indexes or slices its channels; 'getitem_1' indexes or slices its channels"),
        (Shuffle, "a", "'view' reshapes across its channel dimension"),
        (HardCodedView, "b", "'view' reshapes with the hard-coded channel size 16"),
    ],
)
def test_unfollowable_channels_are_kept_and_reported(cls: type, layer: str, reason: str) -> None:
    torch.manual_seed(0)
    model, inputs = cls().eval(), (torch.randn(2, 3, 8, 8),)
    kill_odd_channels(model)
    pruned, record = prune(model, inputs, ratio=0.5)
    assert {"layer": layer, "reason": reason} in record.skipped
    assert getattr(pruned, layer).out_channels == 16
    assert record.params_after < record.params_before
    torch.testing.assert_close(pruned(*inputs), model(*inputs), rtol=0, atol=1e-5)


def test_untraceable_model_is_left_whole_with_the_reason() -> None:
    model, inputs = DataDependent().eval(), (torch.randn(1, 3, 8, 8),)
    pruned, record = prune(model, inputs, ratio=0.5)
    assert record.params_after == record.params_before
    assert record.skipped[0]["layer"] == "<model>"
    assert record.skipped[0]["reason"].startswith("torch.fx could not trace the model: TraceError")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratio": 1.0}, "bad prune ratio 1.0: expected a fraction in [0, 1), e.g. 0.5"),
        ({"ratio": -0.1}, "bad prune ratio -0.1: expected a fraction in [0, 1), e.g. 0.5"),
        ({"round_to": 0}, "bad prune round_to 0: expected an integer >= 1"),
        (
            {"layer_ratios": ["fc:0.5"]},
            "bad prune layer_ratios item 'fc:0.5': expected PATTERN=VALUE with VALUE in [0, 1), e.g. 'layer4.*=0.7'",
        ),
    ],
)
def test_bad_settings_raise_one_clear_line(settings: dict, message: str) -> None:
    with pytest.raises(PlanError) as info:
        Prune.Config.from_dict(settings, "prune")
    assert str(info.value) == message


def test_sample_architectures_prune_exactly() -> None:
    from samples.architectures import mobilenet_v2, resnet18

    for model in (resnet18(num_classes=10, width=16), mobilenet_v2(num_classes=10, width_mult=0.5)):
        model = kill_odd_channels(randomize_bn(model.eval()))
        inputs = (torch.randn(1, 3, 32, 32),)
        pruned, record = prune(model, inputs, ratio=0.5)
        assert len(record.skipped) == 1
        assert record.skipped[0]["reason"].startswith("its channels reach the model output")
        assert record.macs_after < 0.35 * record.macs_before
        torch.testing.assert_close(pruned(*inputs), model(*inputs), rtol=0, atol=1e-5)


class LinearGate(nn.Module):
    """A squeeze-excitation gate written with Linear layers, view and expand_as (the classic SE form)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.f1, self.f2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.b, self.fc = nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.a(x)))
        n, c, _, _ = x.shape
        gate = torch.sigmoid(self.f2(torch.relu(self.f1(x.mean((2, 3)))))).view(n, c, 1, 1)
        return self.fc(self.b(x * gate.expand_as(x)).mean((2, 3)))


def test_linear_squeeze_excitation_gate_is_tied_to_its_input() -> None:
    torch.manual_seed(0)
    model, inputs = kill_odd_channels(randomize_bn(LinearGate())), (torch.randn(2, 3, 8, 8),)
    pruned, record = prune(model, inputs, ratio=0.5)
    assert (pruned.a.out_channels, pruned.f1.in_features, pruned.f2.out_features, pruned.b.in_channels) == (8, 8, 8, 8)
    assert len(record.skipped) == 1
    torch.testing.assert_close(pruned(*inputs), model(*inputs), rtol=0, atol=1e-5)
