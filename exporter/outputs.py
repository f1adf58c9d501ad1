"""Atomic outputs: a run writes a complete new output folder beside the old one and swaps it in with one rename.

- A lock on `.<out>.lock` is held from the first check to the commit, so two runs never write the same
  folder (the second one stops at once with exit 2 and the first one's pid).
- `--out` is checked before any work: it must be a folder (or not exist), writable, and empty unless `force`.
- Everything is written into a staging folder `.<out>.staging-*` beside `out`. `commit()` adds the
  user's own files from the old folder (hard links: the old folder stays intact), renames the old folder
  aside, renames the staging folder to `out` (one rename), and only then deletes the old folder. A
  failure at any point leaves the old folder as it was.
- The exporter owns the files listed in the folder's manifest (`.exporter-files.json`, written with
  every commit) and the names it always writes (`model.*`, `report.*`, `plan.json`...). `force` replaces
  that whole set, so no stale file of an earlier run (a `model.ort` from a mobile target) stays beside
  new ones, and leaves every other file alone.
- Staging and `.old-` folders of dead runs are swept by the next run to the same `out` (or, when their
  lock is free and they are old, by any run writing beside them).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path

from exporter.errors import OutputExistsError, PlanError
from exporter.errors import OutputBusyError
from exporter.run_lock import FolderLock, is_free, old_enough

MANIFEST = ".exporter-files.json"
# Names the exporter writes (or wrote in earlier versions) into an output folder.
OWNED_PATTERNS = ("model.*", "report.*", "plan.json", "layers.*", "golden*", "search-cache.json", MANIFEST)


class StagedOutputs:
    """The output folder of one run: lock, pre-flight check, staging folder, and the atomic commit."""

    def __init__(self, out_dir: Path, force: bool) -> None:
        self.out_dir = Path(os.path.abspath(out_dir))  # `--out .` is the current folder, by its name
        self.force = force
        self._staging: Path | None = None
        self._lock = FolderLock(self.out_dir.parent / f".{self.out_dir.name}.lock")

    def check_writable(self) -> None:
        """Before any work: take the lock, sweep dead runs' leftovers, and make sure `out_dir` can be written.

        Raises `OutputBusyError` (another run writes there), `OutputExistsError` (files and no `force`)
        or `PlanError` (not a folder, not writable).
        """
        parent = self.out_dir.parent
        if not self.out_dir.name:
            raise PlanError(f"--out {self.out_dir} is the filesystem root: choose a folder for the outputs")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputExistsError(f"--out {self.out_dir} exists and is not a folder: choose another --out")
        existing = next(p for p in (parent, *parent.parents) if p.exists() or p == p.parent)
        if not existing.is_dir():
            raise PlanError(f"cannot write --out {self.out_dir}: {existing} is a file, not a folder: choose another --out")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if not self._lock.held and not self._lock.try_acquire():
                raise OutputBusyError(
                    f"--out {self.out_dir} is being written by another exporter run (pid {self._lock.holder_pid()}): "
                    "wait for it to finish or choose another --out"
                )
        except OSError as exc:
            raise PlanError(f"cannot write --out {self.out_dir}: {_os_reason(exc)}: choose another --out") from None
        try:
            sweep_stale(self.out_dir)
            if self.out_dir.is_dir() and _entries(self.out_dir) and not self.force:
                existing = sorted(_entries(self.out_dir))[:3]
                raise OutputExistsError(
                    f"output folder {self.out_dir} already has files ({', '.join(existing)}): "
                    "pass --force to overwrite or choose another --out"
                )
            if self.out_dir.is_dir() and not os.access(self.out_dir, os.W_OK | os.X_OK):
                raise PlanError(f"cannot write --out {self.out_dir}: permission denied: choose another --out")
            _ = self.staging  # proves the parent folder is writable, before any work
        except OSError as exc:
            self.release()
            raise PlanError(f"cannot write --out {self.out_dir}: {_os_reason(exc)}: choose another --out") from None
        except BaseException:
            self.release()
            raise

    @property
    def staging(self) -> Path:
        """The staging folder (created on first use, beside `out_dir` so the final rename stays on one filesystem)."""
        if self._staging is None:
            parent = self.out_dir.parent
            parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.staging-", dir=parent))
        return self._staging

    def path(self, name: str) -> Path:
        """Where to write output `name` for now."""
        return self.staging / name

    def commit(self) -> list[Path]:
        """Swap the staged folder in as `out_dir` with one rename; return the exporter's files now in it."""
        try:
            staging = self.staging
            written = sorted(p.name for p in staging.iterdir() if not p.name.startswith("."))
            (staging / MANIFEST).write_text(json.dumps({"files": written}, indent=1) + "\n", encoding="utf-8")
            if self.out_dir.exists():
                self._swap_in(staging)
            else:
                os.chmod(staging, 0o777 & ~_umask())
                os.rename(staging, self.out_dir)
            self._staging = None
            return [self.out_dir / name for name in written if (self.out_dir / name).is_file()]
        finally:
            self.discard()

    def _swap_in(self, staging: Path) -> None:
        if not self.out_dir.is_dir():
            raise OutputExistsError(f"--out {self.out_dir} exists and is not a folder: choose another --out")
        if _entries(self.out_dir) and not self.force:
            raise OutputExistsError(
                f"output folder {self.out_dir} gained files during the run: pass --force to overwrite or choose another --out"
            )
        owned = owned_names(self.out_dir)
        for entry in self.out_dir.iterdir():
            if entry.name not in owned and not (staging / entry.name).exists():
                _link_into(entry, staging / entry.name)  # the user's own file: kept, the old folder untouched
        os.chmod(staging, os.stat(self.out_dir).st_mode & 0o7777)
        old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
        os.rmdir(old)
        os.rename(self.out_dir, old)
        try:
            os.rename(staging, self.out_dir)
        except BaseException:
            os.rename(old, self.out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging folder and whatever is left in it, and release the lock."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self.release()

    def release(self) -> None:
        """Release the output folder's lock (the staging folder, if any, stays)."""
        self._lock.release()


def owned_names(out_dir: Path) -> set[str]:
    """Names in `out_dir` that the exporter owns: its manifest's files and the names it always writes."""
    names = set()
    with contextlib.suppress(OSError, ValueError, TypeError):
        names.update(str(n) for n in json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))["files"])
    for entry in _entries(out_dir):
        if any(fnmatch.fnmatchcase(entry, pattern) for pattern in OWNED_PATTERNS):
            names.add(entry)
    return names


def sweep_stale(out_dir: Path) -> None:
    """Clean up after dead runs; the caller holds `out_dir`'s lock.

    A dead run's `.old-` folder is put back as `out_dir` if `out_dir` is missing (it died mid-swap),
    otherwise removed; its staging folders are removed. Staging folders of other outputs in the same
    parent are removed when they are old and their lock is free.
    """
    parent, name = out_dir.parent, out_dir.name
    for old in sorted(parent.glob(f".{name}.old-*")):
        if not out_dir.exists():
            os.rename(old, out_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for staging in parent.glob(f".{name}.staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    for staging in parent.glob(".*.staging-*"):
        other = staging.name[1:].rsplit(".staging-", 1)[0]
        if other != name and old_enough(staging) and is_free(parent / f".{other}.lock"):
            shutil.rmtree(staging, ignore_errors=True)


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


def _link_into(source: Path, dest: Path) -> None:
    """Put `source` at `dest` without moving or copying data: hard links (trees of them for folders)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
    elif source.is_dir():
        shutil.copytree(source, dest, symlinks=True, copy_function=os.link)
    else:
        os.link(source, dest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOTDIR:
        return f"{exc.filename or 'a parent'} is a file, not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror.lower()} ({exc.filename})" if exc.filename else exc.strerror.lower()
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)
