"""Checkpoints: a run stopped after epoch 2 resumes at epoch 2 and ends with the same student."""

import pytest

import exporter.training.loop as loop
from exporter.errors import CompressionError
from tests.training.helpers import make_context, max_difference, run_pass, state


class Crash(Exception):
    """Stands for the process dying (power cut, Ctrl-C) right after a checkpoint was written."""


def crash_after_checkpoints(monkeypatch, count: int) -> None:
    real_save, saved = loop._save, []

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == count:
            raise Crash

    monkeypatch.setattr(loop, "_save", save_then_crash)


@pytest.fixture
def subset(calib):
    return calib.subset(range(128))


def test_resume_continues_where_it_stopped(teacher, pruned, subset, val, tmp_path, monkeypatch) -> None:
    ctx = make_context(teacher, subset, val, work_dir=tmp_path)
    whole, whole_record = run_pass("distill", pruned, ctx, epochs=4, checkpoint_dir=str(tmp_path / "whole"))

    with monkeypatch.context() as patch:
        crash_after_checkpoints(patch, 2)
        with pytest.raises(Crash):
            run_pass("distill", pruned, ctx, epochs=4)
    assert (tmp_path / "distill" / "checkpoint.pt").is_file()

    resumed, record = run_pass("distill", pruned, ctx, epochs=4, resume=True)
    summary = record.summary
    assert summary["resumed"] and summary["resumed_at"] == {"epoch": 2, "step": 0}
    assert (summary["epochs_run"], summary["epochs_done"]) == (2, 4)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2, 3, 4]
    assert summary["samples_seen"] == whole_record.summary["samples_seen"] == 4 * 4 * 32
    assert summary["history"][:3] == [
        {**h, "seconds": summary["history"][i]["seconds"]} for i, h in enumerate(whole_record.summary["history"][:3])
    ]
    assert max_difference(state(resumed), state(whole)) < 1e-6
    assert summary["after"] == whole_record.summary["after"]


def test_resume_may_extend_the_run(teacher, pruned, subset, val, tmp_path) -> None:
    ctx = make_context(teacher, subset, val, work_dir=tmp_path)
    run_pass("distill", pruned, ctx, epochs=1, schedule="constant")
    _, record = run_pass("distill", pruned, ctx, epochs=2, schedule="constant", resume=True)
    assert record.summary["resumed_at"] == {"epoch": 1, "step": 0}
    assert (record.summary["epochs_run"], record.summary["epochs_done"]) == (1, 2)


def test_resume_refuses_a_checkpoint_of_another_run(teacher, pruned, subset, val, tmp_path) -> None:
    ctx = make_context(teacher, subset, val, work_dir=tmp_path)
    run_pass("distill", pruned, ctx, epochs=1)
    with pytest.raises(CompressionError) as error:
        run_pass("distill", pruned, ctx, epochs=1, lr=0.01, resume=True)
    assert str(error.value) == (
        f"checkpoint {tmp_path / 'distill' / 'checkpoint.pt'} was written with lr=0.001 but this run has lr=0.01: "
        "use the same settings to resume, or drop --resume to start over"
    )
    with pytest.raises(CompressionError, match=r"was written for a different student model \(shapes differs\)"):
        run_pass("distill", teacher, ctx, epochs=1, resume=True)


def test_resume_without_a_checkpoint_starts_over(teacher, pruned, subset, val, tmp_path) -> None:
    _, record = run_pass("distill", pruned, make_context(teacher, subset, val, work_dir=tmp_path), epochs=1, resume=True)
    assert not record.summary["resumed"] and record.summary["epochs_run"] == 1
    assert f"--resume: no checkpoint in {tmp_path / 'distill'}, started from the beginning" in record.notes
