"""The `distill` pass: recovery of a pruned digits CNN, the record, data rules and bad settings."""

import pytest
import torch
from torch import nn

from calibration import ListSampleSet, Sample
from exporter.errors import CompressionError, PlanError
from exporter.inputs import InputSpec
from exporter.passes import PASSES, PassContext
from tests.training.helpers import make_context, max_difference, run_pass, state

Distill = PASSES.get("distill")


def test_distill_is_registered_as_a_switch_after_the_compression_passes() -> None:
    assert (Distill.name, Distill.shorthand, Distill.order) == ("distill", None, 90)
    assert Distill.order > PASSES.get("prune").order and Distill.order > PASSES.get("lowrank").order
    config = Distill.Config()
    config.validate()
    assert Distill.Config.from_dict(config.to_dict(), "distill") == config


def test_distillation_recovers_a_pruned_cnn(teacher, pruned, calib, val) -> None:
    teacher_before = state(teacher)
    model, record = run_pass("distill", pruned, make_context(teacher, calib, val), epochs=3)
    summary = record.summary
    # Half the filters gone: the student barely agrees with the teacher; three epochs on the
    # 300 calibration samples bring it back above 95%.
    assert summary["before"]["agreement"] < 0.4
    assert summary["after"]["agreement"] >= 0.95
    assert summary["after"]["accuracy"] >= 0.93 and summary["teacher_accuracy"] == pytest.approx(0.9833, abs=1e-3)
    assert summary["after"]["loss"] < 0.3 * summary["before"]["loss"]
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2, 3]
    losses = [h["train_loss"] for h in summary["history"][1:]]
    assert losses == sorted(losses, reverse=True)
    assert (summary["epochs_run"], summary["samples_seen"], summary["nproc"]) == (3, 3 * 9 * 32, 1)
    assert summary["best_epoch"] in (2, 3) and summary["stopped_by"] == "epochs" and not summary["resumed"]
    assert summary["loss"] == ["kl"] and summary["seconds"] < 30
    assert (summary["agreement_before"], summary["agreement_after"]) == (
        summary["before"]["agreement"],
        summary["after"]["agreement"],
    )
    # The record describes the returned model, the input model and the teacher are untouched.
    assert record.params_after == record.params_before
    assert max_difference(state(teacher), teacher_before) == 0.0
    with torch.no_grad():
        x = torch.from_numpy(val[0].inputs["input"])[None]
        assert model(x).shape == (1, 10)
    assert max_difference(state(model), state(pruned)) > 0


def test_unlabelled_data_trains_on_soft_targets(teacher, pruned, calib, val) -> None:
    unlabelled = ListSampleSet([Sample(calib[i].inputs) for i in range(128)], "unlabelled digits")
    _, record = run_pass("distill", pruned, make_context(teacher, unlabelled, val), epochs=3, alpha=0.5)
    assert "the distillation data has no labels: trained on soft targets only" in record.notes
    assert record.summary["after"]["agreement"] > record.summary["before"]["agreement"] + 0.4


def test_data_setting_reads_any_calibration_source(teacher, pruned, val, sample_dir) -> None:
    ctx = make_context(teacher, None, val)
    _, record = run_pass("distill", pruned, ctx, epochs=1, data=str(sample_dir / "val.npz"))
    assert record.summary["train_samples"] == 300 and record.summary["samples_seen"] == 9 * 32


def test_without_a_validation_split_part_of_the_data_is_held_out(teacher, pruned, calib) -> None:
    _, record = run_pass("distill", pruned, make_context(teacher, calib, None), epochs=1)
    assert (record.summary["train_samples"], record.summary["val_samples"]) == (240, 60)
    assert "no validation split: held out 60 of the distill data to measure the student" in record.notes


def test_time_budget_stops_training(teacher, pruned, calib, val) -> None:
    _, record = run_pass("distill", pruned, make_context(teacher, calib, val), minutes=0.003)
    summary = record.summary
    assert summary["stopped_by"] == "time"
    assert 0 < summary["samples_seen"] and summary["seconds"] < 0.003 * 60 + 2.0


def test_no_data_at_all_is_a_clear_error(teacher, pruned) -> None:
    with pytest.raises(CompressionError, match=r"^distill needs data to train on: pass --distill-data PATH or --calib PATH"):
        run_pass("distill", pruned, make_context(teacher, None, None))


def test_unavailable_device_is_a_clear_error(teacher, pruned, calib, val) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(
        CompressionError, match=r"^distill teacher_device: cuda requested but torch.cuda.is_available\(\) is False"
    ):
        run_pass("distill", pruned, make_context(teacher, calib, val), teacher_device="cuda")


class Embedder(nn.Module):
    """A tiny embedding model: (N, 8) -> (N, 4, 2), so the auto loss is MSE."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1, 4, 2)


@pytest.mark.parametrize("loss", ["auto", "cosine"])
def test_embedding_outputs_use_a_regression_loss(loss: str) -> None:
    torch.manual_seed(0)
    teacher, student = Embedder().eval(), Embedder().eval()
    gen = torch.Generator().manual_seed(1)
    samples = ListSampleSet([Sample({"x": torch.randn(8, generator=gen).numpy()}) for _ in range(160)])
    ctx = PassContext(
        example_inputs=(torch.zeros(1, 8),),
        input_specs=[InputSpec("x", (1, 8))],
        teacher=teacher,
        calib=samples.subset(range(128)),
        val=samples.subset(range(128, 160)),
    )
    _, record = run_pass("distill", student, ctx, epochs=5, lr=0.01, loss=loss)
    summary = record.summary
    assert summary["loss"] == (["mse"] if loss == "auto" else ["cosine"])
    assert summary["before"]["agreement"] is None and summary["after"]["agreement"] is None
    assert summary["after"]["loss"] < 0.5 * summary["before"]["loss"]
    assert summary["after"]["cosine"] > summary["before"]["cosine"] + 0.2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0}, "bad distill temperature 0.0: expected a positive number such as 4"),
        ({"alpha": 1.5}, "bad distill alpha 1.5: expected a weight between 0 and 1 (1 = soft targets only)"),
        ({"epochs": 0}, "bad distill epochs 0: expected 1 or more"),
        ({"minutes": -1}, "bad distill minutes -1.0: expected a positive time budget"),
        ({"lr": 0}, "bad distill lr 0.0: expected a positive learning rate such as 0.001"),
        ({"nproc": 3}, "distill batch_size 32 does not split over 3 processes: use a multiple of 3"),
        ({"nproc": 0}, "bad distill nproc 0: expected 1 or more"),
        ({"nnodes": 2}, "distill nnodes 2 needs --distill-rdzv-endpoint host:port (the address of node 0)"),
        ({"node_rank": 1}, "bad distill node_rank 1: expected 0 .. 0 for 1 machine(s)"),
        ({"rdzv_endpoint": "node0"}, "bad distill rdzv_endpoint 'node0': expected host:port, e.g. 10.0.0.1:29500"),
        ({"teacher_device": "gpu"}, "bad device 'gpu' for distill teacher_device: expected cpu, cuda, cuda:N, mps or xpu"),
        ({"optimizer": "lamb"}, "bad value 'lamb' for distill.optimizer: expected one of adam, adamw, sgd"),
    ],
)
def test_bad_settings_raise_plan_errors(settings: dict, message: str) -> None:
    with pytest.raises(PlanError) as error:
        Distill.Config.from_dict(settings, "distill")
    assert str(error.value) == message
