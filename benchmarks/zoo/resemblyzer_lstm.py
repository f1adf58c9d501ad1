"""Resemblyzer's speaker encoder with its pretrained weights, on mel frames of synthesised speech.

Weights: `resemblyzer` (PyPI) ships `pretrained.pt`, a GE2E speaker encoder: 3-layer LSTM
(40 -> 256), Linear 256 -> 256, ReLU, L2 normalisation. The class is written out here with the
package's parameter names (the package itself imports librosa and webrtcvad, which are not
needed to run the net). Inputs: 160 frames (1.6 s) of 40-band mel power spectrogram, as
Resemblyzer's partial utterances, from espeak-ng speech in 12 voices (`speech.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .common import ZooModel
from .speech import corpus, mel_frames, normalise_volume

FRAMES = 160


class SpeakerEncoder(nn.Module):
    """(N, 160, 40) mel frames -> (N, 256) unit-length, non-negative speaker embedding."""

    def __init__(self, mels: int = 40, hidden: int = 256, layers: int = 3, embedding: int = 256) -> None:
        super().__init__()
        self.lstm = nn.LSTM(mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, embedding)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """The final hidden state of the last LSTM layer, projected, rectified and L2-normalised."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def load_model() -> SpeakerEncoder:
    """The encoder with Resemblyzer's packaged weights (found without importing the package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError("resemblyzer is not installed: pip install --no-deps resemblyzer")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    model = SpeakerEncoder()
    model.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")}, strict=True)
    return model.eval()


def partials(split: str, count: int, seed: int) -> np.ndarray:
    """`count` random 160-frame windows of the split's utterances as (count, 160, 40) float32."""
    rng = np.random.default_rng(seed)
    mels = [mel_frames(normalise_volume(audio)) for audio, _ in corpus(split)]
    out = np.empty((count, FRAMES, 40), np.float32)
    for i in range(count):
        m = mels[rng.integers(len(mels))]
        if len(m) < FRAMES:
            m = np.pad(m, ((0, FRAMES - len(m)), (0, 0)))
        start = rng.integers(0, len(m) - FRAMES + 1)
        out[i] = m[start : start + FRAMES]
    return out


def build() -> ZooModel:
    """Resemblyzer's encoder with 250 calibration and 200 validation partial utterances."""
    return ZooModel(
        name="resemblyzer_lstm",
        module=load_model(),
        input_names=("mels",),
        calib={"mels": partials("calib", 250, seed=31)},
        val={"mels": partials("val", 200, seed=32)},
        what="Resemblyzer GE2E speaker encoder (3-layer LSTM 40->256, Linear, ReLU, L2 norm; 1.4 M params)",
        weights="PyPI `resemblyzer` 0.1.4 `pretrained.pt` (model_state), class vendored in benchmarks/zoo",
        output_kind="embedding (256-d, unit length, judge by cosine)",
        model_class="benchmarks.zoo.resemblyzer_lstm:SpeakerEncoder",
        torchscript=True,
        notes="inputs: 160 frames x 40 mel bands (power, not log) of espeak-ng speech, 12 voices; "
        "calib and val from different utterances",
    )
