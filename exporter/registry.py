"""A name -> unit registry shared by passes, calibration readers, quantizers and targets."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from exporter.errors import PlanError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable snake_case / kebab-case names to units of one kind.

    Registering a name twice raises; looking up an unknown name raises `PlanError`
    suggesting the close matches and listing the valid names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._units: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@REGISTRY.register("name")`."""

        def decorate(unit: T) -> T:
            self.add(name, unit)
            return unit

        return decorate

    def add(self, name: str, unit: T) -> None:
        """Register `unit` under `name`; a duplicate name is a programming error."""
        if name in self._units:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._units[name] = unit

    def get(self, name: str) -> T:
        """Return the unit called `name`, or raise `PlanError` naming the valid choices."""
        try:
            return self._units[name]
        except KeyError:
            raise PlanError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The one-line message for an unknown name: close matches first, then every valid name."""
        close = difflib.get_close_matches(name, self._units, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} {name!r}: {hint}valid: {', '.join(sorted(self._units))}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._units)

    def __contains__(self, name: object) -> bool:
        return name in self._units

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """(name, unit) pairs sorted by name."""
        return [(n, self._units[n]) for n in self.names()]
