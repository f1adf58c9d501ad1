"""Atomic outputs: everything is written into a staging folder and renamed into place at the end.

A run that fails leaves nothing behind; an existing output folder with files in it is only
overwritten with `force`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from exporter.errors import OutputExistsError


class StagedOutputs:
    """A staging folder beside `out_dir`; `commit()` renames its files into `out_dir`."""

    def __init__(self, out_dir: Path, force: bool) -> None:
        self.out_dir = Path(out_dir)
        self.force = force
        self._staging: Path | None = None

    def check_writable(self) -> None:
        """Raise `OutputExistsError` if `out_dir` already holds files and `force` is off."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputExistsError(f"--out {self.out_dir} exists and is not a folder: choose another --out")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not self.force:
            existing = sorted(p.name for p in self.out_dir.iterdir())[:3]
            raise OutputExistsError(
                f"output folder {self.out_dir} already has files ({', '.join(existing)}): "
                "pass --force to overwrite or choose another --out"
            )

    @property
    def staging(self) -> Path:
        """The staging folder (created on first use, on the same filesystem as `out_dir`)."""
        if self._staging is None:
            parent = self.out_dir.parent
            parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.staging-", dir=parent))
        return self._staging

    def path(self, name: str) -> Path:
        """Where to write output `name` for now."""
        return self.staging / name

    def commit(self) -> list[Path]:
        """Move every staged file into `out_dir` (overwriting same-named files) and remove the staging folder."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for item in sorted(self.staging.iterdir()):
            if item.is_file():
                target = self.out_dir / item.name
                os.replace(item, target)
                written.append(target)
        self.discard()
        return written

    def discard(self) -> None:
        """Remove the staging folder and whatever is left in it."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
