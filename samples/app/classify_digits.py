"""A minimal app that embeds an exported digits model: onnxruntime, numpy and Pillow only, no torch.

    python samples/app/classify_digits.py build/digits/model.onnx samples/digits/images/3/*.png

First it checks the golden vectors beside the model (golden.json, written by `exporter export`):
it runs their inputs, compares the outputs with the PyTorch reference under the gate's tolerance and
prints the verdict on stderr (exit 1 if they fail). Then it preprocesses each image exactly as the
sample's calibration data was made (16x16 grayscale, scaled to [0, 1]) and prints the predicted
digit with its softmax probability.
"""

from __future__ import annotations

import argparse
import json
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


def golden_check(model_path: Path, session) -> tuple[bool, list[str]]:
    """Run the golden vectors beside `model_path`; (passed, one line per rule). Same figures as the exporter's gate."""
    folder = model_path.parent
    golden = json.loads((folder / "golden.json").read_text(encoding="utf-8"))

    def load(entry: dict) -> np.ndarray:
        return np.fromfile(folder / entry["file"], dtype=np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])

    inputs = {e["name"]: load(e) for e in golden["inputs"]}
    step = golden["batch"]
    outputs = np.concatenate([session.run(None, {k: v[i:i + step] for k, v in inputs.items()})[0]
                              for i in range(0, golden["samples"], step)]).astype(np.float64)
    ref = load(golden["reference"]).astype(np.float64)
    rows_ref, rows_out = ref.reshape(len(ref), -1), outputs.reshape(len(outputs), -1)
    noise = float(np.sum((ref - outputs) ** 2))
    measured = {
        "max_abs_error": float(np.abs(ref - outputs).max()),
        "cosine": float(np.mean(np.sum(rows_ref * rows_out, 1) / np.maximum(
            np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_out, axis=1), 1e-300))),
        "sqnr_db": float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise)),
        "top1_agreement": float(np.mean(ref.argmax(1) == outputs.argmax(1))) if ref.ndim == 2 and ref.shape[1] > 1 else None,
    }
    lines, passed = [], True
    for rule in golden["tolerance"]:
        value = measured.get(rule["figure"])
        if value is None:
            continue
        ok = value >= rule["threshold"] if rule["rule"] == ">=" else value <= rule["threshold"] + 1e-12
        passed &= ok
        lines.append(f"{rule['figure']} {value:.4g} {rule['rule']} {rule['threshold']:.4g}: {'pass' if ok else 'FAIL'}")
    return passed, lines


def main(argv: list[str] | None = None) -> int:
    """Print `image: digit (probability)` for every image given."""
    parser = argparse.ArgumentParser(description="Classify digit images with an exported ONNX model.")
    parser.add_argument("model", type=Path, help="the exported model.onnx")
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    args = parser.parse_args(argv)
    passed = True
    if (args.model.parent / "golden.json").is_file():
        import onnxruntime as ort

        passed, lines = golden_check(args.model, ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"]))
        print(f"golden vectors: {'PASS' if passed else 'FAIL'} ({'; '.join(lines)})", file=sys.stderr)
    else:
        print(f"no golden.json beside {args.model}: golden vectors not checked", file=sys.stderr)
    for path, (digit, prob) in zip(args.images, classify(args.model, args.images)):
        print(f"{path}: {digit} ({prob:.1%})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
