"""SIGTERM handled like Ctrl-C: CI timeouts and process managers send it, and a run must then leave nothing behind.

While `terminate_as_interrupt()` is active, SIGTERM raises `Terminated` (a `KeyboardInterrupt`) in the
main thread, so every `finally` and `except BaseException` cleanup runs exactly as for Ctrl-C:
the staging folder, the work folder and the output lock are removed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into a `Terminated` exception for the duration (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _received.append(signum)
        raise Terminated()

    _received.clear()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def terminated() -> bool:
    """True once SIGTERM arrived (a C extension may have turned the `Terminated` exception into another one)."""
    return bool(_received)
