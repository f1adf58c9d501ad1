"""The library entry point: `export(...)` does exactly what `exporter export` does."""

from __future__ import annotations

from typing import Any

from exporter.plan import DEFAULTS, Plan, build_plan, read_plan_file


def export(model: str | None = None, *, plan_file: str | None = None, dry_run: bool = False, **settings: Any):
    """Export `model` as the settings say and return an `ExportResult` (or the `Plan` when `dry_run`).

    `settings` are the flat plan settings (see `exporter.plan.DEFAULTS`), e.g.
    `export("model.pt", target="cpu-int8", calib="data/", out="build/", passes=[{"name": "prune", "ratio": 0.5}])`.
    `plan_file` supplies settings that keyword arguments override. Raises `exporter.errors.ExporterError`
    subclasses; `ValidationFailed` (outputs still written, `.result` attached) when the gate fails.
    """
    merged: dict[str, Any] = read_plan_file(plan_file) if plan_file else {}
    merged.update({k: v for k, v in settings.items() if v is not None})
    if model is not None:
        merged["model"] = model
    plan: Plan = build_plan(merged)
    if dry_run:
        return plan
    from exporter.pipeline import run_export

    return run_export(plan)


__all__ = ["export", "DEFAULTS"]
