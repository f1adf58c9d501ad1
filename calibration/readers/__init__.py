"""Calibration readers, one module each; importing this package registers them all in `READERS`.

Adding a reader: write one module with a `SampleReader` subclass decorated `@register_reader`,
and import it here.
"""

from calibration.readers import factory, image_folder, npy, npy_folder, npz  # noqa: F401  (registers)
from calibration.readers.base import READERS, SampleReader, register_reader

__all__ = ["READERS", "SampleReader", "register_reader"]
