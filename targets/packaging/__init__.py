"""Packaging steps a target can ask for after quantization (`Target.package_steps`).

Every module in this folder registers one step in `PACKAGE_STEPS` (modules starting with `_` and
`base` are skipped); adding a step means adding one module with a `@register_package_step` function.
The pipeline calls `run_package_steps(target, model_path, out_dir, input_specs)` once, with
`out_dir` the staging output folder; the steps run in the order the target lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from exporter.errors import PlanError
from targets.packaging.base import PACKAGE_STEPS, PackageInfo, PackageRequest, register_package_step

if TYPE_CHECKING:
    from exporter.inputs import InputSpec
    from targets.profile import Target

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "PACKAGE_STEPS",
    "PackageInfo",
    "PackageRequest",
    "check_package_steps",
    "register_package_step",
    "run_package_steps",
]


def check_package_steps(names: Sequence[str], where: str) -> None:
    """Raise `PlanError` for the first unknown step name, naming the target file and the valid steps."""
    for name in names:
        if name not in PACKAGE_STEPS:
            raise PlanError(f"{where}: package_steps: {PACKAGE_STEPS.unknown_message(name)}")


def run_package_steps(
    target: "Target", model_path: Path, out_dir: Path, input_specs: Sequence["InputSpec"]
) -> list[PackageInfo]:
    """Run the target's package steps in order on the final model file; return one record per step."""
    check_package_steps(target.package_steps, target.source or target.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    request = PackageRequest(model_path=Path(model_path), out_dir=out_dir, input_specs=input_specs, target=target)
    return [PACKAGE_STEPS.get(name)(request) for name in target.package_steps]
