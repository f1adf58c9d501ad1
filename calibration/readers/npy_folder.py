"""Reader for a folder of .npy files, one sample per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.preprocess import DataOptions
from calibration.readers.base import SampleReader, register_reader
from calibration.readers.npy import load_npy
from calibration.samples import Sample, SampleSet


def npy_files(folder: Path) -> list[Path]:
    """The .npy files directly inside `folder` (any letter case), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".npy")


@register_reader
class NpyFolderReader(SampleReader):
    """A folder whose .npy files (sorted by name, sub-folders ignored) are one sample each, for a
    single-input model; the key is the folder name. A leading axis of 1 (a saved batch of one) is
    dropped."""

    name = "npy_folder"
    description = "a folder of .npy files, one sample each"

    @classmethod
    def accepts(cls, source: str) -> bool:
        path = Path(source)
        return path.is_dir() and bool(npy_files(path))

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        return NpyFolderSampleSet(Path(source))


class NpyFolderSampleSet(SampleSet):
    """One sample per .npy file, loaded when asked for."""

    def __init__(self, folder: Path) -> None:
        self.files = npy_files(folder)
        self.keys = (folder.resolve().name or "input",)
        self.has_labels = False
        self.description = f"npy folder {folder} ({len(self.files)} files)"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[self._check_index(index)]
        array = load_npy(path, mmap=False)
        if array.ndim >= 2 and array.shape[0] == 1:
            array = array[0]
        return Sample(inputs={self.keys[0]: np.asarray(array)}, origin=str(path))
