"""The calibration reader contract and the `READERS` registry every reader module adds itself to."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

from calibration.preprocess import DataOptions
from calibration.samples import SampleSet
from exporter.registry import Registry


class SampleReader(ABC):
    """Opens one kind of calibration source (a file type, a folder layout, a factory) as a `SampleSet`.

    `accepts` decides from what the source string is (an extension, a folder's contents); it must
    not read sample data. Exactly one registered reader should accept any given source.
    """

    name: str = ""
    description: str = ""

    @classmethod
    @abstractmethod
    def accepts(cls, source: str) -> bool:
        """True when this reader handles `source`."""

    @classmethod
    @abstractmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        """Open `source` lazily; raise `CalibrationError` naming the file when it cannot be read."""


READERS: Registry[type[SampleReader]] = Registry("calibration reader")

R = TypeVar("R", bound=type[SampleReader])


def register_reader(reader: R) -> R:
    """Class decorator: add `reader` to `READERS` under its own `name`."""
    READERS.add(reader.name, reader)
    return reader
