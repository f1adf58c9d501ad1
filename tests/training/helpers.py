"""Helpers shared by the training tests (the fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from exporter.inputs import InputSpec
from exporter.passes import PASSES, PassContext

DIGITS = Path(__file__).resolve().parents[2] / "samples" / "digits"
SPECS = [InputSpec("input", (1, 1, 16, 16))]


def make_context(teacher, calib=None, val=None, work_dir=None, seed=0) -> PassContext:
    """A pass context for the digits model."""
    return PassContext(
        example_inputs=(torch.zeros(1, 1, 16, 16),),
        input_specs=SPECS,
        teacher=teacher,
        calib=calib,
        val=val,
        seed=seed,
        work_dir=work_dir,
        checkpoint_dir=work_dir,
    )


def run_pass(name: str, model, ctx: PassContext, **settings):
    """Run a registered pass through its public contract (`Config.from_dict` + `run`); returns (model, record)."""
    cls = PASSES.get(name)
    return cls(cls.Config.from_dict(settings, name)).run(model, ctx)


def state(model) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys (float tensors only)."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
