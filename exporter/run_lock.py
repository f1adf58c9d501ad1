"""Locks that say a run is alive, and the sweeping of folders that dead runs left behind.

A run holds an exclusive `flock` on `.<out>.lock` beside its output folder for its whole life, and
one on `<work>/.lock` inside its work folder in TMPDIR. The kernel drops a lock when its process dies,
however it dies (SIGKILL too), so a later run can tell a dead run's staging or work folder from a live
one's: the folder is old enough and nobody holds its lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


WORK_PREFIX = "exporter-work-"
STALE_SECONDS = 60.0  # a folder younger than this may belong to a run that has not taken its lock yet


class FolderLock:
    """An exclusive, non-blocking `flock` on one lock file, holding the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file that its previous owner unlinked while we opened it
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
                return True
            os.close(fd)

    def holder_pid(self) -> str:
        """The pid written by the process that holds the lock ("?" when unreadable)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_free(lock_path: Path) -> bool:
    """True when nobody holds the lock at `lock_path` (a missing lock file is free)."""
    if not lock_path.exists():
        return True
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock


def old_enough(path: Path, now: float | None = None) -> bool:
    """True when `path` was last changed more than `STALE_SECONDS` ago."""
    try:
        return (now or time.time()) - path.stat().st_mtime > STALE_SECONDS
    except OSError:
        return False


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A private work folder in TMPDIR, locked while the run lives and removed when it ends; sweeps dead runs' ones."""
    sweep_work_folders()
    path = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    lock = FolderLock(path / ".lock")
    lock.try_acquire()
    try:
        yield path
    finally:
        lock.release()
        shutil.rmtree(path, ignore_errors=True)


def sweep_work_folders(folder: Path | None = None) -> list[Path]:
    """Remove work folders of dead runs (old enough, lock free) from TMPDIR; return what was removed."""
    folder = Path(folder or tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError):
        for path in folder.glob(WORK_PREFIX + "*"):
            if path.is_dir() and old_enough(path) and is_free(path / ".lock"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
