"""Recovery from a few hundred unlabelled samples: augmentation, pruning lineage, feature matching, early stopping, DDP.

The models are a small CNN trained here for a few seconds on scikit-learn's handwritten digits
(real images, so the weights have real statistics), pruned by the real `prune` pass.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from calibration import ListSampleSet, Sample
from exporter.inputs import InputSpec
from exporter.passes import PASSES, PassContext
from exporter.passes._lineage import kept_channels, record_kept_channels
from exporter.program_graph import capture, lift
from exporter.training import augment as aug
from exporter.training.features import FeatureLayer, FeatureMatch, choose_layers

SPECS = [InputSpec("x", (1, 1, 16, 16))]


class DigitsNet(nn.Module):
    """Three conv+BN+ReLU stages on 1x16x16 digits, global pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48)
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """sklearn's 1,797 digits upsampled to 16x16 in [0, 1], shuffled: 1,000 to train, 300 calib, 300 test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.kron(data.images / 16.0, np.ones((2, 2))).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], data.target[order].astype(np.int64)
    return {
        "train_x": images[:1000], "train_y": labels[:1000],
        "calib_x": images[1000:1300], "test_x": images[1300:1600],
    }  # fmt: skip


@pytest.fixture(scope="module")
def teacher(digits) -> DigitsNet:
    """DigitsNet trained for 6 epochs (about 95 steps) on 1,000 labelled digits."""
    torch.manual_seed(0)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(digits["train_x"]), torch.from_numpy(digits["train_y"])
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    for epoch in range(6):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(x), 64):
            rows = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.set_num_threads(previous)
    return model.eval()


def context(teacher, digits, calib_count: int = 300) -> PassContext:
    """Unlabelled calibration samples only; no validation split (the pass holds out 20% itself)."""
    calib = ListSampleSet([Sample({"x": row}) for row in digits["calib_x"][:calib_count]], "digits calib")
    return PassContext(example_inputs=(torch.zeros(2, 1, 16, 16),), input_specs=SPECS, teacher=teacher, calib=calib)


def run_pass(name, model, ctx, **settings):
    cls = PASSES.get(name)
    return cls(cls.Config.from_dict(settings, name)).run(model, ctx)


def agreement(model: nn.Module, teacher: nn.Module, x: np.ndarray) -> float:
    """Top-1 agreement with the teacher on `x` (eval mode)."""
    with torch.no_grad():
        batch = torch.from_numpy(x)
        return float((model.eval()(batch).argmax(1) == teacher(batch).argmax(1)).float().mean())


# -- augmentation ---------------------------------------------------------------------------------


def test_augmentation_keeps_shapes_and_is_fixed_by_seed_epoch_and_step() -> None:
    images = np.random.default_rng(1).random((8, 3, 24, 20), dtype=np.float32)
    ids = np.arange(8 * 5).reshape(8, 5)
    batch = aug.augment({"x": images, "ids": ids}, "light", True, seed=3, epoch=0, step=0)
    assert batch.inputs["x"].shape == images.shape and batch.inputs["x"].dtype == np.float32
    assert batch.inputs["ids"] is ids  # integer inputs are never changed...
    assert not batch.mixed  # ...so the images are not blended either (ids cannot follow)
    batch = aug.augment({"x": images}, "light", True, seed=3, epoch=0, step=0)
    again = aug.augment({"x": images}, "light", True, seed=3, epoch=0, step=0)
    assert np.array_equal(again.inputs["x"], batch.inputs["x"]) and np.array_equal(again.lam, batch.lam)
    for other in (dict(seed=4, epoch=0, step=0), dict(seed=3, epoch=1, step=0), dict(seed=3, epoch=0, step=1)):
        different = aug.augment({"x": images}, "light", True, **other)
        assert np.abs(different.inputs["x"] - batch.inputs["x"]).mean() > 0.05
    assert np.abs(batch.inputs["x"] - images).mean() > 0.05
    # Mixing: the own sample always weighs at least half; unmixed samples are their own partners.
    assert ((batch.lam >= 0.5) & (batch.lam <= 1.0)).all()
    assert (batch.partner[batch.lam == 1.0] == np.arange(8)[batch.lam == 1.0]).all()


def test_auto_augments_images_only() -> None:
    assert aug.resolve_mode("auto", {"x": np.zeros((2, 3, 32, 32), np.float32)}) == "light"
    assert aug.resolve_mode("auto", {"mels": np.zeros((2, 160, 40), np.float32)}) == "none"
    assert aug.resolve_mode("auto", {"ids": np.zeros((2, 1, 16, 16), np.int64)}) == "none"
    assert aug.resolve_mode("auto", {"tiny": np.zeros((2, 3, 4, 4), np.float32)}) == "none"
    assert aug.resolve_mode("strong", {"mels": np.zeros((2, 160, 40), np.float32)}) == "strong"
    # A short run is not augmented unless asked: it would only slow the student down.
    assert aug.resolve_mode("auto", {"x": np.zeros((2, 3, 32, 32), np.float32)}, epochs=19) == "none"
    assert aug.resolve_mode("auto", {"x": np.zeros((2, 3, 32, 32), np.float32)}, epochs=20) == "light"
    assert aug.resolve_mode("light", {"x": np.zeros((2, 3, 32, 32), np.float32)}, epochs=3) == "light"
    # A sequence input gets gentle noise only: no crop, no mixing.
    mels = np.random.default_rng(0).standard_normal((4, 160, 40)).astype(np.float32)
    noisy = aug.augment({"mels": mels}, "light", True, seed=0, epoch=0, step=0)
    assert 0 < np.abs(noisy.inputs["mels"] - mels).max() < 0.1 and not noisy.mixed


def test_flip_mirrors_about_half_the_images_and_can_be_switched_off(monkeypatch) -> None:
    # Whole-image crops, no noise, no mixing: what is left is the flip.
    monkeypatch.setitem(aug.RECIPES, "light", aug.AugmentRecipe((1.0, 1.0), 0.0, 0.0, 1.0, 0.0, (1.0, 1.0)))
    images = np.random.default_rng(2).random((64, 1, 10, 12), dtype=np.float32)
    kept = aug.augment({"x": images}, "light", False, seed=0, epoch=0, step=0).inputs["x"]
    np.testing.assert_allclose(kept, images, atol=1e-5)
    flipped = aug.augment({"x": images}, "light", True, seed=0, epoch=0, step=0).inputs["x"]
    mirrored = [bool(np.allclose(flipped[i], images[i, :, :, ::-1], atol=1e-5)) for i in range(64)]
    unchanged = [bool(np.allclose(flipped[i], images[i], atol=1e-5)) for i in range(64)]
    assert all(m != u for m, u in zip(mirrored, unchanged))
    assert 16 <= sum(mirrored) <= 48


def test_flip_auto_asks_the_teacher_whether_mirrored_images_keep_their_class() -> None:
    images = np.random.default_rng(3).random((32, 1, 12, 12), dtype=np.float32)
    images[:16, :, :, :6] += 1.0  # the bright half says the class: left (0) for the first 16, right (1) for the rest
    images[16:, :, :, 6:] += 1.0

    def sided(batch: dict[str, np.ndarray]) -> torch.Tensor:  # a teacher that reads which side is bright
        x = torch.from_numpy(batch["x"])
        return torch.stack([x[..., :6].mean((1, 2, 3)), x[..., 6:].mean((1, 2, 3))], 1)

    def symmetric(batch: dict[str, np.ndarray]) -> torch.Tensor:  # a teacher that ignores the side
        x = torch.from_numpy(batch["x"])
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)

    flip, why = aug.decide_flip("auto", sided, {"x": images})
    assert not flip and why == "flip off (the teacher's class changes on 100% of mirrored held-out images)"
    flip, why = aug.decide_flip("auto", symmetric, {"x": images})
    assert flip and why == "flip on (the teacher's class stays the same on 100% of mirrored held-out images)"
    assert aug.decide_flip("on", sided, {"x": images}) == (True, "flip on")
    assert aug.decide_flip("off", symmetric, {"x": images}) == (False, "flip off")
    # A teacher of feature maps: the cosine between its outputs on mirrored and original images decides.
    flip, why = aug.decide_flip("auto", lambda b: torch.from_numpy(b["x"][:, 0] - 0.5), {"x": images})
    assert not flip and why.startswith("flip off (the teacher's outputs on mirrored held-out images have cosine ")


def test_mixed_labels_are_distributions_over_the_two_samples_labels() -> None:
    images = np.random.default_rng(0).random((16, 1, 12, 12), dtype=np.float32)
    batch = aug.augment({"x": images}, "strong", True, seed=0, epoch=0, step=0)
    assert batch.mixed
    labels = np.arange(16) % 5
    positions = aug.chunk_positions(16, 1, 2)  # the second process's chunk
    targets = batch.label_targets(labels, positions, 5)
    assert targets.shape == (8, 5)
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    for row, position in enumerate(positions):
        assert targets[row, labels[position]] >= batch.lam[position] - 1e-6
        assert targets[row, labels[batch.partner[position]]] >= 1.0 - batch.lam[position] - 1e-6


# -- lineage --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lifted", [False, True], ids=["module", "lifted-program"])
def test_lineage_composes_across_two_prunes(teacher, digits, lifted) -> None:
    ctx = context(teacher, digits, 64)
    model = lift(capture(copy.deepcopy(teacher), ctx.example_inputs)) if lifted else teacher
    once, _ = run_pass("prune", model, ctx, ratio=0.5)
    first = kept_channels(once)
    twice, _ = run_pass("prune", once, ctx, ratio=0.5)
    lineage = kept_channels(twice)
    assert set(lineage) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
    assert [len(lineage[n]) for n in ("conv1", "conv2", "conv3")] == [4, 8, 12]
    for name in ("conv1", "conv2", "conv3"):
        assert set(lineage[name]) < set(first[name]) and lineage[name] == sorted(lineage[name])
    # The composed indices name the ORIGINAL channels: the first conv (whose inputs were not cut)
    # holds exactly the teacher's filters at those indices, and each BN the teacher's scales.
    assert torch.equal(twice.get_submodule("conv1").weight, teacher.conv1.weight[lineage["conv1"]])
    for bn in ("bn1", "bn2", "bn3"):
        assert torch.equal(twice.get_submodule(bn).weight, getattr(teacher, bn).weight[lineage[bn]])
    assert kept_channels(teacher) == {}


def test_lineage_of_a_plain_module_is_kept_on_the_module() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 1))
    record_kept_channels(model, "0", [1, 3, 5, 7])
    record_kept_channels(model, "0", [0, 3])
    assert kept_channels(copy.deepcopy(model)) == {"0": [1, 7]}


# -- feature matching -----------------------------------------------------------------------------


def _feature_loss(student, teacher, layers, x) -> float:
    match = FeatureMatch.attach(student.eval(), teacher, layers)
    batch = torch.from_numpy(x)
    match.calibrate(lambda: (teacher(batch), student(batch)))
    match.set_active(True)
    with torch.no_grad():
        teacher(batch), student(batch)
    loss = match.loss(torch.device("cpu"))
    match.close()
    return float(loss.mean())


def test_feature_loss_is_zero_for_an_unpruned_copy_and_positive_after_a_change(teacher, digits) -> None:
    layers = [FeatureLayer(name, tuple(range(size))) for name, size in (("bn2", 32), ("bn3", 48))]
    x = digits["test_x"][:64]
    copy_ = copy.deepcopy(teacher)
    assert _feature_loss(copy_, teacher, layers, x) == 0.0
    with torch.no_grad():
        copy_.conv2.weight.add_(0.05 * torch.randn(copy_.conv2.weight.shape, generator=torch.Generator().manual_seed(0)))
    changed = _feature_loss(copy_, teacher, layers, x)
    assert changed > 0.01


def test_features_of_a_pruned_student_line_up_with_the_teachers_kept_channels(teacher, digits) -> None:
    pruned, _ = run_pass("prune", teacher, context(teacher, digits, 64), ratio=0.5)
    layers, notes = choose_layers(pruned, teacher, kept_channels(pruned), limit=4)
    assert [layer.name for layer in layers] == ["bn1", "bn2", "bn3"] and notes == []  # BN outputs preferred
    x = digits["test_x"][:64]
    # conv1 reads the untouched input: its kept channels are the teacher's exactly; deeper layers lost inputs.
    conv1 = FeatureLayer("conv1", tuple(kept_channels(pruned)["conv1"]))
    assert _feature_loss(pruned, teacher, [conv1], x) < 1e-10
    assert _feature_loss(pruned, teacher, layers[2:], x) > 0.05
    # BatchNorms folded into the convs after pruning: a conv's output is no longer the teacher's conv output.
    folded, _ = run_pass("fold_bn", pruned, context(teacher, digits, 64))
    assert choose_layers(folded, teacher, kept_channels(folded)) == (
        [], ["feature matching off: normalisation layers were folded into the pruned convs, whose outputs are then "
             "not the teacher's"],
    )
    evenly = choose_layers(pruned, teacher, kept_channels(pruned), limit=2)[0]
    assert [layer.name for layer in evenly] == ["bn2", "bn3"]  # evenly spaced, ending with the deepest


# -- recovery, early stopping, processes ----------------------------------------------------------


def test_augmented_feature_distillation_recovers_a_pruned_cnn_from_unlabelled_samples(teacher, digits) -> None:
    ctx = context(teacher, digits)
    pruned, _ = run_pass("prune", teacher, ctx, ratio=0.5)
    test_x = digits["test_x"]
    assert agreement(teacher, teacher, test_x) == 1.0
    before = agreement(pruned, teacher, test_x)
    student, record = run_pass("distill", pruned, ctx, epochs=30, patience=None, lr=3e-3)
    summary = record.summary
    after = agreement(student, teacher, test_x)
    assert summary["augment"] == "light" and summary["feature_layers"] == ["bn1", "bn2", "bn3"]
    assert summary["train_samples"] == 240 and summary["epochs_run"] == 30
    # 300 test digits no pass saw: about 0.24 after pruning, about 0.89 after 30 epochs on 240 unlabelled digits.
    assert before < 0.5
    assert after > 0.8 and after > before + 0.4
    # A mirrored digit is another digit to the teacher, so the augmentation does not mirror them.
    assert any("augmented the training batches (light" in note and "flip off" in note for note in record.notes)


def test_early_stopping_ends_a_run_that_cannot_improve(teacher, digits) -> None:
    # The student is the teacher itself: every gradient is zero, so no epoch beats epoch 0.
    student, record = run_pass(
        "distill", copy.deepcopy(teacher), context(teacher, digits, 96), epochs=30, patience=3, batchnorm="frozen"
    )
    summary = record.summary
    assert summary["stopped_by"] == "patience" and summary["epochs_run"] == 3 and summary["best_epoch"] == 0
    assert summary["after"]["agreement"] == 1.0
    assert any("did not improve" in note for note in record.notes)


def test_default_epochs_suit_a_few_hundred_samples() -> None:
    from exporter.training.settings import TrainSettings

    assert TrainSettings(target_samples=20_000).epoch_limit(240) == 84
    assert TrainSettings(target_samples=20_000).epoch_limit(100_000) == 10
    assert TrainSettings(target_samples=20_000).epoch_limit(5) == 300
    assert TrainSettings(target_samples=20_000, epochs=3).epoch_limit(240) == 3
    assert TrainSettings(target_samples=20_000, minutes=1.0).epoch_limit(240) is None
    assert TrainSettings().epoch_limit(240) == 10


def test_two_processes_distill_a_lifted_pruned_graph_like_one(teacher, digits, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # As in the pipeline: student and teacher are both lifted graphs of the captured program.
    program = capture(copy.deepcopy(teacher), (torch.zeros(2, 1, 16, 16),))
    ctx = context(lift(program), digits, 160)
    pruned, _ = run_pass("prune", lift(program), ctx, ratio=0.5)
    assert isinstance(pruned, torch.fx.GraphModule) and kept_channels(pruned)
    settings = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "augment": "light"}
    one, one_record = run_pass("distill", pruned, ctx, **settings)
    two, two_record = run_pass("distill", pruned, ctx, nproc=2, **settings)
    assert two_record.summary["world_size"] == 2
    # Augmentation and feature matching travelled to the workers: the same views, layers and student.
    for key in ("augment", "feature_layers", "samples_seen"):
        assert two_record.summary[key] == one_record.summary[key]
    assert one_record.summary["feature_layers"] == ["bn1", "bn2", "bn3"] and one_record.summary["augment"] == "light"
    one_state, two_state = one.state_dict(), two.state_dict()
    assert max(float((one_state[k] - pruned.state_dict()[k]).abs().max()) for k in one_state) > 1e-2
    assert max(float((one_state[k] - two_state[k]).abs().max()) for k in one_state) < 1e-4
    losses = lambda record: [h["train_loss"] for h in record.summary["history"][1:]]  # noqa: E731
    assert losses(two_record) == pytest.approx(losses(one_record), rel=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"patience": 0}, "bad distill patience 0: expected 1 or more epochs, or none"),
        ({"feature_weight": -0.5}, "bad distill feature_weight -0.5: expected 0 or more"),
        ({"feature_layers": 0}, "bad distill feature_layers 0: expected 1 or more"),
        ({"augment": "heavy"}, "bad value 'heavy' for distill.augment: expected one of auto, none, light, strong"),
        ({"flip": "yes"}, "bad value 'yes' for distill.flip: expected one of auto, on, off"),
    ],
)
def test_bad_recovery_settings_are_one_line_plan_errors(settings, message) -> None:
    from exporter.errors import PlanError

    with pytest.raises(PlanError, match=message):
        PASSES.get("distill").Config.from_dict(settings, "distill")


def test_patience_counts_epochs_since_the_best_agreement_or_the_lowest_loss() -> None:
    from exporter.training.loop import World, _out_of_patience

    history = [
        {"epoch": 0, "agreement": 0.50, "loss": 1.00},
        {"epoch": 1, "agreement": 0.60, "loss": 0.90},
        {"epoch": 2, "agreement": 0.60, "loss": 0.80},  # same agreement, closer to the teacher: still improving
        {"epoch": 3, "agreement": 0.60, "loss": 0.85},
    ]
    assert not _out_of_patience(2, history, World())
    assert _out_of_patience(2, [*history, {"epoch": 4, "agreement": 0.60, "loss": 0.81}], World())
    assert not _out_of_patience(2, [*history, {"epoch": 4, "agreement": 0.62, "loss": 0.95}], World())
    assert not _out_of_patience(None, [*history, *({"epoch": e, "agreement": 0.1, "loss": 9.0} for e in range(4, 40))], World())
    # Outputs without agreement (embeddings, regression): the loss alone.
    losses = [{"epoch": e, "agreement": None, "loss": loss} for e, loss in enumerate((1.0, 0.5, 0.6, 0.7))]
    assert _out_of_patience(2, losses, World()) and not _out_of_patience(3, losses, World())


def test_the_kept_student_is_the_one_with_the_lowest_held_out_loss_then_agreement() -> None:
    """The 4x MobileNetV2's 150-epoch run: epoch 50 spiked to 0.985 agreement at twice epoch 150's loss."""
    from exporter.training.evaluate import score

    epoch_50 = {"agreement": 0.985, "loss": 0.093}
    epoch_150 = {"agreement": 0.97, "loss": 0.044}
    assert max([epoch_50, epoch_150], key=score) is epoch_150
    tied = [{"agreement": 0.95, "loss": 0.05}, {"agreement": 0.96, "loss": 0.05}]
    assert max(tied, key=score) is tied[1]
    assert score({"agreement": None, "loss": 0.2}) > score({"agreement": None, "loss": 0.3})  # regression outputs
