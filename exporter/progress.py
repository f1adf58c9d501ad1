"""Progress bars that show on a terminal and stay silent in logs and CI."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_enabled: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on or off; `None` goes back to auto-detection (terminal and not CI)."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """True when bars should be drawn: explicitly enabled, or stderr is a terminal outside CI."""
    if _enabled is not None:
        return _enabled
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap `iterable` in a tqdm bar when progress is enabled, else return it unchanged."""
    if not progress_enabled():
        return iter(iterable)
    from tqdm import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True))


def progress_bar(desc: str, total: int | None = None, unit: str = "it"):
    """A manually-updated bar (`.update(n)`, `.set_postfix(...)`, `.close()`); a no-op object when disabled."""
    if not progress_enabled():
        return _NullBar()
    from tqdm import tqdm

    return tqdm(desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NullBar":
        return self

    def __exit__(self, *exc) -> None:
        pass
