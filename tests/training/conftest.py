"""Fixtures for the training tests: the bundled digits teacher, its data, and a 50%-pruned student.

Everything runs on one thread: the machine may be shared, and several threads fighting over two
cores make tiny models much slower, not faster.
"""

from __future__ import annotations

import pytest
import torch

from calibration import bind_to_inputs, open_samples
from samples.architectures import DigitsCNN
from tests.training.helpers import DIGITS, make_context, run_pass


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def teacher() -> DigitsCNN:
    """The trained digits CNN (validation accuracy 0.9833), in eval mode."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(DIGITS / "digits_cnn.state_dict.pt"))
    return model.eval()


@pytest.fixture(scope="session")
def calib():
    """The 300 labelled calibration samples, keyed by the model's input name."""
    return bind_to_inputs(open_samples(str(DIGITS / "calib.npz")), ["input"])


@pytest.fixture(scope="session")
def val():
    """The 300 labelled held-out samples."""
    return bind_to_inputs(open_samples(str(DIGITS / "val.npz")), ["input"])


@pytest.fixture(scope="session")
def pruned(teacher, calib, val):
    """The teacher after the real `prune` pass at ratio 0.5 (l1 importance): a quarter of the parameters.

    Without prune's repair (bias compensation, BatchNorm re-estimation), so the student starts near chance
    and the tests see what training alone recovers."""
    model, _ = run_pass("prune", teacher, make_context(teacher, calib, val), ratio=0.5, repair="none")
    return model
