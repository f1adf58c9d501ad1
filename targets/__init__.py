"""Deployment targets: one declarative TOML profile per target in this folder.

`get_target("cpu-int8")` loads a built-in profile by name; `get_target("my_target.toml")` loads a
user's own file. Adding a target means adding one `<name>.toml` file here (its `name` field must
match the file name).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from exporter.errors import PlanError
from exporter.registry import Registry
from targets.profile import QuantScheme, Target, Tolerances

PROFILE_DIR = Path(__file__).parent

__all__ = ["Target", "QuantScheme", "Tolerances", "get_target", "builtin_targets", "load_target_file"]


def load_target_file(path: str | Path) -> Target:
    """Parse and validate a target TOML file; errors name the file and the field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"target file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"target file {path} is not valid TOML: {exc}") from None
    if "name" not in data or "description" not in data:
        raise PlanError(f"target file {path}: 'name' and 'description' are required")
    target = Target.from_dict(data, where=str(path))
    if target.package_steps:
        from targets.packaging import check_package_steps

        check_package_steps(target.package_steps, str(path))
    return target


def builtin_targets() -> Registry[Path]:
    """The registry of built-in target profiles (name -> TOML path), read from this folder."""
    registry: Registry[Path] = Registry("target")
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        registry.add(path.stem, path)
    return registry


def get_target(name_or_path: str) -> Target:
    """Resolve `--target`: a built-in name, or the path of a user's `.toml` target file."""
    if name_or_path.endswith(".toml") or Path(name_or_path).is_file():
        return load_target_file(name_or_path)
    if name_or_path == "auto":
        from targets.auto import auto_target

        return auto_target()
    target = load_target_file(builtin_targets().get(name_or_path))
    if target.name != name_or_path:
        raise PlanError(f"built-in target file {name_or_path}.toml declares name {target.name!r}")
    return target
