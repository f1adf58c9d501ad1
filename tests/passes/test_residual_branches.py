"""Removing whole residual branches under a speed goal (`prune` setting `blocks`).

A branch `f` of `x + f(x)` that is replaced by its mean must leave the skip path and every shape
intact; the speed goal must remove a branch only where that costs less output error per unit of
cost saved than thinning channels. Checked with the MACs cost model (no timing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from exporter.passes import PASSES
from exporter.passes.residual_branches import branch_means, find_branches, remove_branches
from exporter.program_graph import capture, lift
from tests.passes.test_prune_speedup import MobileNetV2ish
from tests.passes.tiny_models import make_context, randomize_bn


class ResidualStack(nn.Module):
    """Stem, three residual blocks `x + conv(relu(conv(x)))`, pooled Linear head.

    Block `quiet` (an index) ends in a conv with zero weights, so its branch outputs only its bias:
    replacing it by its mean changes nothing.
    """

    def __init__(self, quiet: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1))
            for _ in range(3)
        )
        if quiet is not None:
            with torch.no_grad():
                self.blocks[quiet][3].weight.zero_()
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean((2, 3)))


def lifted(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    return lift(capture(randomize_bn(module), inputs))


def images(n: int = 4, size: int = 12) -> tuple[torch.Tensor, ...]:
    return (torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3)),)


def prune(model: nn.Module, inputs: tuple[torch.Tensor, ...], **settings):
    cls = PASSES.get("prune")
    return cls(cls.Config.from_dict(settings, "prune")).run(model, make_context(model, inputs))


def test_residual_branches_are_found_with_their_layers_and_nothing_else() -> None:
    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, 32, 32),)
    branches = find_branches(lifted(MobileNetV2ish(), inputs))
    # blocks 2 and 4 add their input; blocks 0, 1, 3 change shape and have no skip
    assert [b.label for b in branches] == ["blocks.2.block", "blocks.4.block"]
    assert branches[0].layers == ("blocks.2.block.0", "blocks.2.block.3", "blocks.2.block.6")


class SharedInside(nn.Module):
    """`x + f(x)` where the branch's hidden activation is also read outside it: not removable."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.side = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.a(x))
        return x + self.b(hidden), self.side(hidden)


def test_a_branch_whose_inside_is_read_elsewhere_is_not_offered() -> None:
    inputs = (torch.randn(2, 4, 6, 6),)
    assert find_branches(lift(capture(SharedInside().eval(), inputs))) == []


def test_a_branch_with_a_constant_output_is_removed_exactly_and_runs_on_onnxruntime(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inputs = images()
    model = lifted(ResidualStack(quiet=1), inputs)
    with torch.no_grad():
        expected = model(*inputs)
    (quiet,) = [b for b in find_branches(model) if b.label == "blocks.1"]
    remove_branches(model, [quiet], branch_means(model, [quiet], [inputs]))
    names = {name for name, _ in model.named_modules()}
    assert not any(name.startswith("blocks.1.") for name in names)  # the branch's layers are gone
    assert "blocks.0.0" in names and "blocks.2.3" in names
    # the skip is block 0's sum, whose branch ends in a conv: the mean went into that conv's bias, no addition left
    assert len(adds(model)) == 2 and not [n for n in model.graph.nodes if n.op == "get_attr"]
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), expected, rtol=1e-5, atol=1e-5)
        other = torch.randn(7, 3, 12, 12)
        assert model(other).shape == (7, 5)
    path = tmp_path / "removed.onnx"
    torch.onnx.export(
        model, inputs, str(path), dynamo=True, external_data=False, input_names=["x"], output_names=["y"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": other.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(other).numpy(), rtol=1e-4, atol=1e-5)


def adds(model: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in model.graph.nodes if n.op == "call_function" and "add" in str(n.target)]


def test_a_mean_that_cannot_go_into_a_bias_stays_a_constant_addition() -> None:
    """Block 0's skip is a ReLU output: no bias can take the mean exactly, so `x + mean` stays."""
    torch.manual_seed(0)
    inputs = images()
    model = lifted(ResidualStack(quiet=0), inputs)
    with torch.no_grad():
        expected = model(*inputs)
    (quiet,) = [b for b in find_branches(model) if b.label == "blocks.0"]
    remove_branches(model, [quiet], branch_means(model, [quiet], [inputs]))
    assert len(adds(model)) == 3 and [n.target for n in model.graph.nodes if n.op == "get_attr"] == [
        f"{quiet.add}_branch_mean"
    ]
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), expected, rtol=1e-5, atol=1e-5)


def test_speed_goal_removes_the_branch_that_costs_least_output_error() -> None:
    """A goal one branch can meet by itself: the quiet branch goes (no error), not channels elsewhere."""
    torch.manual_seed(0)
    inputs = images()
    model = lifted(ResidualStack(quiet=2), inputs)
    with torch.no_grad():
        expected = model(*inputs)
    pruned, record = prune(model, inputs, speedup=1.3, cost="macs", repair="none")
    summary = record.summary
    assert summary["goal_reached"] is True and summary["branches_removed"] == 1
    assert [row["branch"] for row in summary["removed_branches"]] == ["blocks.2"]
    assert summary["removed_branches"][0]["output_error"] == pytest.approx(0.0, abs=1e-9)
    assert record.macs_after <= record.macs_before / 1.3
    assert any("blocks.2: residual branch removed" in note for note in record.notes)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), expected, rtol=1e-4, atol=1e-4)  # nothing else had to change


def test_blocks_keep_meets_the_same_goal_by_thinning_channels_only() -> None:
    torch.manual_seed(0)
    inputs = images()
    model = lifted(ResidualStack(quiet=2), inputs)
    pruned, record = prune(model, inputs, speedup=1.3, cost="macs", blocks="keep")
    assert record.summary["branches_removed"] == 0 and record.summary["goal_reached"] is True
    assert {name for name, _ in pruned.named_modules()} >= {"blocks.2.0", "blocks.2.3"}


def test_an_ignored_layer_keeps_its_branch() -> None:
    torch.manual_seed(0)
    inputs = images()
    model = lifted(ResidualStack(quiet=2), inputs)
    _, record = prune(model, inputs, speedup=1.3, cost="macs", ignore=("blocks.2.3",))
    assert "blocks.2" not in [row["branch"] for row in record.summary["removed_branches"]]


def test_a_module_that_is_not_a_graph_module_is_only_thinned() -> None:
    """Without an editable graph (a plain module given to the pass directly) no branch is offered."""
    torch.manual_seed(0)
    inputs = images()
    _, record = prune(randomize_bn(ResidualStack(quiet=2)), inputs, speedup=1.3, cost="macs")
    assert record.summary["branches_removed"] == 0


class TokenMixer(nn.Module):
    """Two pre-norm MLP residual blocks over (batch, tokens, features), then a mean over tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)) for _ in range(2)
        )
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean(1))


def test_a_linear_branch_is_replaced_by_its_per_feature_mean_for_any_token_count() -> None:
    torch.manual_seed(0)
    tokens = (torch.randn(4, 6, 16),)
    module = TokenMixer().eval()
    model = lift(capture(module, tokens))
    branches = find_branches(model)
    assert [b.label for b in branches] == ["blocks.0", "blocks.1"]
    means = branch_means(model, branches[:1], [tokens])
    with torch.no_grad():
        expected = module.blocks[0](tokens[0]).mean((0, 1))
    assert means[branches[0].add].shape == (1, 1, 16)  # features are the last axis of a Linear's output
    torch.testing.assert_close(means[branches[0].add].flatten(), expected, rtol=1e-5, atol=1e-6)
    remove_branches(model, branches[:1], means)
    with torch.no_grad():
        longer = torch.randn(3, 9, 16)
        x = longer + expected
        x = x + module.blocks[1](x)
        torch.testing.assert_close(model(longer), module.head(x.mean(1)), rtol=1e-5, atol=1e-5)


def test_consecutive_removed_branches_fold_into_one_bias_exactly() -> None:
    """Blocks 1 and 2 both quiet: block 2's skip is block 1's sum, itself folded away first."""
    torch.manual_seed(0)
    inputs = images()
    module = ResidualStack(quiet=1)
    with torch.no_grad():
        module.blocks[2][3].weight.zero_()
    model = lifted(module, inputs)
    with torch.no_grad():
        expected = model(*inputs)
    quiet = [b for b in find_branches(model) if b.label in ("blocks.1", "blocks.2")]
    remove_branches(model, quiet, branch_means(model, quiet, [inputs]))
    assert len(adds(model)) == 1 and not [n for n in model.graph.nodes if n.op == "get_attr"]
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), expected, rtol=1e-5, atol=1e-5)
