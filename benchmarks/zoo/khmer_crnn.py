"""Khmer OCR CRNN (khmer-ocr-ocm) with its packaged weights, on text lines rendered with its own fonts.

Weights and class: `khmer-ocr-ocm` (PyPI, `pip install --no-deps khmer-ocr-ocm`; pure Python
over torch) ships `assets/model.pth`, a CRNN: VGG-style CNN (7 conv + BN + ReLU, max-pools),
height mean, 2-layer bidirectional LSTM (256), Linear to 984 classes (983 characters + CTC
blank); 9.2 M parameters, input 1x48x512 in [-1, 1]. The package's model returns time-major
(T, N, C) logits; `CrnnBatchFirst` returns (N, T, C) so the sample axis comes first.
Inputs: the everyday sentences and Khmer phrases rendered by the package's own `render_line`
with its five bundled Khmer fonts (they also carry Latin glyphs; the model reads English
correctly), preprocessed by the package's `preprocess`.
"""

from __future__ import annotations

import numpy as np
import torch
from khmer_ocr_ocm.model import CRNN

from .common import ZooModel
from .sentences import everyday_sentences

KHMER_PHRASES = (
    "សួស្តី ពិភពលោក", "អរគុណច្រើន", "ភ្នំពេញ", "ប្រទេសកម្ពុជា", "សាលារៀន", "ថ្ងៃនេះ", "ព្រះរាជាណាចក្រកម្ពុជា",
    "អង្គរវត្ត", "ទឹកទន្លេមេគង្គ", "សៀវភៅ", "ផ្ទះ", "ភាសាខ្មែរ",
)


class CrnnBatchFirst(CRNN):
    """The packaged CRNN with (N, T, classes) output logits instead of (T, N, classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 48, 512) text-line images in [-1, 1] -> (N, 127, 984) per-step character logits."""
        return super().forward(x).permute(1, 0, 2)


def load_model() -> CrnnBatchFirst:
    """CrnnBatchFirst with the packaged V21 checkpoint."""
    from khmer_ocr_ocm.assets import get_model_path

    ckpt = torch.load(get_model_path(), map_location="cpu", weights_only=False)
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    model = CrnnBatchFirst(img_height=48, num_classes=984)
    model.load_state_dict(state)
    return model.eval()


def lines(count: int, seed: int) -> np.ndarray:
    """`count` rendered text lines, (count, 1, 48, 512) float32 in [-1, 1]."""
    from khmer_ocr_ocm.assets import get_khmer_font_paths
    from khmer_ocr_ocm.dataset import render_line
    from khmer_ocr_ocm.inference import preprocess

    rng = np.random.default_rng(seed)
    fonts = get_khmer_font_paths()
    sentences = everyday_sentences()
    out = np.empty((count, 1, 48, 512), np.float32)
    for i in range(count):
        if rng.random() < 0.25:
            text = " ".join(rng.choice(KHMER_PHRASES, size=rng.integers(1, 4)))
        else:
            words = sentences[rng.integers(len(sentences))].split()
            start = rng.integers(0, max(1, len(words) - 3))
            text = " ".join(words[start : start + rng.integers(3, 8)])
        ink = int(rng.integers(0, 90))
        paper = int(rng.integers(170, 256))
        img = render_line(text, fonts[rng.integers(len(fonts))], font_size=int(rng.integers(24, 40)),
                          bg=(paper,) * 3, fg=(ink,) * 3)
        out[i] = preprocess(img).numpy()[0]
    return out


def build() -> ZooModel:
    """The CRNN with 250 calibration and 200 validation rendered lines."""
    return ZooModel(
        name="khmer_crnn",
        module=load_model(),
        input_names=("x",),
        calib={"x": lines(250, seed=61)},
        val={"x": lines(200, seed=62)},
        what="Khmer OCR CRNN (7-conv VGG CNN + 2-layer BiLSTM 256 + Linear, CTC; 9.2 M params), 1x48x512 text lines",
        weights="PyPI `khmer-ocr-ocm` 0.1.0 `assets/model.pth` (V21), class from the package",
        output_kind="logits per time step (N,127,984) CTC characters (judge per-step agreement)",
        model_class="benchmarks.zoo.khmer_crnn:CrnnBatchFirst",
        notes="English sentence fragments (75%) and Khmer phrases (25%) rendered with the package's 5 fonts, random size/contrast",
    )
