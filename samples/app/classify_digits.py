"""A minimal app that embeds an exported digits model: onnxruntime, numpy and Pillow only, no torch.

    python samples/app/classify_digits.py build/digits/model.onnx samples/digits/images/3/*.png

It preprocesses each image exactly as the sample's calibration data was made (16x16 grayscale,
scaled to [0, 1]) and prints the predicted digit with its softmax probability.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def load_image(path: Path) -> np.ndarray:
    """A 1x16x16 float32 array in [0, 1] from a grayscale (or colour) image file."""
    from PIL import Image

    with Image.open(path) as image:
        gray = image.convert("L").resize((16, 16), Image.BILINEAR)
    return (np.asarray(gray, dtype=np.float32) / 255.0)[None]


def classify(model_path: Path, images: list[Path]) -> list[tuple[int, float]]:
    """(digit, probability) per image, from one batched onnxruntime call."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    batch = np.stack([load_image(p) for p in images])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return [(int(p.argmax()), float(p.max())) for p in probs]


def main(argv: list[str] | None = None) -> int:
    """Print `image: digit (probability)` for every image given."""
    parser = argparse.ArgumentParser(description="Classify digit images with an exported ONNX model.")
    parser.add_argument("model", type=Path, help="the exported model.onnx")
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    args = parser.parse_args(argv)
    for path, (digit, prob) in zip(args.images, classify(args.model, args.images)):
        print(f"{path}: {digit} ({prob:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
