"""Silero VAD v6 (16 kHz branch) with its packaged weights: a voice-activity net with a probability output.

Weights: `silero-vad` (PyPI) ships `silero_vad.jit`; its 16 kHz sub-model is an STFT (a fixed
conv1d basis, 256 taps, hop 128) -> magnitude -> 4 conv1d+ReLU blocks -> LSTMCell(128) ->
ReLU -> 1x1 conv -> sigmoid. It is written out here in plain PyTorch and loads the TorchScript
file's parameters, so it exports with torch.export. One step consumes 64 samples of context +
512 new samples (32 ms) and the recurrent state; the state is batch-first here ((N, 2, 128):
h and c) so every input and output has the sample axis first. Outputs: speech probability
(N, 1) and the next state (N, 2, 128).

Inputs are real streaming steps: the reference TorchScript model runs over long recordings
of espeak-ng speech separated by silence and noise (`speech.stream`), and the (chunk, state)
pairs it sees are sampled.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .common import ZooModel
from .speech import stream

CONTEXT = 64
CHUNK = 512


class SileroVad16k(nn.Module):
    """(x (N, 576), state (N, 2, 128)) -> (speech probability (N, 1), next state (N, 2, 128))."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(258, 1, 256))
        self.encoder = nn.ModuleList(
            nn.Conv1d(cin, cout, 3, stride, 1) for cin, cout, stride in ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))
        )
        self.rnn = nn.LSTMCell(128, 128)
        self.head = nn.Conv1d(128, 1, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One 32 ms step of the detector."""
        padded = nn.functional.pad(x[:, None, :], (0, 64), mode="reflect")
        spec = nn.functional.conv1d(padded, self.stft_basis, stride=128)
        magnitude = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        h = magnitude
        for conv in self.encoder:
            h = torch.relu(conv(h))
        hidden, cell = self.rnn(h.squeeze(-1), (state[:, 0], state[:, 1]))
        prob = torch.sigmoid(self.head(torch.relu(hidden)[..., None]))
        return prob.squeeze(1).mean(1, keepdim=True), torch.stack([hidden, cell], dim=1)


def _jit_path():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError("silero-vad is not installed: pip install --no-deps silero-vad")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.jit"


def load_model() -> tuple[SileroVad16k, torch.jit.ScriptModule]:
    """The vendored net with the packaged weights, and the packaged TorchScript 16 kHz model."""
    reference = torch.jit.load(str(_jit_path()), map_location="cpu")._model.eval()
    src = reference.state_dict()
    state = {"stft_basis": src["stft.forward_basis_buffer"]}
    for i in range(4):
        state[f"encoder.{i}.weight"] = src[f"encoder.{i}.reparam_conv.weight"]
        state[f"encoder.{i}.bias"] = src[f"encoder.{i}.reparam_conv.bias"]
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        state[f"rnn.{name}"] = src[f"decoder.rnn.{name}"]
    state["head.weight"] = src["decoder.decoder.2.weight"]
    state["head.bias"] = src["decoder.decoder.2.bias"]
    model = SileroVad16k()
    model.load_state_dict(state, strict=True)
    return model.eval(), reference


def streaming_steps(reference: torch.jit.ScriptModule, split: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """Run `reference` over a recording step by step and sample `count` of its (x, state) inputs."""
    audio = stream(split, seed)
    steps = (len(audio) - CONTEXT) // CHUNK
    xs = np.empty((steps, CONTEXT + CHUNK), np.float32)
    states = np.empty((steps, 2, 128), np.float32)
    state = torch.zeros(2, 1, 128)
    context = torch.zeros(1, CONTEXT)
    with torch.no_grad():
        for i in range(steps):
            chunk = torch.from_numpy(audio[CONTEXT + i * CHUNK : CONTEXT + (i + 1) * CHUNK])[None]
            x = torch.cat([context, chunk], dim=1)
            xs[i], states[i] = x[0].numpy(), state[:, 0].numpy()
            _, state = reference(x, state)
            context = chunk[:, -CONTEXT:]
    pick = np.sort(np.random.default_rng(seed).choice(steps, size=min(count, steps), replace=False))
    return {"x": xs[pick], "state": states[pick]}


def build() -> ZooModel:
    """Silero VAD with 300 calibration and 200 validation streaming steps of real speech/silence/noise."""
    model, reference = load_model()
    calib = streaming_steps(reference, "calib", 300, seed=41)
    val = streaming_steps(reference, "val", 200, seed=42)
    with torch.no_grad():
        ours = model(torch.from_numpy(val["x"]), torch.from_numpy(val["state"]))[0]
        theirs = reference(torch.from_numpy(val["x"]), torch.from_numpy(val["state"]).transpose(0, 1).contiguous())[0]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    speech = float((ours.numpy() > 0.5).mean())
    return ZooModel(
        name="silero_vad",
        module=model,
        input_names=("x", "state"),
        calib=calib,
        val=val,
        what="Silero VAD v6, 16 kHz step (STFT conv, 4 conv1d+ReLU, LSTMCell 128, sigmoid; 0.24 M params); 2 inputs, 2 outputs",
        weights="PyPI `silero-vad` 6.2.3 `data/silero_vad.jit` (16 kHz sub-model), class vendored, checked equal to the TorchScript",
        output_kind="probabilities (N,1) speech probability (judge by abs error and decision at 0.5) + recurrent state (N,2,128) (regression)",
        model_class="benchmarks.zoo.silero_vad:SileroVad16k",
        notes=f"streaming steps of espeak-ng speech with silence/noise gaps; {speech:.0%} of val steps are speech (p>0.5)",
    )
