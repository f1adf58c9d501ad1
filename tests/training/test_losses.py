"""Distillation losses: per-sample values, the soft/hard mix, the auto rule, and the L1 scale penalty."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exporter.errors import CompressionError
from exporter.training.losses import DistillationLoss, l1_scale_penalty, output_tensors, resolve_kinds


def logits(seed: int, shape=(6, 10)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_soft_loss_is_t_squared_kl_per_sample() -> None:
    student, teacher = logits(0), logits(1)
    loss = DistillationLoss(("kl",), temperature=3.0, alpha=1.0)([student], [teacher], None)
    expected = F.kl_div(
        F.log_softmax(student / 3, 1), F.log_softmax(teacher / 3, 1), log_target=True, reduction="none"
    ).sum(1) * 9
    assert loss.shape == (6,)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_alpha_mixes_soft_and_hard_targets_only_with_labels() -> None:
    student, teacher, labels = logits(0), logits(1), torch.tensor([0, 1, 2, 3, 4, 5])
    soft = DistillationLoss(("kl",), 4.0, 1.0)([student], [teacher], labels)
    mixed = DistillationLoss(("kl",), 4.0, 0.25)([student], [teacher], labels)
    hard = F.cross_entropy(student, labels, reduction="none")
    torch.testing.assert_close(mixed, 0.25 * soft + 0.75 * hard)
    # Without labels the mix falls back to soft targets alone.
    torch.testing.assert_close(DistillationLoss(("kl",), 4.0, 0.25)([student], [teacher], None), soft)


def test_identical_outputs_cost_nothing() -> None:
    out = logits(2)
    for kind in ("kl", "mse", "cosine"):
        loss = DistillationLoss((kind,), 4.0, 1.0)([out], [out.clone()], None)
        assert float(loss.abs().max()) < 1e-5, kind


def test_mse_and_cosine_losses() -> None:
    teacher = torch.ones(2, 4)
    student = torch.tensor([[1.0, 1.0, 1.0, 3.0], [-1.0, -1.0, -1.0, -1.0]])
    mse = DistillationLoss(("mse",))([student], [teacher], None)
    cosine = DistillationLoss(("cosine",))([student], [teacher], None)
    torch.testing.assert_close(mse, torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(cosine, torch.tensor([1 - 6 / (2 * 12**0.5), 2.0]))


def test_auto_picks_kl_for_logits_and_mse_otherwise() -> None:
    outputs = [torch.zeros(2, 10), torch.zeros(2, 1), torch.zeros(2, 8, 4, 4)]
    assert resolve_kinds("auto", outputs) == ("kl", "mse", "mse")
    assert resolve_kinds("cosine", outputs) == ("cosine", "cosine", "cosine")
    with pytest.raises(CompressionError, match=r"loss 'kl' needs class logits .* has shape \(2, 8, 4, 4\)"):
        resolve_kinds("kl", outputs[2:])


def test_outputs_of_any_structure_are_flattened_in_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert [float(t) for t in output_tensors({"x": a, "y": (b, [c])})] == [0.0, 1.0, 2.0]


def test_mismatched_outputs_raise() -> None:
    with pytest.raises(CompressionError, match=r"student output 0 has shape \(6, 9\) but the teacher's has \(6, 10\)"):
        DistillationLoss(("kl",))([logits(0, (6, 9))], [logits(1)], None)


def test_l1_penalty_sums_absolute_norm_scales() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.GroupNorm(1, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        model[2].weight.copy_(torch.tensor([-1.0, 1.0, 0.0]))
    assert float(l1_scale_penalty(model).detach()) == pytest.approx(5.5)
    assert float(l1_scale_penalty(nn.Linear(2, 2))) == 0.0
