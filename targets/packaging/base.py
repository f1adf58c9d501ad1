"""The package-step contract: the deployable model file in, extra deployment files out, plus a record.

A target lists its steps by name (`package_steps = ["ort_format", "mobile_check"]`); each step is
one function registered with `@register_package_step(name)` in its own module of this package. A
step writes only into `PackageRequest.out_dir` (the pipeline's staging folder, renamed into place
afterwards), names every file it wrote in `PackageInfo.files`, and returns plain-data figures for
the report in `summary`. Steps raise `ExporterError` children; they never print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from exporter.registry import Registry

if TYPE_CHECKING:
    from exporter.inputs import InputSpec
    from targets.profile import Target


@dataclass
class PackageRequest:
    """What a package step may use: the final model file, the folder to write into, the inputs, the target."""

    model_path: Path
    out_dir: Path
    input_specs: Sequence["InputSpec"]
    target: "Target"


@dataclass
class PackageInfo:
    """What a package step did: the files it wrote (names inside out_dir), figures for the report, notes."""

    name: str
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return {"name": self.name, "files": list(self.files), "summary": self.summary, "notes": list(self.notes)}


PackageStep = Callable[[PackageRequest], PackageInfo]
PACKAGE_STEPS: Registry[PackageStep] = Registry("package step")


def register_package_step(name: str) -> Callable[[PackageStep], PackageStep]:
    """Decorator: register a package step function under `name` (the name targets use in `package_steps`)."""
    return PACKAGE_STEPS.register(name)
