"""One strict, typed conversion for every setting from every source.

Settings arrive from the command line (text), plan files (JSON/TOML), `export(**settings)`, target
TOML files, pass configs and accuracy budgets. `coerce` turns a value into its annotated type or
raises `SettingTypeError` (a `PlanError`: exit 2) naming the setting and the expected type.

Booleans are where a lax conversion is dangerous (`bool("false") is True`): only text typed on the
command line is read as a boolean (`true/false/yes/no/on/off/1/0`); anywhere else a boolean must be a
real boolean, so `"trust_pickle": "false"` in a plan file is an error, never a yes. The CLI marks its
text with `CommandLineText` so that one conversion serves every source. Numbers may be written as
text in any source (`"0.5"` is unambiguous) but a boolean is never a number and an integer is never
a fraction; a list may be given as comma-separated text.
"""

from __future__ import annotations

import os
import typing
from typing import Any

from exporter.errors import PlanError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class CommandLineText(str):
    """A value typed on the command line: the only source whose text is read as a boolean."""


class FilePath(str):
    """Annotation for settings that name a file or folder: a string or an `os.PathLike`."""


class SettingTypeError(PlanError):
    """A setting's value does not have the setting's type."""

    def __init__(self, value: Any, where: str, expected: str, choices: tuple = ()) -> None:
        self.value, self.where, self.expected, self.choices = value, where, expected, choices
        super().__init__(f"bad value {value!r} for {where}: expected {expected}{_hint(value, expected)}")


def coerce(value: Any, annotation: Any, where: str, *, text: bool | None = None) -> Any:
    """`value` as `annotation` (bool, int, float, str, FilePath, Literal, Optional/Union, tuple[X, ...], Any).

    `text` says whether `value` is command-line text (default: whether it is a `CommandLineText`).
    Raises `SettingTypeError` naming `where` and the expected type.
    """
    if text is None:
        text = isinstance(value, CommandLineText)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return _union(value, args, where, text)
    if origin is typing.Literal:
        if value not in args:
            raise SettingTypeError(value, where, "one of " + ", ".join(map(str, args)), args)
        return str(value) if isinstance(value, CommandLineText) else value
    if origin in (tuple, list):
        return _sequence(value, origin, args, where, text)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise SettingTypeError(value, where, "a table of settings")
        return value
    if annotation is bool:
        return _bool(value, where, text)
    if annotation is int:
        return _int(value, where, text)
    if annotation is float:
        return _float(value, where, text)
    if annotation is FilePath:
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value):
            return str(os.fspath(value))
        raise SettingTypeError(value, where, "a file or folder path")
    if annotation is str:
        if isinstance(value, str):
            return str(value)
        raise SettingTypeError(value, where, "text")
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise SettingTypeError(value, where, getattr(annotation, "__name__", str(annotation)))
    return value


def setting_type_of(default: Any) -> Any:
    """The type a setting without a declared type has, read from its default (None/lists: anything)."""
    for kind in (bool, int, float, str):
        if type(default) is kind:
            return kind
    return Any


def _union(value: Any, args: tuple, where: str, text: bool) -> Any:
    if value is None and type(None) in args:
        return None
    arms = [a for a in args if a is not type(None)]
    first_error: SettingTypeError | None = None
    for arm in arms:
        try:
            return coerce(value, arm, where, text=text)
        except SettingTypeError as exc:
            first_error = first_error or exc
    if len(arms) == 1 and first_error is not None:
        raise first_error
    raise SettingTypeError(value, where, " or ".join(_describe(a) for a in arms))


def _sequence(value: Any, origin: type, args: tuple, where: str, text: bool) -> Any:
    if isinstance(value, str):
        items: list = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise SettingTypeError(value, where, "a list")
    inner = args[0] if args else Any
    cls = CommandLineText if text else str
    converted = [coerce(cls(v.strip()) if isinstance(v, str) else v, inner, where) for v in items if v != ""]
    return tuple(converted) if origin is tuple else converted


def _bool(value: Any, where: str, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise SettingTypeError(value, where, "true or false (also yes/no, on/off, 1/0)")
    raise SettingTypeError(value, where, "true or false")


def _int(value: Any, where: str, text: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise SettingTypeError(value, where, "a whole number")


def _float(value: Any, where: str, text: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise SettingTypeError(value, where, "a number")


def _describe(annotation: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", FilePath: "a path",
            dict: "a table of settings"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _hint(value: Any, expected: str) -> str:
    """Say why a string that looks right was refused (`"false"` in a plan file is text, not a boolean)."""
    if isinstance(value, str) and not isinstance(value, CommandLineText):
        if expected.startswith("true or false"):
            return " (a real boolean, not a string)"
    return ""
