"""Side-by-side int8 benchmark on the real-weight model zoo: float ONNX, onnxruntime's hand recipe,
AMD Quark (CLE + AdaRound), NNCF, and this project's default `exporter export --target cpu-int8`.

For every zoo model (`/work/zoo/<name>/`, built by `benchmarks/zoo/build_zoo.py`):
- float: `exporter export model.pt2 --target cpu-fp32` (the float ONNX every other tool starts from);
- ort:   onnxruntime's recipe on that file: quant_pre_process + quantize_static (QDQ, per-channel,
         uint8 activations / int8 weights, MinMax), calib.npz;
- quark: AMD Quark 0.13 in /work/venvs/quark: CLE + AdaRound, U8S8 per-channel, Percentile;
- nncf:  NNCF in /work/venvs/nncf: default PTQ, model_type=TRANSFORMER for transformers;
- ours:  `exporter export model.pt2 --target cpu-int8 --calib calib.npz --val val.npz` (no other flag).
Each file is then validated here against the float ONNX on val.npz (figures as
`faithful/measure.py` says) and timed at batch 1, one thread, all columns interleaved, median.

Run from the repository root (heavy: run it under the shared lock):
    flock /tmp/heavy.lock python benchmarks/bench_faithful.py            # everything, cached tool outputs reused
    flock /tmp/heavy.lock python benchmarks/bench_faithful.py --rerun ours   # re-run only this project's column
Tool outputs are cached under --work (default /tmp/faithful/<model>/); `--rerun COLUMN` redoes one.
Prints one table and writes benchmarks/results_faithful.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_summary, markdown_table  # noqa: E402
from benchmarks.faithful import measure, tools  # noqa: E402
from benchmarks.faithful.tools import Candidate  # noqa: E402

COLUMNS = ("ort", "quark", "nncf", "ours")
TRANSFORMERS = ("minilm_l6", "vit_tiny_digits")
DEFAULT_MODELS = (
    "efficientnet_lite0", "minilm_l6", "mobilenet_v3_photos", "mobilenet_v2_photos", "cnn_digits16",
    "cnn_digits48", "vit_tiny_digits", "resemblyzer_lstm", "silero_vad", "crepe_tiny", "khmer_crnn",
)


def produce(model_dir: Path, work: Path, column: str, float_path: str | None, args) -> Candidate:
    """Run one tool on one model (or reuse its cached result unless asked to re-run it)."""
    cached = Candidate.load(work, column)
    if cached is not None and column not in args.rerun and "all" not in args.rerun:
        return cached
    if args.cached_only:
        return Candidate(column, None, 0.0, "not run")
    print(f"  {model_dir.name}: running {column} ...", flush=True)
    if column == "float":
        result = tools.float_onnx(model_dir, work, args.timeout)
    elif float_path is None:
        result = Candidate(column, None, 0.0, "skipped", "no float ONNX")
    elif column == "ort":
        result = tools.ort_recipe(float_path, model_dir / "calib.npz", work)
    elif column == "quark":
        result = tools.quark(float_path, model_dir / "calib.npz", work, args.quark_iterations, args.quark_timeout)
    elif column == "nncf":
        result = tools.nncf(float_path, model_dir / "calib.npz", work, model_dir.name in TRANSFORMERS, args.timeout)
    else:
        result = tools.ours(model_dir, work, args.timeout)
    result.save(work)
    print(f"  {model_dir.name}: {column} {result.status} in {result.wall_s:.0f} s {result.note[:120]}", flush=True)
    return result


def cell(fig: measure.Figures | None, ratio: float | None, cand: Candidate, has_labels: bool, output_kind: str) -> str:
    """One table cell: agreement / cosine [/ accuracy], latency ratio, wall time (or why there is no file)."""
    if fig is None:
        return f"{cand.status}" + (f" ({cand.note[:60]})" if cand.note else "")
    parts = [f"{fig.agreement:.3f}" if fig.agreement is not None else "–", f"{fig.cosine:.4f}"]
    if has_labels:
        parts.append(f"acc {fig.accuracy:.3f}")
    if output_kind.startswith("probabilities"):
        parts.append(f"max err {fig.max_abs_error:.3f}")
    speed = f"{ratio:.2f}x" if ratio is not None else "batch-1 run fails"
    text = " / ".join(parts) + f", {speed}, {cand.wall_s:.0f} s"
    if cand.status != "ok":
        text += f" [{cand.status}]"
    return text


def bench_model(model_dir: Path, args) -> tuple[list[str], dict]:
    """Produce every column for one model, measure them, and return the table row and raw figures."""
    import numpy as np

    info = json.loads((model_dir / "info.json").read_text())
    work = args.work / model_dir.name
    work.mkdir(parents=True, exist_ok=True)
    flt = produce(model_dir, work, "float", None, args)
    cands = {c: produce(model_dir, work, c, flt.path, args) for c in args.columns}
    val = np.load(model_dir / "val.npz")
    labels = val["labels"] if "labels" in val.files else None
    arrays = {k: val[k] for k in val.files if k != "labels"}
    row = [model_dir.name, info["output_kind"].split(" (")[0]]
    raw: dict = {"model": model_dir.name, "float_wall_s": flt.wall_s, "float_status": flt.status}
    if flt.path is None:
        return row + [f"float export {flt.status}: {flt.note[:80]}"] + ["–"] * len(args.columns), raw
    ref = measure.run_all(measure.session(flt.path, threads=2), arrays)
    float_acc = float(np.mean(ref.reshape(len(ref), -1).argmax(1) == labels)) if labels is not None else None
    paths = {"float": flt.path} | {c: cand.path for c, cand in cands.items() if cand.path}
    latency, broken = measure.batch1_latency(paths, arrays, budget_s=args.time_budget)
    row.append(f"{latency['float']:.2f} ms" + (f", acc {float_acc:.3f}" if float_acc is not None else ""))
    raw["float_ms"] = latency["float"]
    raw["float_accuracy"] = float_acc
    for column, cand in cands.items():
        fig = ratio = None
        if cand.path:
            try:
                out = measure.run_all(measure.session(cand.path, threads=2), arrays)
                fig = measure.figures(ref, out, info["output_kind"], labels)
                ratio = latency[column] / latency["float"] if column in latency else None
            except Exception as exc:  # a file onnxruntime 1.32 cannot run is a result, not a crash
                cand = Candidate(column, None, cand.wall_s, "unrunnable", f"{type(exc).__name__}: {str(exc)[:100]}")
        row.append(cell(fig, ratio, cand, labels is not None, info["output_kind"]))
        raw[column] = {"batch1_error": broken.get(column), "status": cand.status, "wall_s": cand.wall_s, "note": cand.note,
                       "ratio": ratio, "ms": latency.get(column), **(fig.__dict__ if fig else {})}
    return row, raw


def main(argv: list[str] | None = None) -> int:
    """Run the side-by-side benchmark and print/write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("/work/zoo"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/faithful"))
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--columns", nargs="*", default=list(COLUMNS), choices=COLUMNS)
    parser.add_argument("--rerun", nargs="*", default=[], help="columns to recompute (float, ort, quark, nncf, ours, all)")
    parser.add_argument("--quark-iterations", type=int, default=200, help="AdaRound iterations per layer (preset: 1000)")
    parser.add_argument("--quark-timeout", type=float, default=1200.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per tool run")
    parser.add_argument("--time-budget", type=float, default=15.0, help="seconds of interleaved timing per model")
    parser.add_argument("--cached-only", action="store_true", help="only tabulate tool outputs already in --work")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results_faithful.md"))
    args = parser.parse_args(argv)

    start = time.time()
    rows, raws = [], []
    for name in args.models:
        model_dir = args.zoo / name
        if not (model_dir / "info.json").exists():
            print(f"skipping {name}: {model_dir}/info.json not found (build it with benchmarks/zoo/build_zoo.py)")
            continue
        row, raw = bench_model(model_dir, args)
        rows.append(row)
        raws.append(raw)
    headers = ["model", "output", "float ONNX"] + [
        {"ort": "ort recipe", "quark": "Quark CLE+AdaRound", "nncf": "NNCF", "ours": "ours (cpu-int8 default)"}[c]
        for c in args.columns
    ]
    table = markdown_table(headers, rows, right_from=99)
    machine = machine_summary()
    text = (
        "# Side-by-side int8 on the real-weight zoo\n\n"
        f"Command: `{' '.join(['python', 'benchmarks/bench_faithful.py'] + (argv if argv is not None else sys.argv[1:]))}`  \n"
        + "  \n".join(f"{k}: {v}" for k, v in machine.items())
        + f"  \ntotal wall time {time.time() - start:.0f} s\n\n"
        "Each cell: agreement with float (top-1 for logits, decision for probabilities, – for embeddings) / "
        "mean cosine with float [/ accuracy on real labels] [/ max abs error for probabilities], batch-1 latency as a multiple of the float ONNX "
        "(1 thread, interleaved, median; < 1 is faster), wall time of the tool.\n\n"
        + table + "\n"
    )
    print(text)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(raws, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
