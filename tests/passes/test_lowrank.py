"""Low-rank decomposition: exact at full energy, smaller and cheaper below it, never worse."""

import pytest
import torch
from torch import nn

from exporter.errors import CompressionError, PlanError
from exporter.passes import PASSES
from tests.passes.tiny_models import build, make_context

LowRank = PASSES.get("lowrank")


def lowrank(model: nn.Module, inputs: tuple[torch.Tensor, ...], **settings):
    return LowRank(LowRank.Config.from_dict(settings, "lowrank")).run(model, make_context(model, inputs))


def rank_deficient_mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The MLP with its 32->128 and 128->64 weights replaced by rank-4 and rank-8 products."""
    model, inputs = build("mlp")
    with torch.no_grad():
        model.net[0].weight.copy_(torch.randn(128, 4) @ torch.randn(4, 32))
        model.net[2].weight.copy_(torch.randn(64, 8) @ torch.randn(8, 128) / 10)
    return model, inputs


@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_full_energy_reproduces_the_layers(method: str) -> None:
    model, inputs = rank_deficient_mlp()
    new, record = lowrank(model, inputs, energy=1.0, method=method)
    assert [(row["layer"], row["rank"]) for row in record.changes] == [("net.0", 4), ("net.2", 8)]
    assert isinstance(new.net[0], nn.Sequential) and new.net[0][0].out_features == 4
    torch.testing.assert_close(new(*inputs), model(*inputs), rtol=1e-4, atol=1e-5)
    reason = "rank 10 would not lower both parameters (650 -> 750) and MACs (640 -> 740)"
    assert record.skipped == [{"layer": "net.4", "reason": reason}]


@pytest.mark.parametrize("method", ["svd", "tucker2"])
def test_conv_at_full_rank_is_exact(method: str) -> None:
    from exporter.passes.lowrank import _svd, _tucker2

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    x = torch.randn(1, 6, 9, 9)
    config = LowRank.Config(energy=1.0, method=method)
    chain, _ = (_svd if method == "svd" else _tucker2)(conv, config)
    torch.testing.assert_close(chain(x), conv(x), rtol=1e-4, atol=1e-5)


def test_lower_energy_lowers_parameters_and_macs(family: str) -> None:
    check_lower_energy_is_smaller(family, "svd")


def test_tucker2_lower_energy_lowers_parameters_and_macs() -> None:
    check_lower_energy_is_smaller("residual", "tucker2")


def check_lower_energy_is_smaller(family: str, method: str) -> None:
    model, inputs = build(family)
    _, high = lowrank(model, inputs, energy=0.9, method=method)
    _, low = lowrank(model, inputs, energy=0.5, method=method)
    assert low.params_after < high.params_after <= high.params_before
    assert low.macs_after < low.macs_before
    for row in low.changes:
        assert row["params"][1] < row["params"][0] and row["macs"][1] < row["macs"][0]


def test_ratio_bounds_each_layer() -> None:
    model, inputs = build("plain_cnn")
    new, record = lowrank(model, inputs, ratio=0.25)
    assert record.changes and all(row["params"][1] <= 0.25 * row["params"][0] + 64 for row in record.changes)
    assert record.notes == ["ratio is set: ranks come from it and energy is ignored"]
    assert new(*inputs).shape == (2, 10)


def test_depthwise_and_ignored_layers_stay() -> None:
    model, inputs = build("depthwise_se")
    new, record = lowrank(model, inputs, energy=0.5, ignore=["classifier"])
    reasons = {row["layer"]: row["reason"] for row in record.skipped}
    assert reasons["sep.0"] == "grouped or depthwise conv: nothing to factorise"
    assert reasons["classifier"] == "matches the lowrank ignore pattern"
    assert isinstance(new.classifier, nn.Linear)


def test_settings_are_validated() -> None:
    with pytest.raises(PlanError, match=r"^bad lowrank energy 0.0: expected a fraction in \(0, 1\], e.g. 0.9$"):
        LowRank.Config.from_dict({"energy": 0}, "lowrank")
    with pytest.raises(PlanError, match=r"^bad lowrank ratio 1.0: expected a fraction in \(0, 1\), e.g. 0.5$"):
        LowRank.Config.from_dict({"ratio": 1}, "lowrank")
    model, inputs = build("mlp")
    with pytest.raises(CompressionError, match="lowrank ignore pattern 'fc' matches no layer"):
        lowrank(model, inputs, ignore=["fc"])
