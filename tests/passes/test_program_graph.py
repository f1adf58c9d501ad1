"""`exporter.program_graph`: a torch.export program lifted to a graph of named layers, as the passes see it."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import fx, nn

from exporter.passes import PASSES, PassContext
from exporter.program_graph import CaptureFailure, capture, lift


class Block(nn.Module):
    """Conv-BN-ReLU6, depthwise residual, shape-dependent branch (which torch.fx cannot trace), hard-coded flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.norm = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 4 * 4, 24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        if y.shape[-1] > 4:  # Python control flow on a shape: fx rejects it, torch.export specialises it
            y = y + self.dw(y)
        y = torch.relu(self.norm(self.pw(y)))
        y = nn.functional.adaptive_avg_pool2d(y, 4)
        return self.head(torch.relu(self.fc(y.view(-1, 512))))


class Shared(nn.Module):
    """One conv called twice, and a Linear whose weight also feeds another operation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.embed = nn.Embedding(12, 8)
        self.out = nn.Linear(8, 12, bias=False)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(torch.relu(self.conv(x)))
        tokens = self.norm(self.embed(ids))
        logits = self.out(tokens) + tokens @ self.out.weight.T  # the weight read twice, two ways
        return y, logits


def _randomise(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_lifted_graph_has_the_original_layer_names_and_the_same_outputs_at_any_batch():
    model = _randomise(Block())
    with pytest.raises(Exception, match="symbolically traced variables cannot be used as inputs to control flow"):
        fx.symbolic_trace(model)
    lifted = lift(capture(model, (torch.randn(2, 3, 8, 8),)))
    layers = {name: type(m).__name__ for name, m in lifted.named_modules() if name and type(m) is not nn.Module}
    assert layers == {
        "stem.0": "Conv2d", "stem.1": "BatchNorm2d", "dw": "Conv2d", "pw": "Conv2d", "norm": "BatchNorm2d",
        "fc": "Linear", "head": "Linear",
    }  # fmt: skip
    assert lifted.get_submodule("dw").groups == 16
    for batch in (1, 5):
        x = torch.randn(batch, 3, 8, 8)
        torch.testing.assert_close(lifted(x), model(x), atol=1e-5, rtol=1e-5)
    assert not lifted.training


def test_lifted_graph_copies_pickles_trains_and_captures_again():
    model = _randomise(Block())
    x = torch.randn(3, 3, 8, 8)
    lifted = lift(capture(model, (x[:2],)))
    expected = model(x)
    torch.testing.assert_close(copy.deepcopy(lifted)(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pickle.loads(pickle.dumps(lifted))(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(capture(lifted, (x[:2],)).module()(x), expected, atol=1e-5, rtol=1e-5)
    lifted.train()
    lifted(x).square().mean().backward()
    assert lifted.get_submodule("stem.0").weight.grad is not None
    assert lifted.get_submodule("stem.1").num_batches_tracked.item() == 1  # batch statistics really updated


def test_decomposed_program_is_lifted_too():
    """A program saved after run_decompositions() has aten.convolution and the no-training batch norm."""
    model = _randomise(Block())
    program = capture(model, (torch.randn(2, 3, 8, 8),)).run_decompositions()
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.convolution.default" in targets
    lifted = lift(program)
    kinds = {type(m).__name__ for _, m in lifted.named_modules()}
    assert {"Conv2d", "BatchNorm2d"} <= kinds
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(lifted(x), model(x), atol=1e-5, rtol=1e-5)


def test_shared_layer_becomes_one_module_and_a_weight_read_twice_stays_an_aten_call():
    model = Shared().eval()
    inputs = (torch.randn(2, 4, 6, 6), torch.randint(0, 12, (2, 5)))
    lifted = lift(capture(model, inputs))
    calls = [n.target for n in lifted.graph.nodes if n.op == "call_module"]
    assert calls.count("conv") == 2
    assert {"embed", "norm"} <= set(calls)
    assert "out" not in calls  # its weight also feeds a matmul: lifting it would hide that use
    assert any(n.op == "get_attr" and n.target == "out.weight" for n in lifted.graph.nodes)
    for got, want in zip(lifted(*inputs), model(*inputs)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_capture_failure_is_one_line():
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on a value
                return x * 2
            return x

    with pytest.raises(CaptureFailure, match=r"^torch.export could not capture the model: \w+") as caught:
        capture(Branchy(), (torch.randn(2, 3),))
    assert "\n" not in str(caught.value)


def test_prune_on_the_lifted_graph_rewrites_a_hard_coded_flatten_and_keeps_names():
    model = _randomise(Block())
    x = torch.randn(2, 3, 8, 8)
    lifted = lift(capture(model, (x,)))
    ctx = PassContext(example_inputs=(x,), input_specs=[], teacher=model)
    pruned, record = PASSES.get("prune")(PASSES.get("prune").Config(ratio=0.5)).run(lifted, ctx)
    changed = {row["layer"]: row for row in record.changes}
    assert changed["pw"]["out_channels"] == [32, 16]
    assert changed["fc"]["in_features"] == [512, 256]  # through the view(-1, 512), rewritten to 256
    assert changed["dw"]["groups"] == [16, 8]
    assert [row["layer"] for row in record.skipped] == ["head"]
    assert record.macs_after < record.macs_before / 2
    views = [n.args[1] for n in pruned.graph.nodes if n.op == "call_function" and "view" in str(n.target)]
    assert views == [[-1, 256]]
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 10)
    # The lifted input is untouched: the pass worked on its own copy.
    assert lifted.get_submodule("pw").out_channels == 32
