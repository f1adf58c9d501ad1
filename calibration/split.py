"""Splitting one data source into a calibration set and a disjoint held-out validation set."""

from __future__ import annotations

import math

import numpy as np

from calibration.samples import SampleSet
from exporter.errors import CalibrationError, PlanError


def split_samples(
    samples: SampleSet,
    calib_count: int | None,
    val_count: int | None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> tuple[SampleSet, SampleSet]:
    """Return `(calibration, validation)` subsets drawn from one seeded permutation, never overlapping.

    The validation set is the first `val_count` positions of the permutation, so it stays the same
    whatever `calib_count` is; the calibration set is taken from the positions after it. When
    `val_count` is None it is `max(1, round(len * val_fraction))`, shrunk to leave room for an
    explicit `calib_count`, and 0 for a single sample. When `calib_count` is None it is every sample
    not held out. Explicit counts that need more samples than exist raise `CalibrationError`.
    Indices within each subset are sorted so that files are read in order.
    """
    _check_options(calib_count, val_count, val_fraction)
    total = len(samples)
    if total == 0:
        raise CalibrationError(f"calibration data {samples.description} contains no samples")
    if calib_count is not None and val_count is not None and calib_count + val_count > total:
        raise CalibrationError(
            f"asked for {calib_count} calibration + {val_count} validation samples but calibration data "
            f"{samples.description} has only {total}: lower --calib-samples or the validation count"
        )
    if calib_count is not None and calib_count > total:
        raise CalibrationError(
            f"asked for {calib_count} calibration samples but calibration data {samples.description} has only "
            f"{total}: lower --calib-samples to at most {total}"
        )
    if val_count is not None and calib_count is None and val_count >= total:
        raise CalibrationError(
            f"asked for {val_count} validation samples but calibration data {samples.description} has only "
            f"{total} and calibration needs at least 1: ask for at most {total - 1}"
        )
    if val_count is None:
        val_count = 0 if total < 2 else max(1, round(total * val_fraction))
        if calib_count is not None:
            val_count = min(val_count, total - calib_count)
    if calib_count is None:
        calib_count = total - val_count
    order = np.random.default_rng(seed).permutation(total)
    validation = sorted(int(i) for i in order[:val_count])
    calibration = sorted(int(i) for i in order[val_count : val_count + calib_count])
    return samples.subset(calibration), samples.subset(validation)


def _check_options(calib_count: int | None, val_count: int | None, val_fraction: float) -> None:
    if calib_count is not None and (not isinstance(calib_count, int) or calib_count < 1):
        raise PlanError(f"bad calibration sample count {calib_count!r}: expected a positive integer")
    if val_count is not None and (not isinstance(val_count, int) or val_count < 0):
        raise PlanError(f"bad validation sample count {val_count!r}: expected 0 or a positive integer")
    if not 0 < val_fraction < 1:
        raise PlanError(f"bad validation fraction {val_fraction!r}: expected a number between 0 and 1")


def draw_indices(total: int, count: int, seed: int) -> list[int]:
    """`count` distinct indices of `range(total)`, drawn with `seed` and sorted, in memory O(count).

    Used to pick samples from a source whose length may be huge (a factory's dataset): indices are
    drawn until `count` distinct ones are found, so `total` is never allocated; when `count` is more
    than half of `total`, a permutation (at most 2 x `count` long) is cheaper.
    """
    if count >= total:
        return list(range(total))
    rng = np.random.default_rng([seed, 7919])
    if count * 2 > total:
        return sorted(int(i) for i in rng.permutation(total)[:count])
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.update(int(i) for i in rng.integers(0, total, size=count - len(chosen)))
    return sorted(chosen)


def samples_needed(calib_count: int | None, val_count: int | None, val_fraction: float = 0.2) -> int | None:
    """How many samples `split_samples` will use from a source, when the counts decide it (else None).

    Both counts: their sum. Only the calibration count: it plus the validation share that
    `split_samples` would hold out of a source of exactly that size. A reader of an unbounded
    source (a factory) reads this many items and no more.
    """
    if calib_count is None:
        return None
    if val_count is not None:
        return calib_count + val_count
    return calib_count + max(1, math.ceil(calib_count * val_fraction / (1 - val_fraction)))
