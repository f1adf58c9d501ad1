"""NNCF ONNX post-training quantization; run with /work/venvs/nncf/bin/python.

usage: nncf_quantize.py FLOAT.onnx CALIB.npz OUT.onnx [--transformer]

NNCF defaults (preset PERFORMANCE: symmetric int8 activations and weights, per-channel weights,
fast bias correction), subset_size = every calibration sample; `--transformer` sets
model_type=TRANSFORMER (only MatMul inputs quantized around attention, SmoothQuant on).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx  # noqa: E402
from npz_reader import NpzReader, load_inputs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("calib")
    parser.add_argument("out")
    parser.add_argument("--transformer", action="store_true")
    args = parser.parse_args()

    import nncf

    model = onnx.load(args.model)
    names = [i.name for i in model.graph.input]
    arrays = load_inputs(args.calib, names)
    reader = NpzReader(arrays, batch=1)
    dataset = nncf.Dataset(list(reader))
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if args.transformer else {}
    start = time.time()
    quantized = nncf.quantize(model, dataset, subset_size=reader.count, **kwargs)
    onnx.save(quantized, args.out)
    print(f"nncf: wrote {args.out} in {time.time() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
