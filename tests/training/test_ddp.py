"""Distributed recovery: two torchrun processes train the same student as one process."""

import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

from exporter.errors import CompressionError
from exporter.training.ddp import _failure_message, save_module, worker_command
from exporter.training.settings import Rendezvous
from exporter.training.syncbn import SharedBatchNorm, share_batch_statistics
from tests.training.helpers import make_context, max_difference, run_pass, state


def test_two_processes_train_the_same_student_as_one(teacher, pruned, calib, val, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ctx = make_context(teacher, calib.subset(range(128)), val.subset(range(64)))
    settings = {"epochs": 2, "batch_size": 32, "lr": 2e-3}
    one, one_record = run_pass("distill", pruned, ctx, **settings)
    two, two_record = run_pass("distill", pruned, ctx, nproc=2, **settings)
    # 8 steps of batch 32 (2 x 16 per step with two processes), batch statistics shared across
    # processes: only the order of float sums differs.
    assert two_record.summary["nproc"] == 2 and two_record.summary["world_size"] == 2
    assert two_record.summary["samples_seen"] == one_record.summary["samples_seen"] == 2 * 4 * 32
    assert max_difference(state(one), state(pruned)) > 1e-2
    assert max_difference(state(two), state(one)) < 1e-4
    for key in ("agreement", "accuracy"):
        assert two_record.summary["after"][key] == one_record.summary["after"][key]
    assert two_record.summary["after"]["loss"] == pytest.approx(one_record.summary["after"]["loss"], rel=1e-4)
    losses = lambda record: [h["train_loss"] for h in record.summary["history"][1:]]  # noqa: E731
    assert losses(two_record) == pytest.approx(losses(one_record), rel=1e-4)


def test_rendezvous_flags() -> None:
    assert Rendezvous(nproc=2).torchrun_flags() == ["--standalone", "--nproc_per_node", "2"]
    assert Rendezvous(nproc=4, nnodes=2, node_rank=1, endpoint="10.0.0.1:29400").torchrun_flags() == [
        "--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29400",
    ]
    assert Rendezvous(nproc=4, nnodes=2).world_size == 8
    command = worker_command("/tmp/job", Rendezvous(nproc=2))
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert command[-3:] == ["-m", "exporter.training.worker", "/tmp/job"]


def test_a_student_the_workers_cannot_load_is_refused_before_launch(tmp_path) -> None:
    class Local(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(CompressionError, match=r"^nproc > 1 needs the student saved for the worker processes"):
        save_module(Local(), tmp_path / "student.pt", "student")


def test_a_worker_error_comes_back_as_its_own_message(tmp_path) -> None:
    log = tmp_path / "torchrun.log"
    log.write_text("starting\nChildFailedError: exporter.training.worker FAILED\n")
    assert _failure_message(tmp_path, 1, log) == (
        "torchrun exited with code 1 before training finished: starting | ChildFailedError: exporter.training.worker FAILED"
    )
    (tmp_path / "error-1.json").write_text(json.dumps({"rank": 1, "message": "the training loss became nan"}))
    assert _failure_message(tmp_path, 1, log) == "distributed training failed on rank 1: the training loss became nan"


def test_shared_batch_norm_equals_batch_norm_in_a_group_of_one(tmp_path) -> None:
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4).train()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    shared = nn.Sequential(nn.BatchNorm2d(4)).train()
    shared[0].load_state_dict(reference.state_dict())
    x = torch.randn(6, 4, 3, 3) * 3 + 1
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        undo = share_batch_statistics(shared)
        assert type(shared[0]) is SharedBatchNorm
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        out1, out2 = reference(x1), shared(x2)
        (out1 * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
        (out2 * torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
    finally:
        dist.destroy_process_group()
    undo()
    assert type(shared[0]) is nn.BatchNorm2d
    torch.testing.assert_close(out2, out1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared[0].weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared[0].running_mean, reference.running_mean)
    torch.testing.assert_close(shared[0].running_var, reference.running_var)
