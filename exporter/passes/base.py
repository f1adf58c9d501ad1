"""The contract every compression pass follows.

A pass is a small class in its own module: a `name`, a frozen `Config` dataclass of typed,
documented settings with `validate()`, and `apply(model, ctx) -> PassResult`. `CompressionPass.run`
wraps `apply`: it hands the pass a private deep copy (the caller's model, which is the reference for
validation and the teacher for distillation, is never modified), counts parameters and
multiply-accumulates before and after, and times it. The report is built only from the
`PassRecord`s this produces.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from exporter.errors import PlanError
from exporter.registry import Registry

if typing.TYPE_CHECKING:
    import torch
    from torch import nn

    from calibration.samples import SampleSet
    from exporter.inputs import InputSpec
    from targets.profile import QuantScheme


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    """Declare a pass setting: a dataclass field with a default and the help text the CLI shows."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a default_factory for mutable defaults")
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class PassConfig:
    """Base of every pass's settings: frozen, typed, validated once when the plan is built."""

    def validate(self) -> None:
        """Raise `PlanError` with one clear line if a setting is out of range. Override per pass."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the resolved plan (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], pass_name: str) -> "PassConfig":
        """Build and validate a config from plan-file data; unknown keys and bad types raise `PlanError`."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise PlanError(
                f"unknown setting {unknown[0]!r} for pass {pass_name!r}: valid settings are {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        values = {k: coerce_setting(v, hints[k], f"{pass_name}.{k}") for k, v in data.items()}
        config = cls(**values)
        config.validate()
        return config


def coerce_setting(value: Any, annotation: Any, where: str) -> Any:
    """Convert `value` to the field's annotated type (`exporter.settings.coerce`: booleans only from CLI text)."""
    from exporter.settings import coerce

    return coerce(value, annotation, where)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class PassContext:
    """What a pass may read besides the model it transforms.

    `teacher` is the original model (never modify it). `calib` and `val` are sample sets already
    bound to the model's input names (see `calibration.binding`); `val` is held out for measuring.
    `work_dir` is scratch space removed when the run ends. `checkpoint_dir` survives a failed or
    interrupted run (beside the output folder) so that training passes can `--resume`; it is
    removed after a successful run. `quantization` is the target's scheme (None outside the pipeline),
    for passes that prepare for it.
    """

    example_inputs: tuple["torch.Tensor", ...]
    input_specs: list["InputSpec"]
    teacher: "nn.Module"
    calib: "SampleSet | None" = None
    val: "SampleSet | None" = None
    seed: int = 0
    work_dir: Path | None = None
    checkpoint_dir: Path | None = None
    quantization: "QuantScheme | None" = None
    batch_size: int = 32


@dataclass
class PassResult:
    """What `apply` returns: the transformed model and plain-data notes on what changed.

    `changes`: one dict per layer changed (e.g. {"layer": "features.0", "out_channels": [32, 16]}).
    `skipped`: one dict per layer left alone, with a `reason`.
    `summary`: pass-specific figures (e.g. sparsity reached, zip size), copied to the record.
    """

    model: "nn.Module"
    changes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassRecord:
    """Plain-data record of one pass run; the report has one row per record.

    `metrics` (agreement, cosine, max_abs_error of the compressed PyTorch model against the
    original on validation data) is filled in by the pipeline after the pass.
    """

    name: str
    description: str
    config: dict[str, Any]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float
    changes: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return dataclasses.asdict(self)


class CompressionPass(ABC):
    """Base class of a compression pass. Subclasses set `name`, `Config`, `order` and implement `apply`.

    `order` decides where the pass runs when passes come from CLI flags (lower first); a plan
    file lists passes in the order it wants. `shorthand` names the config field that the CLI flag
    `--<name>` sets (e.g. `--prune 0.5` sets `ratio`); `None` makes `--<name>` a plain switch.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]
    order: ClassVar[int] = 50
    shorthand: ClassVar[str | None] = None
    summary_line: ClassVar[str] = ""
    """One sentence for the report; may name `summary` keys in braces, e.g. "{dead_channels} channels died"."""

    def __init__(self, config: PassConfig) -> None:
        self.config = config

    @abstractmethod
    def apply(self, model: "nn.Module", ctx: PassContext) -> PassResult:
        """Transform `model` (a private copy the pass may modify in place) and return the result."""

    def run(self, model: "nn.Module", ctx: PassContext) -> tuple["nn.Module", PassRecord]:
        """Apply the pass to a deep copy of `model` and return (new model, record); `model` is untouched."""
        from exporter.modelstats import count_macs, count_params, set_eval

        work = set_eval(copy.deepcopy(model))
        params_before, macs_before = count_params(model), count_macs(model, ctx.example_inputs)
        start = time.perf_counter()
        result = self.apply(work, ctx)
        seconds = time.perf_counter() - start
        new_model = set_eval(result.model)
        record = PassRecord(
            name=self.name,
            description=_fill(self.summary_line, result.summary),
            config=self.config.to_dict(),
            params_before=params_before,
            params_after=count_params(new_model),
            macs_before=macs_before,
            macs_after=count_macs(new_model, ctx.example_inputs),
            seconds=round(seconds, 3),
            changes=result.changes,
            skipped=result.skipped,
            notes=result.notes,
            summary=result.summary,
        )
        return new_model, record


def _fill(template: str, values: dict[str, Any]) -> str:
    """`template` with `{key}` replaced from `values`; unknown keys are left as written."""

    class Keep(dict):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    def show(v: Any) -> Any:
        return f"{v:.4g}" if isinstance(v, float) else v

    return template.format_map(Keep({k: show(v) for k, v in values.items()}))


PASSES: Registry[type[CompressionPass]] = Registry("compression pass")


def register_pass(cls: type[CompressionPass]) -> type[CompressionPass]:
    """Class decorator: add a pass to `PASSES` under its `name`."""
    PASSES.add(cls.name, cls)
    return cls
