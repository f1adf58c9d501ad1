"""Opening a calibration source: find the one reader that accepts it, or say why none does."""

from __future__ import annotations

from pathlib import Path

from calibration.preprocess import DataOptions
from calibration.readers import READERS
from calibration.readers.image_folder import IMAGE_EXTENSIONS
from calibration.samples import SampleSet
from exporter.errors import CalibrationError


def open_samples(source: str, options: DataOptions | None = None) -> SampleSet:
    """Open `source` with the registered reader whose `accepts` says yes.

    `source` is a .npy or .npz file, a folder of .npy files or images, or `package.module:function`.
    A missing path, an empty folder, a file of another kind, or a source several readers claim
    raises `CalibrationError`.
    """
    options = options or DataOptions()
    source = str(source)
    accepting = [reader for _, reader in READERS.items() if reader.accepts(source)]
    if len(accepting) == 1:
        return accepting[0].open(source, options)
    if len(accepting) > 1:
        names = ", ".join(reader.name for reader in accepting)
        raise CalibrationError(
            f"calibration data {source} matches several readers ({names}): keep one kind of data in it"
        )
    path = Path(source)
    if not path.exists():
        raise CalibrationError(
            f"calibration data not found: {source} (expected a .npy/.npz file, a folder of .npy files or "
            "images, or package.module:function)"
        )
    if path.is_dir():
        images = ", ".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
        raise CalibrationError(
            f"calibration folder {source} is empty: found no .npy files, and no images ({images}) in it or its "
            "sub-folders; add samples or point at another folder"
        )
    kinds = "; ".join(f"{reader.name}: {reader.description}" for _, reader in READERS.items())
    raise CalibrationError(
        f"calibration data {source} is a {path.suffix or 'extension-less'} file, which no reader handles; "
        f"supported: {kinds}"
    )
