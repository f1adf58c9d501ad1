"""BatchNorm folding is exact and says which BatchNorms it could not fold."""

import torch
from torch import nn

from exporter.passes import PASSES
from tests.passes.tiny_models import build, make_context

FoldBN = PASSES.get("fold_bn")


def fold(model: nn.Module, inputs: tuple[torch.Tensor, ...]):
    return FoldBN(FoldBN.Config()).run(model, make_context(model, inputs))


def test_folding_matches_the_original(family: str) -> None:
    model, inputs = build(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, record = fold(model, inputs)
    torch.testing.assert_close(folded(*inputs), model(*inputs), rtol=0, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert record.summary["folded"] == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert record.skipped == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class PreActivation(nn.Module):
    """A BatchNorm on the input, and a conv whose output feeds both a BatchNorm and a shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.bn0, self.conv, self.bn1 = nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.bn0(x))
        return self.bn1(y) + y


def test_unfoldable_batchnorms_are_reported() -> None:
    model, inputs = PreActivation().eval(), (torch.randn(1, 3, 8, 8),)
    folded, record = fold(model, inputs)
    assert record.skipped == [
        {"layer": "bn0", "reason": "its input is not the output of a Conv/Linear layer"},
        {"layer": "bn1", "reason": "the output of 'conv' is also used elsewhere"},
    ]
    torch.testing.assert_close(folded(*inputs), model(*inputs))


def test_linear_then_batchnorm1d_folds() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4)).eval()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2)
    inputs = (torch.randn(3, 6),)
    folded, record = fold(model, inputs)
    assert record.changes == [{"layer": "1", "folded_into": "0"}]
    torch.testing.assert_close(folded(*inputs), model(*inputs), rtol=0, atol=1e-5)
