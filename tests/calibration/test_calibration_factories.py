"""Hostile calibration factories: endless iterables stop at the limit, a lying `__len__` is counted,
a raising dataset is bad input naming the item, and memory follows the limit, never the claim."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from calibration import DataOptions, open_samples, split_samples
from calibration.split import draw_indices, samples_needed
from exporter.errors import CalibrationError

HOSTILE = '''
import itertools
import numpy as np

PRODUCED = []

def endless():
    def items():
        for i in itertools.count():
            PRODUCED.append(i)
            yield np.full((4,), i, np.float32), i % 3
    return items()

class Liar:
    def __len__(self):
        return 10**15
    def __getitem__(self, i):
        if i >= 50:
            raise IndexError(i)
        return np.full((4,), i, np.float32)

def liar():
    return Liar()

class Huge:
    def __len__(self):
        return 10**15
    def __getitem__(self, i):
        return np.full((4,), i % 1000, np.float32)

def huge():
    return Huge()

class Raiser:
    def __len__(self):
        return 20
    def __getitem__(self, i):
        if i == 7:
            raise ValueError("corrupt record")
        return np.zeros(4, np.float32)

def raiser():
    return Raiser()

def raising_generator():
    def items():
        yield np.zeros(4, np.float32)
        yield np.zeros(4, np.float32)
        raise OSError("disk went away")
    return items()

class BadLen:
    def __len__(self):
        raise RuntimeError("no length today")
    def __getitem__(self, i):
        return np.zeros(4, np.float32)

def bad_len():
    return BadLen()

def ragged():
    return iter([np.zeros(4, np.float32), np.zeros(5, np.float32)])
'''


@pytest.fixture
def hostile(factory_module, monkeypatch):
    """The module above, importable by the test (to see what the factories produced) and by the reader."""
    import importlib
    from pathlib import Path

    factory_module("hostile_factories", HOSTILE)
    monkeypatch.syspath_prepend(str(Path.cwd()))
    return importlib.import_module("hostile_factories")


def test_endless_factory_stops_at_the_limit(hostile):
    samples = open_samples("hostile_factories:endless", DataOptions(max_samples=125))
    assert len(samples) == 125
    assert len(hostile.PRODUCED) == 126  # the limit, plus one item to learn there were more
    assert samples.notes == ()  # the user's own limit: no note
    assert samples.has_labels
    assert samples[124].label == 124 % 3
    np.testing.assert_array_equal(samples[124].inputs["input"], np.full((4,), 124, np.float32))


def test_endless_factory_without_a_limit_stops_at_the_default_cap_with_a_note(hostile, monkeypatch):
    monkeypatch.setattr("calibration.readers.factory.DEFAULT_FACTORY_SAMPLES", 300)
    samples = open_samples("hostile_factories:endless")
    assert len(samples) == 300
    assert samples.notes == (
        "calibration factory hostile_factories:endless yields more than 300 items: used the first 300 "
        "(--calib-samples and --val-samples choose how many)",
    )


def test_endless_factory_memory_follows_one_sample_not_the_count(factory_module, tmp_path):
    """Spooled to disk as it is read: 20,000 samples of 4 KiB (80 MB) stay far below 80 MB in memory."""
    factory_module("big_factory", "import numpy as np\n\ndef make():\n    return (np.full((1024,), i, np.float32) for i in range(10**9))\n")
    tracemalloc.start()
    try:
        samples = open_samples("big_factory:make", DataOptions(max_samples=20_000, scratch=tmp_path / "spool"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 20_000
    assert peak < 8 << 20  # labels list and bookkeeping only; the samples (80 MB) went to disk
    np.testing.assert_array_equal(samples[19_999].inputs["input"], np.full((1024,), 19_999, np.float32))
    folder = samples.folder
    assert folder.parent == tmp_path / "spool"
    del samples
    import gc

    gc.collect()
    assert not folder.exists()


def test_lying_len_is_counted_not_allocated(hostile):
    tracemalloc.start()
    try:
        samples = open_samples("hostile_factories:liar")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 50
    assert peak < 1 << 20
    assert samples.notes == (
        "calibration factory hostile_factories:liar: len() says 1000000000000000 items but item 50 does not exist; "
        "used the 50 that do",
    )
    calib, val = split_samples(samples, None, None)
    assert (len(calib), len(val)) == (40, 10)


def test_huge_honest_dataset_is_drawn_from_in_memory_of_the_limit(hostile):
    tracemalloc.start()
    try:
        samples = open_samples("hostile_factories:huge", DataOptions(max_samples=500, seed=3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 500
    assert peak < 1 << 20
    assert samples.description == "calibration factory hostile_factories:huge (500 samples drawn from 1000000000000000)"
    again = open_samples("hostile_factories:huge", DataOptions(max_samples=500, seed=3))
    assert [again[i].origin for i in (0, 499)] == [samples[i].origin for i in (0, 499)]  # seeded
    indices = [int(re.search(r"\[(\d+)\]", samples[i].origin).group(1)) for i in range(500)]
    assert indices == sorted(set(indices))  # distinct, in file order


def test_raising_getitem_is_bad_input_naming_the_item(hostile):
    samples = open_samples("hostile_factories:raiser")
    with pytest.raises(CalibrationError) as caught:
        [samples[i] for i in range(20)]
    assert str(caught.value) == (
        "calibration factory 'hostile_factories:raiser': reading item 7 raised ValueError: corrupt record; fix the dataset"
    )


def test_raising_generator_and_len_are_bad_input(hostile):
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration calibration factory hostile_factories:raising_generator raised OSError while producing item 2: "
            "disk went away; fix the factory"
        ),
    ):
        open_samples("hostile_factories:raising_generator")
    with pytest.raises(
        CalibrationError,
        match=re.escape("calibration factory 'hostile_factories:bad_len': len() of its dataset raised RuntimeError: no length today"),
    ):
        open_samples("hostile_factories:bad_len")


def test_a_sample_of_another_shape_is_named(hostile):
    with pytest.raises(
        CalibrationError,
        match=re.escape(
            "calibration sample hostile_factories:ragged[1]: 'input' has shape (5,) but the first sample's is (4,): "
            "every sample must have the same shape"
        ),
    ):
        open_samples("hostile_factories:ragged")


def test_samples_needed_matches_what_the_split_uses():
    for calib_count in (1, 7, 100, 1000):
        needed = samples_needed(calib_count, None, 0.2)
        calib, val = split_samples(_Numbered(needed), calib_count, None, seed=0, val_fraction=0.2)
        assert len(calib) == calib_count and len(val) >= 1
        assert len(calib) + len(val) <= needed
    assert samples_needed(100, 30) == 130
    assert samples_needed(None, 30) is None


def test_draw_indices_is_seeded_distinct_and_bounded():
    tracemalloc.start()
    try:
        drawn = draw_indices(10**15, 1000, seed=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert drawn == sorted(set(drawn)) and len(drawn) == 1000
    assert drawn == draw_indices(10**15, 1000, seed=5)
    assert drawn != draw_indices(10**15, 1000, seed=6)
    assert draw_indices(10, 20, seed=0) == list(range(10))
    assert sorted(set(draw_indices(10, 8, seed=0))) == draw_indices(10, 8, seed=0)


class _Numbered:
    """A stand-in sample set of `n` items for the split (only `len` and `subset` are used)."""

    description = "numbered"

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def subset(self, indices):
        return list(indices)
