"""The step order and sharding that make N processes train like one."""

import numpy as np
import pytest

from calibration import ListSampleSet, Sample
from exporter.inputs import InputSpec
from exporter.training.data import ArrayData, SampleData, epoch_steps, shard, steps_per_epoch, write_arrays


def test_full_batches_only_unless_the_set_is_smaller_than_one() -> None:
    assert steps_per_epoch(300, 32) == 9
    assert steps_per_epoch(20, 32) == 1
    steps = epoch_steps(300, 32, seed=0, epoch=0)
    assert len(steps) == 9 and all(len(s) == 32 for s in steps)
    assert len(set(np.concatenate(steps))) == 288
    assert [len(s) for s in epoch_steps(20, 32, seed=0, epoch=0)] == [20]


def test_order_depends_on_seed_and_epoch_only() -> None:
    first = epoch_steps(100, 10, seed=3, epoch=1)
    again = epoch_steps(100, 10, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], epoch_steps(100, 10, seed=3, epoch=2)[0])
    assert not np.array_equal(first[0], epoch_steps(100, 10, seed=4, epoch=1)[0])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_split_a_step_exactly(world: int) -> None:
    step = np.arange(10, 20)
    parts = [shard(step, rank, world) for rank in range(world)]
    assert np.array_equal(np.concatenate(parts), step)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_arrays_written_for_workers_read_back_the_same(tmp_path) -> None:
    rng = np.random.default_rng(0)
    samples = ListSampleSet(
        [Sample({"x": rng.standard_normal((2, 3)).astype(np.float32)}, label=i % 3) for i in range(7)]
    )
    data = SampleData(samples, [InputSpec("x", (1, 2, 3))])
    write_arrays(data, tmp_path / "arrays", batch_size=3)
    copy = ArrayData.load(tmp_path / "arrays")
    assert len(copy) == 7 and copy.has_labels
    inputs, labels = copy.batch([6, 0, 3])
    expected_inputs, expected_labels = data.batch([6, 0, 3])
    np.testing.assert_array_equal(inputs["x"], expected_inputs["x"])
    np.testing.assert_array_equal(labels, expected_labels)
