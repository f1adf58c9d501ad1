"""The search's cache: unit timings and per-unit errors, kept in the output folder between runs.

Both are costly to measure (one profile per model form, one session per unit) and depend only on
the float model, the plain int8 model (itself a product of the calibration data and the scheme),
the calibration batches used for ranking and this CPU. `cache_key` hashes those; a re-run with
another goal or time budget finds the same key and skips the measurements.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from exporter.accuracy.latency import UnitTiming

CACHE_FILE = "search-cache.json"
VERSION = 1


def cache_key(files: Sequence[Path], feeds: Sequence[dict[str, np.ndarray]], scheme: str) -> str:
    """sha256 over the files' bytes, the feeds' arrays, the scheme text, the CPU and the format version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    digest.update(scheme.encode())
    digest.update(f"{platform.machine()}|{platform.processor()}|v{VERSION}".encode())
    return digest.hexdigest()


@dataclass
class SearchCache:
    """What one key remembers: `timings` and `errors_db` per unit, and `speed_set`, the units the speed
    decision put in float after profiling in place (any may be empty)."""

    key: str
    timings: dict[str, UnitTiming] = field(default_factory=dict)
    errors_db: dict[str, float] = field(default_factory=dict)
    speed_set: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for the cache file."""
        return {
            "version": VERSION,
            "key": self.key,
            "timings": {k: v.to_dict() for k, v in self.timings.items()},
            "errors_db": dict(self.errors_db),
            "speed_set": list(self.speed_set),
        }


def load_cache(path: Path | None, key: str) -> SearchCache:
    """The cache stored at `path` when its key is `key`, else an empty one (a bad file counts as none)."""
    empty = SearchCache(key)
    if path is None or not Path(path).is_file():
        return empty
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") != VERSION or data.get("key") != key:
            return empty
        timings = {k: UnitTiming(float(v["int8_ms"]), float(v["float_ms"])) for k, v in data.get("timings", {}).items()}
        errors = {k: float(v) for k, v in data.get("errors_db", {}).items()}
        speed = [str(n) for n in data.get("speed_set", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return empty
    return SearchCache(key, timings, errors, speed)


def save_cache(path: Path, cache: SearchCache) -> None:
    """Write the cache file (plain JSON)."""
    Path(path).write_text(json.dumps(cache.to_dict(), indent=1) + "\n", encoding="utf-8")
