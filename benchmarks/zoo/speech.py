"""Speech audio for the audio models, synthesised on this machine with Debian's espeak-ng.

No speech recording ships in an installed package, so utterances of the everyday sentences
(`data/everyday_sentences.txt`) are spoken by espeak-ng with several voices (accents and
voice variants, different speeds and pitches), resampled to 16 kHz, and mixed with silence
and low-level noise where a model needs non-speech too. `mel_frames` reproduces librosa's
`melspectrogram` defaults as Resemblyzer uses them (25 ms Hann window, 10 ms hop, 40 Slaney
mel bands, power spectrum, centred frames), in numpy only.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .sentences import everyday_sentences

RATE = 16000
VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f3", "en-gb+f2", "en-us+m3",
    "en-gb-x-gbcwmd", "en-us+klatt", "en+whisper", "en-gb+f4",
)


def synthesise(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """`text` spoken by espeak-ng as float32 mono audio at 16 kHz in [-1, 1]."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
            check=True, capture_output=True,
        )
        rate, pcm = wavfile.read(path)
    audio = pcm.astype(np.float32) / 32768.0
    if rate != RATE:
        g = np.gcd(rate, RATE)
        audio = resample_poly(audio, RATE // g, rate // g).astype(np.float32)
    return audio


def utterances(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """`count` utterances (audio, voice index), cycling voices with random speed and pitch."""
    rng = np.random.default_rng(seed)
    sentences = everyday_sentences()
    picks = rng.permutation(len(sentences))
    found = []
    for i in range(count):
        voice = i % len(VOICES)
        audio = synthesise(
            sentences[picks[i % len(picks)]], VOICES[voice],
            speed=int(rng.integers(130, 200)), pitch=int(rng.integers(25, 80)),
        )
        found.append((audio, voice))
    return found


def _mel_filters(n_fft: int, n_mels: int, rate: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters (librosa.filters.mel defaults)."""

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        lin = f / (200.0 / 3)
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)

    fft_freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]
    return weights


def mel_frames(audio: np.ndarray, n_mels: int = 40, window_ms: int = 25, hop_ms: int = 10) -> np.ndarray:
    """(frames, n_mels) float32 mel power spectrogram (not log), as Resemblyzer's wav_to_mel_spectrogram."""
    n_fft = RATE * window_ms // 1000
    hop = RATE * hop_ms // 1000
    padded = np.pad(audio, n_fft // 2)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, n_fft), strides=(padded.strides[0] * hop, padded.strides[0])
    )
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power @ _mel_filters(n_fft, n_mels, RATE).T).astype(np.float32)


def normalise_volume(audio: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise (never lower) the level to `target_dbfs` RMS, as Resemblyzer's preprocess_wav does."""
    rms_db = 10 * np.log10(max(float(np.mean(audio**2)), 1e-12))
    change = target_dbfs - rms_db
    return audio * np.float32(10 ** (change / 20)) if change > 0 else audio


_CORPUS: dict[str, list[tuple[np.ndarray, int]]] = {}


def corpus(split: str) -> list[tuple[np.ndarray, int]]:
    """The calibration (60 utterances, seed 21) or validation (50 utterances, seed 22) speech, cached."""
    if split not in _CORPUS:
        count, seed = {"calib": (60, 21), "val": (50, 22)}[split]
        _CORPUS[split] = utterances(count, seed)
    return _CORPUS[split]


def stream(split: str, seed: int) -> np.ndarray:
    """One long 16 kHz recording: the split's utterances separated by 0.3-1.5 s of silence or noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for audio, _ in corpus(split):
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), np.float32)
        if rng.random() < 0.6:
            gap += rng.normal(0, rng.uniform(0.002, 0.03), len(gap)).astype(np.float32)
        level = rng.uniform(0.2, 1.0)
        parts += [gap, audio * np.float32(level)]
    mixed = np.concatenate(parts)
    return mixed + rng.normal(0, 0.002, len(mixed)).astype(np.float32)
