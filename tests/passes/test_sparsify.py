"""Magnitude sparsity: exact zero counts, honest record."""

import pytest
import torch
from torch import nn

from exporter.errors import PlanError
from exporter.passes import PASSES
from tests.passes.tiny_models import build, make_context

Sparsify = PASSES.get("sparsify")
WEIGHTED = (nn.Conv2d, nn.Linear)


def sparsify(model: nn.Module, inputs: tuple[torch.Tensor, ...], **settings):
    return Sparsify(Sparsify.Config.from_dict(settings, "sparsify")).run(model, make_context(model, inputs))


@pytest.mark.parametrize("scope", ["global", "local"])
def test_requested_sparsity_is_reached_exactly(scope: str) -> None:
    model, inputs = build("residual")
    new, record = sparsify(model, inputs, sparsity=0.6, scope=scope)
    layers = [m for m in new.modules() if isinstance(m, WEIGHTED)]
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    if scope == "global":
        assert zeros == round(0.6 * total)
    else:
        assert all(int((m.weight == 0).sum()) == round(0.6 * m.weight.numel()) for m in layers)
    assert record.summary["zero_fraction_of_pruned_weights"] == round(zeros / total, 6)
    assert record.params_after == record.params_before and record.macs_after == record.macs_before
    assert record.summary["zipped_bytes_after"] < 0.7 * record.summary["zipped_bytes_before"]
    assert "unchanged" in record.notes[0]
    assert not any(bool((m.weight == 0).any()) for m in model.modules() if isinstance(m, WEIGHTED))


def test_global_scope_removes_the_smallest_weights_first() -> None:
    model, inputs = build("mlp")
    with torch.no_grad():
        model.net[4].weight.mul_(1000)
    new, _ = sparsify(model, inputs, sparsity=0.5)
    assert not bool((new.net[4].weight == 0).any())


def test_layer_sparsities_and_ignore() -> None:
    model, inputs = build("mlp")
    new, record = sparsify(model, inputs, sparsity=0.5, layer_sparsities=["net.0=0.9"], ignore=["net.4"])
    assert int((new.net[0].weight == 0).sum()) == round(0.9 * 128 * 32)
    assert torch.equal(new.net[4].weight, model.net[4].weight)
    assert record.skipped == [{"layer": "net.4", "reason": "matches the sparsify ignore pattern"}]


def test_sparsity_out_of_range_is_rejected() -> None:
    with pytest.raises(PlanError, match=r"^bad sparsify sparsity 1.0: expected a fraction in \[0, 1\), e.g. 0.5$"):
        Sparsify.Config.from_dict({"sparsity": 1.0}, "sparsify")
