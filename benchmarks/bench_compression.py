"""Benchmark: compression passes on real trained networks, from their `.pt2` files, through the CLI.

Each zoo model (see /work/zoo/INDEX.md; `benchmarks/zoo/build_zoo.py` builds them) goes through
`python -m exporter export <model.pt2> --target cpu-int8 --calib calib.npz --val val.npz ...`
once per step: int8 alone, prune + int8, prune + distill + int8 (and speed-goal pruning when the
exporter has `--prune-speedup`). Parameters, MACs, file size, accuracy and top-1 agreement with
the original come from each run's `report.json` (validation on `val.npz`, which no pass sees;
the passes train and choose epochs on `calib.npz`). Latency: every run's `model.onnx` and the
float ONNX of the original (`model.float.onnx` of the int8-only run) are timed together at
batch 1 on onnxruntime's CPU provider, interleaved round-robin (benchmarks/_common.py), with 1
and with 2 intra-op threads; "vs float" is float ms / this ms.

A smoke table then runs every pass alone (prune, lowrank, fold_bn, equalize, bias_correct,
sparsify, slim, distill) on a `.pt2` file and on a model-library `nn.Module` that torch.fx
cannot trace (transformers' ResNet, state dict + `--model-class`), and says what each changed or
the one-line reason it did not run.

Writes the tables, with the command that made them, to `benchmarks/results_compression.md`.

    python benchmarks/bench_compression.py [--models mobilenet_v2_photos,resnet18_photos] [--smoke/--no-smoke]
    python benchmarks/bench_compression.py --random-weights   # the older random-weight latency table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import fmt_mb, fmt_ms, interleaved_timings, machine_summary, markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ZOO = Path(os.environ.get("EXPORTER_ZOO", "/work/zoo"))


@dataclass(frozen=True)
class Step:
    """One CLI run: a label for the table and the pass flags added to the export command."""

    label: str
    flags: tuple[str, ...] = ()
    needs: str | None = None  # a CLI flag that must exist in `exporter export --help` (else the step is skipped)
    search: bool = False  # the plain command: the mixed-precision search on (int8 only where it is faster)


@dataclass(frozen=True)
class RealModel:
    """A zoo model, the class it stands for, the speed goal of issue 11 and the steps it goes through."""

    name: str
    family: str
    goal_speedup: float | None
    steps: tuple[Step, ...]
    max_accuracy_loss: float = 0.01  # the "at most 1 point of accuracy lost"
    zoo: str | None = None  # zoo folder when `name` is an extra set of steps for another entry's model

    @property
    def folder(self) -> str:
        return self.zoo or self.name


def _steps(ratio: float, speedup: float, distill: tuple[str, ...] = ("--distill",)) -> tuple[Step, ...]:
    """int8 alone; prune by a ratio, then with distillation; prune to a speed goal, then with distillation.

    Distillation runs with the exporter's defaults (no epoch count: the pass sizes its own run and
    stops early on held-out agreement), as a user who only adds `--distill` gets it.
    """
    prune = ("--prune", str(ratio), "--prune-round-to", "8")
    goal = ("--prune-speedup", str(speedup))
    settings = " ".join(distill[1:]).replace("--distill-", "")
    recover = f"distill ({settings})" if settings else "distill"
    return (
        Step("int8"),
        Step(f"prune {ratio:.0%} + int8", prune),
        Step(f"prune {ratio:.0%} + {recover} + int8", prune + distill),
        Step(f"prune to {speedup:g}x + int8", goal, needs="--prune-speedup"),
        Step(f"prune to {speedup:g}x + {recover} + int8", goal + distill, needs="--prune-speedup"),
    )


REAL_MODELS = {
    "mobilenet_v2_photos": RealModel("mobilenet_v2_photos", "MobileNetV2", 4.0, _steps(0.5, 4.0)),
    "resnet18_photos": RealModel("resnet18_photos", "ResNet-18", 6.0, _steps(0.5, 6.0, ("--distill", "--distill-epochs", "30"))),
    "efficientnet_lite0": RealModel(
        "efficientnet_lite0", "EfficientNet-Lite0 (ImageNet weights)", None,
        _steps(0.3, 3.0, ("--distill", "--distill-minutes", "10")),
    ),  # fmt: skip
    "mobilenet_v2_photos@search": RealModel(
        "mobilenet_v2_photos@search", "MobileNetV2", 4.0,
        (
            Step("int8, search on", search=True),
            Step("prune to 4x + distill + int8, search on", ("--prune-speedup", "4", "--distill"), search=True),
        ),
        zoo="mobilenet_v2_photos",
    ),  # fmt: skip
    "resnet18_photos@search": RealModel(
        "resnet18_photos@search", "ResNet-18", 6.0,
        (
            Step("int8, search on", search=True),
            Step("prune to 6x + distill + int8, search on", ("--prune-speedup", "6", "--distill"), search=True),
        ),
        zoo="resnet18_photos",
    ),  # fmt: skip
    "mobilenet_v2_photos@long": RealModel(
        "mobilenet_v2_photos@long", "MobileNetV2", 4.0,
        (
            Step(
                "prune to 4x + distill (150 epochs, patience 40) + int8, search on",
                ("--prune-speedup", "4", "--distill", "--distill-epochs", "150", "--distill-patience", "40"), search=True,
            ),
        ),
        zoo="mobilenet_v2_photos",
    ),  # fmt: skip
    "mobilenet_v2_photos@3x": RealModel(
        "mobilenet_v2_photos@3x", "MobileNetV2", None,
        (Step("int8"), Step("prune to 3x + distill + int8", ("--prune-speedup", "3", "--distill"), needs="--prune-speedup")),
        zoo="mobilenet_v2_photos",
    ),  # fmt: skip
}

SMOKE_PASSES = (
    ("prune", ("--prune", "0.3", "--prune-round-to", "8")),
    ("lowrank", ("--lowrank", "0.9")),
    ("fold_bn", ("--fold-bn",)),
    ("equalize", ("--equalize",)),
    ("bias_correct", ("--bias-correct",)),
    ("sparsify", ("--sparsify", "0.5")),
    ("slim", ("--slim", "1e-4", "--slim-epochs", "2")),
    ("distill", ("--distill", "--distill-epochs", "2")),
)


@dataclass(frozen=True)
class SmokeSubject:
    """A model for the smoke table: how it is loaded on the command line."""

    label: str
    zoo: str
    load: tuple[str, ...]  # model path and loader flags


SMOKE_SUBJECTS = (
    SmokeSubject("mobilenet_v2_photos `.pt2` (no class)", "mobilenet_v2_photos", ("{zoo}/model.pt2",)),
    SmokeSubject(
        "transformers ResNet-18 `nn.Module` (fx cannot trace)", "hf_resnet18_photos",
        ("{zoo}/state_dict.pt", "--model-class", "benchmarks.zoo.hf_resnet18_photos:HfResNet18",
         "--model-kwargs", '{"num_classes": 18}'),
    ),  # fmt: skip
)


@dataclass
class RunResult:
    """What one CLI run produced: exit code, the report's figures and the files to time."""

    label: str
    exit_code: int
    seconds: float
    error: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    onnx: Path | None = None
    float_onnx: Path | None = None

    @property
    def ok(self) -> bool:
        """The run wrote a report (exit 0 = passed the gate, 1 = missed a threshold but wrote everything)."""
        return bool(self.report)


def exporter_flags() -> str:
    """The text of `exporter export --help`, to skip steps whose flags do not exist yet."""
    done = subprocess.run([sys.executable, "-m", "exporter", "export", "--help"], cwd=REPO, capture_output=True, text=True)
    return done.stdout


def run_cli(
    label: str, model_args: list[str], zoo: Path, flags: tuple[str, ...], out: Path, reuse: bool = False, search: bool = False
) -> RunResult:
    """Run one `exporter export ... --target cpu-int8 --no-search` and read its report.json.

    `--no-search`: a run that misses the gate keeps its all-int8 file (no int8/float mix), so every
    row is the plain int8 model of its step. `search`: the plain command, search on (layers where int8
    is slower stay float).
    """
    command = [
        sys.executable, "-m", "exporter", "export", *model_args, "--target", "cpu-int8",
        "--calib", str(zoo / "calib.npz"), "--val", str(zoo / "val.npz"), "--out", str(out), "--force",
        *(() if search else ("--no-search",)), *flags,
    ]  # fmt: skip
    log = out.with_suffix(".log")
    if reuse and log.exists() and log.read_text().startswith(json.dumps(command)):
        header = json.loads(log.read_text().splitlines()[1])
        done = subprocess.CompletedProcess(command, header["exit"], "", log.read_text().split("\n", 3)[-1])
        seconds = header["seconds"]
    else:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        header = json.dumps({"exit": done.returncode, "seconds": seconds})
        log.write_text(json.dumps(command) + "\n" + header + "\n\n" + done.stdout + "\n" + done.stderr)
    result = RunResult(label, done.returncode, seconds)
    report_path = out / "report.json"
    if done.returncode in (0, 1) and report_path.exists():
        result.report = json.loads(report_path.read_text())
        result.onnx, result.float_onnx = out / "model.onnx", out / "model.float.onnx"
    else:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        result.error = lines[-1].strip() if lines else f"exit {done.returncode}"
    print(f"  {label}: exit {done.returncode} in {seconds:.0f} s {result.error}", flush=True)
    return result


def final_figures(report: dict[str, Any], key: str = "final_vs_original") -> dict[str, Any]:
    return report.get("validation", {}).get(key, {}) or {}


def pass_macs(results: list[RunResult]) -> tuple[int | None, dict[str, int]]:
    """MACs of the original (from any pass record) and of each run's compressed model."""
    original, after = None, {}
    for result in results:
        passes = result.report.get("passes", []) if result.ok else []
        if passes:
            original = original or passes[0].get("macs_before")
            after[result.label] = passes[-1].get("macs_after")
    return original, after


def step_trail(report: dict[str, Any]) -> str:
    """Val accuracy (or agreement) after each pass in float PyTorch, then of the int8 file: 'prune 0.41 > distill 0.93 > int8 0.93'."""
    parts = []
    for record in report.get("passes", []):
        metrics = record.get("metrics") or {}
        parts.append(f"{record['name']} {_quality(metrics)}")
    parts.append(f"int8 {_quality(final_figures(report))}")
    return " > ".join(parts)


def _quality(figures: dict[str, Any]) -> str:
    accuracy = figures.get("candidate_accuracy")
    if accuracy is not None:
        return f"{accuracy:.3f}"
    agreement = figures.get("top1_agreement")
    return f"{agreement:.3f} agr" if agreement is not None else "-"


def time_files(paths: dict[str, Path], sample: list[np.ndarray], threads: int, budget_s: float) -> dict[str, float]:
    """Median batch-1 ms of each ONNX file, all timed round-robin with `threads` intra-op threads.

    `sample` holds one batch-1 array per model input, in the order of the files' inputs.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {label: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for label, p in paths.items()}
    feeds = {label: dict(zip((i.name for i in s.get_inputs()), sample)) for label, s in sessions.items()}
    calls = {label: (lambda s=s, f=feeds[label]: s.run(None, f)) for label, s in sessions.items()}
    timings = interleaved_timings(calls, max_rounds=400, min_rounds=20, per_round=3, settle=1, warmup=5, budget_s=budget_s)
    return {label: t.median for label, t in timings.items()}


@dataclass(frozen=True)
class TestSet:
    """Fresh inputs that no pass, no epoch selection and no calibration saw; labels when the model has them."""

    inputs: list[np.ndarray]
    labels: np.ndarray | None
    description: str


def test_set(name: str, info: dict[str, Any]) -> TestSet:
    """New crops of the bundled photos, cut with a seed no zoo split uses (calib 1/12, val 2/13)."""
    from benchmarks.zoo.photos import load_photos, random_resized_crops, to_nchw

    size = info["inputs"][next(iter(info["inputs"]))][0][-1]
    if info["has_labels"]:
        from benchmarks.zoo.training import _labelled_crops

        x, y = _labelled_crops(load_photos(), 1000, size, seed=14)
        return TestSet([x], y, f"1,000 new labelled {size}x{size} crops (seed 14)")
    from benchmarks.zoo.efficientnet_lite0 import MEAN, STD

    x = to_nchw(random_resized_crops(load_photos(), 500, size, seed=3), MEAN, STD)
    return TestSet([x], None, f"500 new {size}x{size} crops (seed 3), no labels")


def predictions(path: Path, data: TestSet, batch: int = 50) -> np.ndarray:
    """Arg-max class of the first output of an ONNX file over the whole test set."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    count = len(data.inputs[0])
    tops = []
    for start in range(0, count, batch):
        feed = {n: np.ascontiguousarray(a[start : start + batch]) for n, a in zip(names, data.inputs)}
        tops.append(session.run(None, feed)[0].argmax(-1))
    return np.concatenate(tops)


def run_model(spec: RealModel, work: Path, help_text: str, budget_s: float, reuse: bool = False) -> list[list[str]]:
    """All steps of one model, timed together; returns its table rows."""
    zoo = ZOO / spec.folder
    info = json.loads((zoo / "info.json").read_text())
    print(f"{spec.name}:", flush=True)
    results = []
    for number, step in enumerate(spec.steps):
        if step.needs and step.needs not in help_text:
            print(f"  {step.label}: skipped ({step.needs} is not in this exporter)", flush=True)
            continue
        out = work / f"{spec.name}-{number}"
        results.append(run_cli(step.label, [str(zoo / "model.pt2")], zoo, step.flags, out, reuse, search=step.search))
    base = results[0]
    if not base.ok:
        return [[spec.folder, "int8", "-", "-", "-", "-", "-", "-", "-", "-", "-", base.error]]
    val = np.load(zoo / "val.npz")
    sample = [np.ascontiguousarray(val[name][:1]) for name in info["inputs"]]
    paths = {"float": base.float_onnx, **{r.label: r.onnx for r in results if r.ok}}
    ms = {threads: time_files(paths, sample, threads, budget_s) for threads in (1, 2)}
    data = test_set(spec.folder, info)
    tops = {label: predictions(path, data) for label, path in paths.items()}
    original_macs, macs_after = pass_macs(results)
    measurements = base.report["measurements"]
    rows = [
        _row(spec.folder, "float ONNX", measurements["params_original"], original_macs, measurements["size_float_bytes"],
             ms, "float", tops, data, "-", base.seconds),
    ]  # fmt: skip
    for result in results:
        if not result.ok:
            rows.append([spec.folder, result.label, "-", "-", "-", "-", "-", "-", "-", "-", "-", result.error])
            continue
        m = result.report["measurements"]
        macs = macs_after.get(result.label, original_macs)
        rows.append(_row(spec.folder, result.label, m["params_final"], macs, m["size_final_bytes"], ms, result.label,
                         tops, data, step_trail(result.report), result.seconds))  # fmt: skip
    return rows


def _row(model, label, params, macs, size, ms, key, tops, data: TestSet, trail, seconds) -> list[str]:
    agree = float(np.mean(tops[key] == tops["float"]))
    acc = ref_acc = None
    if data.labels is not None:
        acc, ref_acc = float(np.mean(tops[key] == data.labels)), float(np.mean(tops["float"] == data.labels))
    return [
        model,
        label,
        f"{params / 1e6:.2f} M",
        f"{macs / 1e6:.1f} M" if macs else "-",
        fmt_mb(size),
        fmt_ms(ms[1][key]),
        f"{ms[1]['float'] / ms[1][key]:.2f}x",
        fmt_ms(ms[2][key]),
        f"{ms[2]['float'] / ms[2][key]:.2f}x",
        f"{acc:.3f} ({acc - ref_acc:+.3f})" if acc is not None and ref_acc is not None else "-",
        f"{agree:.3f}" if agree is not None else "-",
        f"{trail}; {seconds:.0f} s" if trail != "-" else f"{seconds:.0f} s",
    ]


REAL_HEADERS = [
    "model", "step", "params", "MACs", "file", "1 thread ms", "vs float", "2 threads ms", "vs float",
    "test accuracy (vs float)", "test agreement with float", "val accuracy after each pass, then int8; run time",
]  # fmt: skip


def goal_lines(rows: list[list[str]], names: list[str]) -> list[str]:
    """One line per model run (`names`) with a speed goal: the fastest step within the accuracy budget, met or not."""
    lines = []
    for spec in REAL_MODELS.values():
        if spec.goal_speedup is None or spec.name not in names:
            continue
        mine = [r for r in rows if r[0] == spec.folder and r[6].endswith("x") and r[9] != "-"]
        within = [r for r in mine if float(r[9].split("(")[1].rstrip(")")) >= -spec.max_accuracy_loss]
        if not mine:
            continue
        if not within:
            lines.append(f"- {spec.family} (`{spec.name}`): no step lost at most {spec.max_accuracy_loss * 100:g} point of accuracy: goal NOT met.")
            continue
        best = max(within, key=lambda r: float(r[6].rstrip("x")))
        fastest = max(mine, key=lambda r: float(r[6].rstrip("x")))
        speed = float(best[6].rstrip("x"))
        verdict = "met" if speed >= spec.goal_speedup else "NOT met"
        lines.append(
            f"- {spec.family} (`{spec.name}`), goal >= {spec.goal_speedup:g}x with at most {spec.max_accuracy_loss * 100:g} point "
            f"of test accuracy lost: the fastest step within that is \"{best[1]}\" at {best[6]} (1 thread), test accuracy "
            f"{best[9]}; the fastest step overall is \"{fastest[1]}\" at {fastest[6]}, test accuracy {fastest[9]}: **goal {verdict}**."
        )  # fmt: skip
    return lines


def smoke_rows(work: Path, reuse: bool = False) -> list[list[str]]:
    """Every pass alone on each smoke subject: ran or not, what it changed, the fidelity after it."""
    rows = []
    for subject in SMOKE_SUBJECTS:
        zoo = ZOO / subject.zoo
        if not (zoo / "info.json").exists():
            rows.append([subject.label, "all", "not run", f"{zoo} is missing: build it with benchmarks/zoo/build_zoo.py", "-"])
            continue
        model_args = [a.replace("{zoo}", str(zoo)) for a in subject.load]
        print(f"smoke: {subject.label}", flush=True)
        for name, flags in SMOKE_PASSES:
            result = run_cli(name, model_args, zoo, flags, work / f"smoke-{subject.zoo}-{name}", reuse)
            rows.append([subject.label, name, *_smoke_cells(name, result)])
    return rows


SMOKE_SUMMARY_KEYS = (
    "folded", "pairs", "sweeps", "corrected", "replaced", "zero_fraction_of_all_parameters", "dead_channels",
    "epochs_run", "stopped_by",
)  # fmt: skip


def _smoke_cells(name: str, result: RunResult) -> list[str]:
    if not result.ok:
        return [f"no (exit {result.exit_code})", result.error[:200], "-"]
    records = [r for r in result.report.get("passes", []) if r.get("name") == name]
    if not records:
        notes = result.report.get("warnings", [])
        return ["no record", (notes[0] if notes else "the report has no row for this pass")[:200], "-"]
    record = records[0]
    what = []
    if record.get("params_before") != record.get("params_after"):
        what.append(f"params {record['params_before'] / 1e6:.2f} M -> {record['params_after'] / 1e6:.2f} M")
    if record.get("macs_before") != record.get("macs_after") and record.get("macs_before"):
        what.append(f"MACs {record['macs_before'] / 1e6:.0f} M -> {record['macs_after'] / 1e6:.0f} M")
    changes = record.get("changes") or []
    if changes:
        what.append(f"{len(changes)} layer changes")
    summary = record.get("summary") or {}
    for key in SMOKE_SUMMARY_KEYS:
        value = summary.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            what.append(f"{key.replace('_', ' ')} {value:.3g}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}")
    skipped = record.get("skipped") or []
    if skipped:
        what.append(f"{len(skipped)} kept whole")
    notes = record.get("notes") or []
    if notes:
        what.append(f"note: {notes[0]}")
    metrics = record.get("metrics") or {}
    fidelity = f"{_quality(metrics)} acc, agreement {metrics['top1_agreement']:.3f}" if metrics.get("top1_agreement") is not None else "-"
    return ["yes", "; ".join(what)[:320] or "nothing changed", fidelity]


SMOKE_HEADERS = ["model", "pass", "ran", "what it changed (or why not)", "after the pass (float PyTorch, val.npz)"]


def save_rows(path: Path, rows: list[list[str]], started: str, commit: str, load: str) -> None:
    """Keep one model's (or the smoke table's) rows with when and on what they were measured."""
    path.write_text(json.dumps({"started": started, "commit": commit, "load": load, "rows": rows}, indent=1))


def load_rows(path: Path) -> dict[str, Any] | None:
    """Rows saved by `save_rows`, or None."""
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the real-model benchmark and the smoke table, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2_photos,resnet18_photos", help=f"comma-separated: {', '.join(REAL_MODELS)}")
    parser.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=True, help="also run every pass alone")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of interleaved timing per model and thread count")
    parser.add_argument("--work", default="/tmp/bench-compression", help="folder for the runs' outputs and logs (kept)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_compression.md")))
    parser.add_argument("--reuse", action="store_true", help="reuse the outputs of identical earlier runs in --work (re-time only)")
    parser.add_argument("--random-weights", action="store_true", help="run the older random-weight latency table instead")
    args = parser.parse_args(argv)
    if args.random_weights:
        from benchmarks import bench_compression_random

        bench_compression_random.main([a for a in (argv if argv is not None else sys.argv[1:]) if a != "--random-weights"])
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]  # --models '' --no-smoke: only re-tabulate --work
    unknown = [m for m in models if m not in REAL_MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(REAL_MODELS)}")
    missing = [REAL_MODELS[m].folder for m in models if not (ZOO / REAL_MODELS[m].folder / "model.pt2").exists()]
    if missing:
        parser.error(f"{ZOO / missing[0]} is missing: build it with `python benchmarks/zoo/build_zoo.py {missing[0]}`")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_summary()
    help_text = exporter_flags()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for name in models:
        model_rows = run_model(REAL_MODELS[name], work, help_text, args.budget, args.reuse)
        save_rows(work / f"rows-{name}.json", model_rows, started, commit, machine["load average"])
        print(markdown_table(REAL_HEADERS, model_rows, right_from=2), flush=True)
    if args.smoke:
        save_rows(work / "rows-smoke.json", smoke_rows(work, args.reuse), started, commit, machine["load average"])
    rows, runs = [], []
    for name in REAL_MODELS:  # this run's models and earlier runs' kept in --work, in a fixed order
        saved = load_rows(work / f"rows-{name}.json")
        if saved:
            rows += saved["rows"]
            runs.append(f"`{name}` {saved['started']} @ {saved['commit']} (load {saved['load']})")
    saved_smoke = load_rows(work / "rows-smoke.json")
    smoke = saved_smoke["rows"] if saved_smoke else []
    if saved_smoke:
        runs.append(f"smoke table {saved_smoke['started']} @ {saved_smoke['commit']} (load {saved_smoke['load']})")
    command = "python benchmarks/bench_compression.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            "# Compression on real models (issue 11)",
            "",
            "Reproduce: `python benchmarks/zoo/build_zoo.py mobilenet_v2_photos resnet18_photos hf_resnet18_photos` then"
            " `python benchmarks/bench_compression.py --models mobilenet_v2_photos,resnet18_photos --smoke`.",
            "",
            f"This file: `{command.strip()}` (runs kept in `--work` are merged in, each with its time and commit). Machine: "
            f"{machine['cpu']}; torch {machine.get('torch')}, onnxruntime {machine.get('onnxruntime')}. "
            f"Runs (UTC, commit, load average at the start): {'; '.join(runs)}.",
            "",
            "Every step is one CLI run from the model's `.pt2` file (no model class):",
            "`python -m exporter export /work/zoo/<model>/model.pt2 --target cpu-int8 --calib calib.npz --val val.npz"
            " --out ... --force --no-search <pass flags>` (`--no-search`: a run that misses the gate keeps its plain"
            " int8 file instead of an int8/float mix). Params, MACs (weight layers, batch 1) and file size (the",
            "deployable `model.onnx`) come from the run's `report.json`. Accuracy and agreement are measured here,",
            "with onnxruntime, on a TEST set that nothing in the run saw: new crops of the bundled photos cut with a",
            "seed no zoo split uses (distillation trains on `calib.npz` and picks its best epoch on `val.npz`, so",
            "`val.npz` is not a fair test after distillation). \"vs float\" in brackets is the change against the",
            "original's float ONNX; agreement is top-1 agreement with it. The last column is the report's `val.npz`",
            "accuracy after each pass (float PyTorch), then the int8 file's, and the run's wall time.",
            "Latency: batch 1, onnxruntime CPU provider, each run's `model.onnx` and the original's float ONNX",
            "(`model.float.onnx` of the int8 run) timed together, interleaved round-robin, median;",
            "\"vs float\" = float ms / this ms.",
            "",
            markdown_table(REAL_HEADERS, rows, right_from=2),
            "",
            "Goals of issue 11 (1-thread ratio; accuracy as above):",
            "",
            *goal_lines(rows, models),
            "",
            *(
                [
                    "## Every pass alone, on a `.pt2` and on a model library's module that torch.fx cannot trace",
                    "",
                    "Same CLI, `--target cpu-int8`, one pass per run (prune 0.3 round-to 8; lowrank energy 0.9;",
                    "sparsify 0.5; slim 1e-4 for 2 epochs; distill 2 epochs). The library model is transformers'",
                    "`ResNetForImageClassification` (ResNet-18) loaded from a state dict with `--model-class`:",
                    "`torch.fx.symbolic_trace` fails on it (\"symbolically traced variables cannot be used as inputs",
                    "to control flow\"); its weights are `resnet18_photos`' (see /work/zoo/INDEX.md).",
                    "",
                    markdown_table(SMOKE_HEADERS, smoke, right_from=99),
                    "",
                ]
                if smoke
                else []
            ),
        ]
    )
    Path(args.out).write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
