"""Intermediate-feature matching: a pruned layer's output learns the teacher's same layer, restricted to the kept channels.

Which layers (`choose_layers`): the layers pruning cut (the lineage `passes._lineage.kept_channels`
records) that exist as modules under the same name in both the student and the teacher,
normalisation layers preferred (a BatchNorm's output is the conv's output after its BN); at most
`limit` of them, evenly spaced in module order and ending with the deepest one. When the student
has fewer normalisation layers than the teacher (`fold_bn` merged them into the convs), a conv's
output is no longer the teacher's conv output, so only normalisation layers are matched. A layer whose
student output is not the teacher's output at the kept channels (checked on a probe batch) is
dropped and named in a note.

The loss per sample (`FeatureMatch.loss`) is the mean over layers of
`mean((student - teacher[:, kept])^2) / scale`, where `scale` is the mean square of the teacher's
kept channels on the held-out probe batch: every layer counts alike whatever its magnitude, and
every process of a distributed run computes the same scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

NORMALIZATION = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class FeatureLayer:
    """One matched layer: its name (the same in student and teacher) and the teacher channels the student kept."""

    name: str
    kept: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for the worker's job file)."""
        return {"name": self.name, "kept": list(self.kept)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureLayer":
        """Inverse of `to_dict`."""
        return cls(data["name"], tuple(int(i) for i in data["kept"]))


def choose_layers(
    student: nn.Module, teacher: nn.Module, lineage: dict[str, list[int]], limit: int = 4
) -> tuple[list[FeatureLayer], list[str]]:
    """The layers to match (see the module docstring) and notes on what could not be matched."""
    order = {name: i for i, (name, _) in enumerate(student.named_modules())}
    notes: list[str] = []
    shared, missing = [], []
    for name in sorted(lineage, key=lambda n: order.get(n, len(order))):
        if _module(student, name) is None:
            continue  # replaced by a later pass (folded BatchNorm, low-rank pair)
        if _module(teacher, name) is None:
            missing.append(name)
            continue
        shared.append(name)
    if missing and not shared:
        notes.append(
            f"feature matching off: the teacher has no layer named {missing[0]!r} "
            f"(and {len(missing) - 1} more pruned layers)" if len(missing) > 1 else
            f"feature matching off: the teacher has no layer named {missing[0]!r}"
        )
    norms = [n for n in shared if isinstance(_module(student, n), NORMALIZATION)]
    folded = _count(teacher, NORMALIZATION) > _count(student, NORMALIZATION)
    if folded and not norms and shared:
        notes.append(
            "feature matching off: normalisation layers were folded into the pruned convs, whose outputs are "
            "then not the teacher's"
        )
    candidates = norms if norms or folded else shared
    count = min(limit, len(candidates))
    picked = [candidates[round((i + 1) * len(candidates) / count) - 1] for i in range(count)] if count else []
    return [FeatureLayer(name, tuple(lineage[name])) for name in dict.fromkeys(picked)], notes


class FeatureTap:
    """Forward hooks that keep the outputs of named layers of one model while `active` is set."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.active = False
        self._handles = [model.get_submodule(name).register_forward_hook(self._keeper(name)) for name in names]

    def _keeper(self, name: str) -> Callable[..., None]:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            if self.active and isinstance(output, torch.Tensor):
                self.outputs[name] = output

        return keep

    def take(self) -> dict[str, torch.Tensor]:
        """The outputs kept since the last call (and forget them)."""
        outputs, self.outputs = self.outputs, {}
        return outputs

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass
class FeatureMatch:
    """Taps on student and teacher for the matched layers, and their per-layer scales."""

    layers: list[FeatureLayer]
    student_tap: FeatureTap
    teacher_tap: FeatureTap
    scales: dict[str, float] = field(default_factory=dict)

    @classmethod
    def attach(cls, student: nn.Module, teacher: nn.Module, layers: Sequence[FeatureLayer]) -> "FeatureMatch":
        """Hook the layers of both models (the hooks stay until `close`)."""
        names = [layer.name for layer in layers]
        return cls(list(layers), FeatureTap(student, names), FeatureTap(teacher, names))

    def calibrate(self, run_both: Callable[[], None]) -> list[str]:
        """Run both models once (`run_both`) to check shapes and set the scales; drop layers that do not
        match, returning a note for each."""
        self.student_tap.active = self.teacher_tap.active = True
        try:
            with torch.no_grad():
                run_both()
        finally:
            self.student_tap.active = self.teacher_tap.active = False
        got_s, got_t = self.student_tap.take(), self.teacher_tap.take()
        notes, kept_layers = [], []
        for layer in self.layers:
            s, t = got_s.get(layer.name), got_t.get(layer.name)
            fits = t is not None and t.dim() > 1 and bool(layer.kept) and max(layer.kept) < t.shape[1]
            teacher_part = _select(t, layer.kept) if fits else None
            if s is None or teacher_part is None or s.shape != teacher_part.shape:
                notes.append(f"feature matching skips {layer.name}: its output does not line up with the teacher's kept channels")
                continue
            self.scales[layer.name] = max(float(teacher_part.float().pow(2).mean()), 1e-8)
            kept_layers.append(layer)
        self.layers = kept_layers
        return notes

    def loss(self, device: torch.device) -> torch.Tensor | None:
        """Per-sample feature loss of the step that just ran both models (None when nothing was tapped)."""
        got_s, got_t = self.student_tap.take(), self.teacher_tap.take()
        terms = []
        for layer in self.layers:
            if layer.name not in got_s or layer.name not in got_t:
                continue
            s = got_s[layer.name].float()
            t = _select(got_t[layer.name], layer.kept).to(device).float()
            terms.append((s - t).pow(2).flatten(1).mean(1) / self.scales[layer.name])
        return torch.stack(terms).mean(0) if terms else None

    def set_active(self, active: bool) -> None:
        """Keep outputs (during training steps) or not (evaluation)."""
        self.student_tap.active = self.teacher_tap.active = active

    def close(self) -> None:
        """Remove every hook."""
        self.student_tap.close()
        self.teacher_tap.close()


def _select(output: torch.Tensor, kept: Sequence[int]) -> torch.Tensor:
    return output.index_select(1, torch.as_tensor(list(kept), device=output.device))


def _count(model: nn.Module, kinds: tuple[type, ...]) -> int:
    return sum(1 for module in model.modules() if isinstance(module, kinds))


def _module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
