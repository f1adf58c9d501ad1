"""AMD Quark 0.13 ONNX PTQ with CLE + AdaRound; run with /work/venvs/quark/bin/python (onnx 1.22, ort 1.28).

usage: quark_quantize.py FLOAT.onnx CALIB.npz OUT.onnx [--iterations N] [--no-adaround]

Config: activations UInt8 asymmetric per tensor, weights Int8 symmetric per channel (the U8S8
layout onnxruntime's x86 kernels run), MinMax calibration (`--calib-method`; Quark's default,
Percentile, took 18 s per sample and 6 GB after 77 samples on the 0.3 M-parameter VAD), QDQ format,
algorithms CLE (Quark defaults) then AdaRound (Quark's A8W8_ADAROUND settings, lr 0.1,
batch 2, early stop; `--iterations` per layer, Quark's preset uses 1000; AdaRound on `--data-size`
samples with MemOptLevel 2, which keeps cached layer data on disk: level 1 held 5.6 GB for a 0.3 M-parameter net).
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
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--data-size", type=int, default=128, help="calibration samples AdaRound optimises on")
    parser.add_argument("--calib-method", default="MinMax", choices=["MinMax", "Percentile", "MinMSE", "Entropy"])
    parser.add_argument("--no-adaround", action="store_true")
    parser.add_argument("--no-cle", action="store_true")
    args = parser.parse_args()

    from quark.onnx import AdaRoundConfig, CLEConfig, ModelQuantizer, QConfig
    from quark.onnx.quantization.config.spec import CalibMethod, Int8Spec, QLayerConfig, QuantGranularity, UInt8Spec

    model = onnx.load(args.model)
    names = [i.name for i in model.graph.input]
    reader = NpzReader(load_inputs(args.calib, names), batch=8)
    algorithms = []
    if not args.no_cle:
        algorithms.append(CLEConfig())
    if not args.no_adaround:
        algorithms.append(AdaRoundConfig(
            learning_rate=0.1, num_iterations=args.iterations, batch_size=2, early_stop=True,
            data_size=args.data_size, mem_opt_level=2,
        ))
    config = QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(calibration_method=CalibMethod[args.calib_method]),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        algo_config=algorithms,
        extra_options={"ForceQuantizeNoInputCheck": True, "AlignSlice": False, "FoldRelu": True, "AlignConcat": True},
    )
    start = time.time()
    ModelQuantizer(config).quantize_model(args.model, args.out, calibration_data_reader=reader)
    print(f"quark: wrote {args.out} in {time.time() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
