"""What the recovery passes call: train a student against the teacher and describe the run.

Data rules: the training data is `data_path` (opened with `calibration.open_samples` and default
`DataOptions`, bound to the model's inputs) or else the context's calibration set; with neither,
`CompressionError`. The held-out set is the context's validation set; when there is none, 20% of
the training data is held out instead (seeded) and a note says so. Checkpoints go to
`checkpoint_dir`, else `<ctx.checkpoint_dir>/<pass name>`, else a temporary folder (which cannot be resumed).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from exporter.errors import CompressionError
from exporter.training.settings import Rendezvous, TrainSettings

if TYPE_CHECKING:
    from torch import nn

    from calibration.samples import SampleSet
    from exporter.passes.base import PassContext
    from exporter.training.features import FeatureLayer
    from exporter.training.loop import TrainOutcome

FIGURES = ("agreement", "accuracy", "cosine", "loss")
"""Held-out figures copied into the record's `before` and `after`."""


@dataclass
class RecoveryRun:
    """The trained student, the loop's outcome, the record's summary and the notes for the user.

    `measure(model)` gives the held-out figures of any model against the teacher on the same data
    and loss as the run (for a pass that changes the student after training, like `slim`).
    """

    student: "nn.Module"
    outcome: "TrainOutcome"
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    measure: Callable[["nn.Module"], dict[str, Any]] | None = None


def run_recovery(
    model: "nn.Module",
    ctx: "PassContext",
    settings: TrainSettings,
    *,
    pass_name: str,
    data_path: str | None = None,
    rendezvous: Rendezvous = Rendezvous(),
    checkpoint_dir: str | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    feature_layers: Sequence["FeatureLayer"] = (),
) -> RecoveryRun:
    """Train `model` (changed in place) to match `ctx.teacher`, in this process or under torchrun."""
    from exporter.training import ddp
    from exporter.training.data import SampleData
    from exporter.training.devices import resolve_device
    from exporter.training.loop import train

    for which in ("teacher_device", "student_device"):
        resolve_device(getattr(settings, which), f"{pass_name} {which}")  # fail before reading any data
    names = [spec.name for spec in ctx.input_specs]
    train_set, val_set, notes = _data(ctx, data_path, settings.seed, pass_name)
    if len(train_set) < rendezvous.world_size:
        raise CompressionError(
            f"{pass_name} has {len(train_set)} training samples for {rendezvous.world_size} processes: "
            "every process needs at least one; use more data or fewer processes"
        )
    train_data, val_data = SampleData(train_set, ctx.input_specs), SampleData(val_set, ctx.input_specs)
    flag = f"--{pass_name}-checkpoint-dir"
    with tempfile.TemporaryDirectory(prefix=f"{pass_name}-") as temporary:
        if checkpoint_dir is not None:
            folder = Path(checkpoint_dir)
        elif ctx.checkpoint_dir is not None:
            folder = Path(ctx.checkpoint_dir) / pass_name
        else:
            folder = Path(temporary) / "checkpoints"
            if resume:
                notes.append(
                    f"no work folder or {flag}: checkpoints were temporary, so --resume had nothing to continue"
                )
        common = dict(
            checkpoint_dir=folder, checkpoint_flag=flag, resume=resume, desc=pass_name, feature_layers=feature_layers
        )
        if rendezvous.world_size == 1:
            student, outcome = train(
                model, ctx.teacher, train_data, val_data, names, settings, on_epoch_end=on_epoch_end, **common
            )
        else:
            student, outcome = ddp.launch(
                model, ctx.teacher, train_data, val_data, names, settings, rendezvous, scratch=ctx.work_dir, **common
            )
    notes.extend(outcome.notes)
    if outcome.best_epoch == 0:
        notes.append(f"{pass_name} did not improve on the student as it came; it was kept unchanged")
    summary = {
        "before": {k: outcome.before.get(k) for k in FIGURES},
        "after": {k: outcome.best.get(k) for k in FIGURES},
        "teacher_accuracy": outcome.before.get("teacher_accuracy"),
        "best_epoch": outcome.best_epoch,
        "epochs_run": outcome.epochs_this_run,
        "epochs_done": outcome.epochs_done,
        "stopped_by": outcome.stopped_by,
        "resumed": outcome.resumed_at is not None,
        "resumed_at": outcome.resumed_at,
        "samples_seen": outcome.samples_seen,
        "seconds": outcome.seconds,
        "nproc": rendezvous.nproc,
        "world_size": rendezvous.world_size,
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "loss": list(outcome.loss_kinds),
        "augment": outcome.augment,
        "feature_layers": list(outcome.feature_layers),
        "checkpoint": str(folder / "checkpoint.pt") if checkpoint_dir or ctx.checkpoint_dir else None,
        "history": outcome.history,
    }
    # Flat copies for one-line report templates (`agreement_before`, `accuracy_after`, ...).
    for when in ("before", "after"):
        summary.update({f"{key}_{when}": value for key, value in summary[when].items()})
    return RecoveryRun(
        student=student,
        outcome=outcome,
        summary=summary,
        notes=notes,
        measure=_measurer(ctx.teacher, val_data, names, settings, outcome.loss_kinds),
    )


def _measurer(teacher, val_data, names, settings: TrainSettings, kinds) -> Callable[["nn.Module"], dict[str, Any]]:
    """A function giving any model's held-out figures; the teacher's outputs are computed on first use."""
    from exporter.training.devices import resolve_device
    from exporter.training.evaluate import TeacherCache, evaluate
    from exporter.training.loop import teacher_on_device
    from exporter.training.losses import DistillationLoss

    loss = DistillationLoss(tuple(kinds), settings.temperature, settings.alpha)
    cache: list[TeacherCache] = []

    def measure(model: "nn.Module") -> dict[str, Any]:
        device = resolve_device(settings.student_device, "student_device")
        if not cache:
            teacher_device = resolve_device(settings.teacher_device, "teacher_device")
            on_device = teacher_on_device(teacher, teacher_device)
            cache.append(TeacherCache.build(on_device, val_data, names, settings.batch_size, teacher_device))
        figures = evaluate(model.to(device), val_data, cache[0], names, loss, device)
        return {k: figures.get(k) if not isinstance(figures.get(k), float) else round(figures[k], 6) for k in FIGURES}

    return measure


def _data(
    ctx: "PassContext", data_path: str | None, seed: int, pass_name: str
) -> tuple["SampleSet", "SampleSet", list[str]]:
    """(training set, held-out set, notes) bound to the model's inputs; see the module docstring."""
    from calibration import bind_to_inputs, open_samples, split_samples

    names = [spec.name for spec in ctx.input_specs]
    notes: list[str] = []
    if data_path is not None:
        train_set = bind_to_inputs(open_samples(data_path), names)
    elif ctx.calib is not None:
        train_set = bind_to_inputs(ctx.calib, names)
    else:
        raise CompressionError(
            f"{pass_name} needs data to train on: pass --{pass_name}-data PATH or --calib PATH (labels are optional)"
        )
    if len(train_set) == 0:
        raise CompressionError(f"{pass_name} data {train_set.description} contains no samples")
    if ctx.val is not None and len(ctx.val) > 0:
        return train_set, bind_to_inputs(ctx.val, names), notes
    if len(train_set) < 2:
        raise CompressionError(
            f"{pass_name} needs a held-out set: there is no validation split and only {len(train_set)} training sample"
        )
    train_set, val_set = split_samples(train_set, None, None, seed=seed)
    notes.append(f"no validation split: held out {len(val_set)} of the {pass_name} data to measure the student")
    return train_set, val_set, notes
