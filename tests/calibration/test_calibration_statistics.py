"""Streaming calibration statistics: the same ranges as onnxruntime's all-at-once calibrators, in
memory that does not grow with the number of batches, and the same again when sharded over
torchrun processes.

Tolerances: minmax merges are min/max of the same floats, so they are compared exactly. The
histogram methods count every value into the bins onnxruntime would use for all values at once
(same range, same bin count), so the histograms are identical and so are the thresholds; the only
possible difference is float rounding of the model's outputs (another thread count or batch size
in another process) moving a value across a bin edge, which moves a threshold by at most one bin:
the tolerance is one bin width, 2 x max|x| / num_bins.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, load_tensors_data

from calibration import ListSampleSet, OrtCalibrationReader, Sample
from calibration.sharding import shard_bounds, sharding_of
from calibration.statistics import ExtremaStats, HistogramLayout, HistogramStats, RangeStats, collect_ranges
from calibration.uniform_reader import UniformBatchReader
from exporter.inputs import InputSpec
from exporter.training.settings import Rendezvous
from tests.calibration.models import write_conv_net

METHODS = {
    "minmax": {"calibrate_method": CalibrationMethod.MinMax, "extra_options": {"symmetric": False}},
    "minmax-symmetric": {"calibrate_method": CalibrationMethod.MinMax, "extra_options": {"symmetric": True}},
    "entropy": {
        "calibrate_method": CalibrationMethod.Entropy,
        "extra_options": {"symmetric": False, "num_bins": 512, "num_quantized_bins": 128},
    },
    "percentile-symmetric": {
        "calibrate_method": CalibrationMethod.Percentile,
        "extra_options": {"symmetric": True, "num_bins": 2048, "percentile": 99.9},
    },
    "percentile": {
        "calibrate_method": CalibrationMethod.Percentile,
        "extra_options": {"symmetric": False, "num_bins": 2048, "percentile": 99.9},
    },
    "distribution": {"calibrate_method": CalibrationMethod.Distribution, "extra_options": {"num_bins": 1024}},
}


class GeneratedReader:
    """`count` batches of `batch` random images made on demand (none kept), rewindable."""

    def __init__(self, count: int, batch: int = 4, seed: int = 1) -> None:
        self.count, self.batch, self.seed = count, batch, seed
        self.rewind()

    def rewind(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.done = 0

    def get_next(self):
        if self.done >= self.count:
            return None
        self.done += 1
        scale = 1.0 + (self.done % 5)  # later batches widen the range
        return {"input": (self.rng.standard_normal((self.batch, 3, 8, 8)) * scale).astype(np.float32)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_conv_net(tmp_path_factory.mktemp("statistics") / "convnet.onnx")


def all_at_once(model, reader, args, tmp_path):
    """onnxruntime's own calibrator over every batch in one `collect_data` call."""
    calibrator = create_calibrator(
        model, augmented_model_path=str(tmp_path / "reference_aug.onnx"), providers=["CPUExecutionProvider"],
        op_types_to_calibrate=None, **args,
    )
    calibrator.collect_data(reader)
    return calibrator.compute_data()


def assert_same_ranges(streamed, reference, bins: int | None, rtol: float = 0.0):
    assert sorted(streamed.keys()) == sorted(reference.keys())
    for name in reference.keys():
        expected = np.asarray(reference[name].range_value, dtype=np.float64)
        got = np.asarray(streamed[name].range_value, dtype=np.float64)
        if bins is None:
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=0, err_msg=name)
        else:
            edges = getattr(reference[name], "hist_edges", None)
            edges = expected if edges is None else np.asarray(edges)
            bin_width = 2 * float(np.abs(edges).max()) / bins
            np.testing.assert_allclose(got, expected, rtol=0, atol=bin_width, err_msg=name)


@pytest.mark.parametrize("name", list(METHODS))
def test_streamed_ranges_equal_onnxruntime_all_at_once(model, tmp_path, name):
    args = METHODS[name]
    reference = all_at_once(model, GeneratedReader(12), args, tmp_path)
    outcome = collect_ranges(model, GeneratedReader(12), {"op_types_to_calibrate": None, **args}, tmp_path / "work")
    assert outcome.batches == 12
    bins = args["extra_options"].get("num_bins") if name.startswith(("entropy", "percentile", "distribution")) else None
    assert_same_ranges(outcome.ranges, reference, bins)
    if name == "entropy":  # the histograms themselves are the same, bin for bin
        for tensor in reference.keys():
            np.testing.assert_array_equal(outcome.ranges[tensor].hist, reference[tensor].hist)


def test_ragged_last_batch_is_fine_where_onnxruntime_needs_uniform_batches(model, tmp_path):
    rng = np.random.default_rng(2)
    samples = ListSampleSet([Sample({"input": rng.standard_normal((3, 8, 8)).astype(np.float32)}) for _ in range(10)])
    specs = [InputSpec("input", (1, 3, 8, 8), "float32")]
    args = METHODS["percentile"]
    ragged = collect_ranges(model, OrtCalibrationReader(samples, specs, batch_size=4), {"op_types_to_calibrate": None, **args}, tmp_path / "r")
    uniform = all_at_once(model, UniformBatchReader(lambda: OrtCalibrationReader(samples, specs, batch_size=4)), args, tmp_path)
    assert ragged.batches == 3
    assert_same_ranges(ragged.ranges, uniform, args["extra_options"]["num_bins"])


def traced_peak(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["minmax", "percentile"])
def test_memory_does_not_grow_with_the_number_of_batches(model, tmp_path, name):
    """Traced allocations (numpy and Python) of 25 and 250 batches: the streamed collection stays flat,
    onnxruntime's all-at-once collection (the control, which shows this test can fail) grows. Every
    histogram method shares the collection measured here; they differ only in the final threshold search."""
    args = METHODS[name]
    settings = {"op_types_to_calibrate": None, **args}
    few = traced_peak(lambda: collect_ranges(model, GeneratedReader(25), settings, tmp_path / "few"))
    many = traced_peak(lambda: collect_ranges(model, GeneratedReader(250), settings, tmp_path / "many"))
    assert many < few * 1.25 + (256 << 10)
    if name == "percentile":
        control_few = traced_peak(lambda: all_at_once(model, GeneratedReader(25), args, tmp_path))
        control_many = traced_peak(lambda: all_at_once(model, GeneratedReader(250), args, tmp_path))
        assert control_many > 2 * control_few  # about 4x on 2026-12 onnxruntime 1.32


def test_merges_are_exact_and_order_free():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(1000).astype(np.float32) * s for s in (1, 3, 0.5)]
    layout = HistogramLayout("entropy", False, 64, 16, 99.9, "same")
    extrema_parts = []
    for part in parts:
        stats = ExtremaStats()
        stats.update("t", part)
        extrema_parts.append(stats)
    extrema = ExtremaStats.merge(extrema_parts)
    whole = np.concatenate(parts)
    assert extrema.extrema["t"] == (whole.min(), whole.max(), np.abs(whole).min(), np.abs(whole).max())
    histograms = []
    for part in parts:
        stats = HistogramStats()
        stats.update("t", part, layout, extrema.extrema["t"])
        histograms.append(stats)
    merged = HistogramStats.merge(histograms[::-1]).counts["t"]
    threshold = np.float32(np.abs(whole).max())
    expected, _ = np.histogram(whole, bins=64, range=(-threshold, threshold))
    np.testing.assert_array_equal(merged, expected)
    ranges = RangeStats.merge([RangeStats({"t": (np.float32(-1), np.float32(2))}), RangeStats({"t": (np.float32(-3), np.float32(1))}), RangeStats()])
    assert ranges.ranges["t"] == (-3, 2)


def test_shard_bounds_cover_every_batch_once():
    for batches in (1, 2, 7, 10, 31):
        for world in (1, 2, 3, 4):
            blocks = [shard_bounds(batches, world, rank) for rank in range(world)]
            covered = [b for start, end in blocks for b in range(start, end)]
            assert covered == list(range(batches))
            sizes = [end - start for start, end in blocks]
            assert max(sizes) - min(sizes) <= 1


def test_sharding_is_asked_by_the_reader_only_for_several_processes():
    samples = ListSampleSet([Sample({"input": np.zeros((3, 8, 8), np.float32)})])
    specs = [InputSpec("input", (1, 3, 8, 8), "float32")]
    assert sharding_of(OrtCalibrationReader(samples, specs)) is None
    assert sharding_of(OrtCalibrationReader(samples, specs, rendezvous=Rendezvous(nproc=1))) is None
    two = OrtCalibrationReader(samples, specs, batch_size=2, rendezvous=Rendezvous(nproc=2))
    wrapped = UniformBatchReader(lambda: two)
    source = sharding_of(wrapped)
    assert source is not None and source.batch_size == 2 and source.rendezvous.world_size == 2


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_two_processes_give_the_ranges_of_one(model, tmp_path, method):
    """`--calib-nproc 2`: torchrun with gloo; the merged ranges equal the one-process ranges."""
    from exporter.quantizers.static import calibrate_ranges, ort_static_arguments
    from targets.profile import QuantScheme

    rng = np.random.default_rng(3)
    samples = ListSampleSet([Sample({"input": (rng.standard_normal((3, 8, 8)) * (1 + i % 4)).astype(np.float32)}) for i in range(37)])
    specs = [InputSpec("input", (1, 3, 8, 8), "float32")]
    args = ort_static_arguments(dataclasses.replace(QuantScheme(), calibration_method=method))
    results = {}
    for nproc in (1, 2):
        folder = tmp_path / f"nproc{nproc}"
        folder.mkdir()
        reader = OrtCalibrationReader(samples, specs, batch_size=4, rendezvous=Rendezvous(nproc=nproc))
        batches = calibrate_ranges(model, reader, args, folder / "calibration.json")
        assert batches == 10  # 37 samples in batches of 4, over all processes
        results[nproc] = load_tensors_data(folder / "calibration.json")
    # Workers run one thread each: a convolution summed in another order may differ in the last
    # float bits, hence rtol 1e-5 for the extremes (and one bin for histograms, see the module docstring).
    bins = None if method == "minmax" else args.calibrator["extra_options"]["num_bins"]
    assert_same_ranges(results[2], results[1], bins, rtol=1e-5)


def test_two_machines_meet_at_the_rendezvous_endpoint(model, tmp_path):
    """Two "machines" (two parents on this host, node ranks 0 and 1, one process each, node 0's
    address as the endpoint) calibrate their halves and both get the one-process ranges."""
    import socket
    import threading

    from exporter.quantizers.static import calibrate_ranges, ort_static_arguments
    from targets.profile import QuantScheme

    rng = np.random.default_rng(4)
    samples = ListSampleSet([Sample({"input": rng.standard_normal((3, 8, 8)).astype(np.float32)}) for _ in range(37)])
    specs = [InputSpec("input", (1, 3, 8, 8), "float32")]
    args = ort_static_arguments(dataclasses.replace(QuantScheme(), calibration_method="percentile"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    batches, failures = {}, []

    def machine(rank: int) -> None:
        folder = tmp_path / f"node{rank}"
        folder.mkdir()
        rendezvous = Rendezvous(nproc=1, nnodes=2, node_rank=rank, endpoint=f"127.0.0.1:{port}")
        try:
            batches[rank] = calibrate_ranges(model, OrtCalibrationReader(samples, specs, 4, rendezvous=rendezvous), args, folder / "calibration.json")
        except Exception as error:  # reported below, on the test's thread
            failures.append(error)

    threads = [threading.Thread(target=machine, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not failures, failures
    assert batches == {0: 10, 1: 10}
    (tmp_path / "one").mkdir()
    calibrate_ranges(model, OrtCalibrationReader(samples, specs, 4), args, tmp_path / "one" / "calibration.json")
    one = load_tensors_data(tmp_path / "one" / "calibration.json")
    for rank in (0, 1):
        merged = load_tensors_data(tmp_path / f"node{rank}" / "calibration.json")
        assert_same_ranges(merged, one, args.calibrator["extra_options"]["num_bins"])
