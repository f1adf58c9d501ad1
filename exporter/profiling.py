"""onnxruntime's profiler at one thread: the kernel events of a model run on one feed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_SUFFIX = "_kernel_time"


def kernel_events(path: Path, feed: dict[str, np.ndarray], runs: int, warmup: int) -> list[dict[str, Any]]:
    """The profiler's kernel events (`cat` Node, name ending in `_kernel_time`) of `warmup + runs` runs, one thread."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="exporter-profile-") as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    return [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)]
