"""The command line: `exporter export`, `exporter targets`, `exporter inspect`.

A thin layer over the public API: it turns flags into plan settings, and errors into one line on
stderr and an exit code: 0 success, 1 validation failed (outputs written), 2 bad input, 3 internal
error (`-v` prints the traceback), 130 Ctrl-C, 143 SIGTERM. Heavy modules load inside the commands,
so `exporter --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import traceback
from typing import Any, Sequence

from exporter.errors import ExporterError, PlanError
from exporter.plan import DEFAULTS

INTERNAL_ERROR = 3
PASS_ALIASES = {"nproc": ("distill", "nproc"), "resume": ("distill", "resume"), "teacher_device": ("distill", "teacher_device")}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_passes=bool(argv) and argv[0] == "export")
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    logging.basicConfig(level=logging.INFO if verbose > 1 else logging.WARNING, format="%(message)s")
    logging.getLogger("exporter").setLevel(logging.INFO if verbose else logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from exporter.quiet import quiet_libraries
    from exporter.signals import Terminated, terminate_as_interrupt, terminated

    try:
        with terminate_as_interrupt(), contextlib.nullcontext() if verbose else quiet_libraries():
            return args.run(args)
    except Exception as exc:
        if not terminated():  # SIGTERM during an import may surface as ImportError: still a SIGTERM
            return _report_error(exc, verbose)
        print("error: terminated (SIGTERM); no output was written", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {what}; no output was written", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Terminated) else 130


def _report_error(exc: Exception, verbose: int) -> int:
    """One line on stderr and the exit code: the error's own for `ExporterError`s, 3 for anything else (a bug)."""
    if isinstance(exc, ExporterError):
        if verbose and exc.__cause__ is not None:  # e.g. the user's code that raised
            traceback.print_exception(exc.__cause__)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if verbose:  # a bug in the exporter or a library: one line, the traceback only with -v
        traceback.print_exception(exc)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    hint = "" if verbose else "; rerun with -v for the traceback"
    print(f"error: internal error: {type(exc).__name__}: {lines[0][:300] if lines else ''}{hint}", file=sys.stderr)
    return INTERNAL_ERROR


def build_parser(with_passes: bool = True) -> argparse.ArgumentParser:
    """The argument parser; compression-pass flags are added only for `export` (they import torch)."""
    parser = argparse.ArgumentParser(prog="exporter", description="Turn a trained PyTorch model into a small, fast, validated ONNX file.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    export = sub.add_parser("export", help="export, compress, quantize and validate a model",
                            description="Export a PyTorch model to a validated ONNX file for a deployment target.")
    stages = _add_export_options(export)
    if with_passes:
        _add_pass_options(export)
    stages.move_last("search", "output")
    export.set_defaults(run=run_export_command)
    targets = sub.add_parser("targets", help="list the deployment targets")
    targets.set_defaults(run=run_targets_command)
    inspect = sub.add_parser("inspect", help="per-layer quantization error of a finished run, worst first")
    inspect.add_argument("out_dir", help="the --out folder of a finished export")
    inspect.add_argument("--top", type=int, default=10, help="how many layers to list (default: 10)")
    inspect.set_defaults(run=run_inspect_command)
    verify = sub.add_parser("verify", help="run an output folder's golden vectors on a runtime and check the gate's tolerance",
                            description="Run the golden vectors of an export on a runtime (python: onnxruntime; openvino; "
                                        "node: onnxruntime-node; web: onnxruntime-web WASM in Node; browser: the web sample page "
                                        "in headless Chromium) and compare with PyTorch. Exit 0 pass, 1 fail, 2 bad input.")
    verify.add_argument("out_dir", help="the --out folder of a finished export")
    verify.add_argument("--runtime", default="python", help="python, openvino, node, web or browser (default: python)")
    verify.add_argument("--time", type=int, default=0, metavar="N", help="also time N batch-1 runs and print the median")
    verify.set_defaults(run=run_verify_command)
    return parser


def _d(name: str) -> str:
    return f" (default: {DEFAULTS[name]})"


EXPORT_STAGES = {
    "model": ("model: what to load", ("model", "--model-class", "--model-kwargs", "--trust-pickle", "--input-shape")),
    "data": ("data: calibration and validation samples",
             ("--calib", "--val", "--calib-samples", "--calib-nproc", "--calib-nnodes", "--calib-node-rank", "--calib-rdzv-endpoint", "--val-samples", "--val-fraction", "--batch-size",
              "--image-preset", "--resize", "--crop", "--mean", "--std", "--seed")),
    "target": ("target: export, quantization and the gate",
               ("--target", "--calib-method", "--exporter", "--opset", "--output-kind", "--fail-if-slower")),
    "search": ("search: int8/float mix when int8 misses the gate or is slower", ("--accuracy-budget", "--no-search", "--search-minutes")),
    "output": ("output: where results go and how the run reports",
               ("--out", "--force", "--dry-run", "--plan", "--latency-repeats", "--progress", "--no-progress", "-v")),
}
"""`exporter export --help` sections, in stage order (compression passes come between target and search)."""


class _StageGroups:
    """Routes each export flag to its stage's argument group (a flag not listed lands in `output`)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.groups = {name: parser.add_argument_group(title) for name, (title, _) in EXPORT_STAGES.items()}
        self.stage_of = {flag: name for name, (_, flags) in EXPORT_STAGES.items() for flag in flags}

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        stage = next((self.stage_of[n] for n in names if n in self.stage_of), "output")
        return self.groups[stage].add_argument(*names, **kwargs)

    def move_last(self, *stages: str) -> None:
        """Put these stages' groups after every other group (after the pass groups added later)."""
        for stage in stages:
            self.parser._action_groups.remove(self.groups[stage])
            self.parser._action_groups.append(self.groups[stage])


def _add_export_options(parser: argparse.ArgumentParser) -> _StageGroups:
    p = _StageGroups(parser)
    p.add_argument("model", nargs="?", help="model file: TorchScript, torch.export .pt2, state dict, or pickled nn.Module")
    p.add_argument("--target", help="target name (see `exporter targets`), `auto`, or a .toml target file" + _d("target"))
    p.add_argument("--calib", help="calibration data: .npy/.npz file, folder of .npy or images, or package.module:function")
    p.add_argument("--val", help="held-out validation data (default: a disjoint split of --calib)")
    p.add_argument("--out", help="output folder (default: <model name>-<target> next to the model)")
    p.add_argument("--force", action="store_true", default=None, help="overwrite an existing output folder")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--plan", metavar="FILE", help="read settings from a plan file (JSON/TOML, e.g. a previous plan.json); flags override it")
    p.add_argument("--model-class", help="package.module:ClassOrFactory that builds the model for a state dict")
    p.add_argument("--model-kwargs", help="JSON object of constructor arguments for --model-class, e.g. '{\"num_classes\": 10}'")
    p.add_argument("--trust-pickle", action="store_true", default=None, help="allow loading a pickled nn.Module (runs code from the file)")
    p.add_argument("--input-shape", action="append", metavar="SHAPE", help="input shape with batch first, e.g. 1,3,224,224; repeat per input (default: from --calib)")
    p.add_argument("--calib-samples", type=int, help="at most this many calibration samples (default: all but the validation split)")
    p.add_argument("--calib-nproc", type=int, metavar="N", help="calibrate in N torchrun processes on this machine, statistics merged" + _d("calib_nproc"))
    p.add_argument("--calib-nnodes", type=int, metavar="N", help="machines sharing the calibration (run the same command on each)" + _d("calib_nnodes"))
    p.add_argument("--calib-node-rank", type=int, metavar="R", help="this machine's rank, 0 .. nnodes-1" + _d("calib_node_rank"))
    p.add_argument("--calib-rdzv-endpoint", metavar="HOST:PORT", help="host:port of node 0 when calibrating across machines")
    p.add_argument("--val-samples", type=int, help="validation samples held out of --calib (default: --val-fraction of it)")
    p.add_argument("--val-fraction", type=float, help="fraction of --calib held out for validation" + _d("val_fraction"))
    p.add_argument("--batch-size", type=int, help="batch size for calibration and validation" + _d("batch_size"))
    p.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], help="activation range method (default: the target's)")
    p.add_argument("--image-preset", help="image preprocessing preset: imagenet, unit, symmetric, gray-unit (default: unit)")
    p.add_argument("--resize", type=int, help="resize images so the shorter side is this many pixels")
    p.add_argument("--crop", type=int, help="center-crop images to this square size")
    p.add_argument("--mean", help="per-channel mean to subtract, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", help="per-channel std to divide by, e.g. 0.229,0.224,0.225")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], help="ONNX exporter; auto tries dynamo, then TorchScript" + _d("exporter"))
    p.add_argument("--opset", type=int, help="ONNX opset (default: the target's)")
    p.add_argument("--seed", type=int, help="seed for splits and random inputs" + _d("seed"))
    p.add_argument("--latency-repeats", type=int, help="timed runs per latency figure" + _d("latency_repeats"))
    p.add_argument("--fail-if-slower", action="store_true", default=None, help="fail (exit 1) if the quantized model is slower than the float one")
    p.add_argument("--accuracy-budget", metavar="GOAL", help="keep sensitive layers in float until the goal is met: auto, agreement=0.99, accuracy_drop=0.5pt,trials=8,minutes=2")
    p.add_argument("--no-search", dest="search", action="store_false", default=None, help="do not search for a faster or more faithful int8/float mix when plain int8 misses the gate or is slower than float")
    p.add_argument("--search-minutes", type=float, metavar="M", help="time budget of that search in minutes; 0 turns it off (default: scaled to the model)")
    p.add_argument("--output-kind", action="append", metavar="[OUTPUT=]KIND", help="what an output is, when detection guesses wrong: logits, probabilities, probability, embedding, regression; OUTPUT=KIND for one output of several (default: detected from the outputs)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars (default: only on a terminal)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    return p


def _add_pass_options(p: argparse.ArgumentParser) -> None:
    from exporter.passes import PASSES

    group = p.add_argument_group("compression passes (run in the order listed; each --<pass>-<setting> needs its pass)")
    for name, cls in sorted(PASSES.items(), key=lambda item: item[1].order):
        flag = "--" + name.replace("_", "-")
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        doc = (cls.__doc__ or name).strip().splitlines()[0]
        if cls.shorthand:
            short = fields[cls.shorthand]
            group.add_argument(flag, dest=f"pass__{name}", metavar=cls.shorthand.upper(),
                               help=f"run `{name}`: {doc} Sets {cls.shorthand}: {short.metadata.get('help', '')}")
        else:
            group.add_argument(flag, dest=f"pass__{name}", action="store_true", default=None, help=f"run `{name}`: {doc}")
        for fname, fld in fields.items():
            if fname == cls.shorthand:
                continue
            default = fld.default if fld.default is not dataclasses.MISSING else "?"
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            group.add_argument(f"{flag}-{fname.replace('_', '-')}", dest=f"pass__{name}__{fname}", metavar="V",
                               help=f"{fld.metadata.get('help', '')} (default: {shown})")
    aliases = p.add_argument_group("recovery shortcuts (aliases of --distill-* settings)")
    for alias in PASS_ALIASES:
        if PASS_ALIASES[alias][0] in PASSES:
            kwargs = {"action": "store_true", "default": None} if alias == "resume" else {"metavar": "V"}
            aliases.add_argument("--" + alias.replace("_", "-"), dest=f"alias__{alias}", help=f"same as --distill-{alias.replace('_', '-')}", **kwargs)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat plan settings from the parsed flags: only what the user actually gave."""
    values = vars(args)
    settings = {k: v for k, v in values.items() if k in DEFAULTS and v is not None and k != "passes"}
    budget = values.get("accuracy_budget")
    if budget is not None:
        from exporter.accuracy.budget import AccuracyBudget

        settings["accuracy_budget"] = AccuracyBudget.parse(budget).to_dict()
    passes = _passes_from_args(values)
    if passes is not None:
        settings["passes"] = passes
    return settings


def _passes_from_args(values: dict[str, Any]) -> list[dict[str, Any]] | None:
    from exporter.passes import PASSES

    for alias, (pass_name, fname) in PASS_ALIASES.items():
        if values.get(f"alias__{alias}") is not None:
            values[f"pass__{pass_name}__{fname}"] = values[f"alias__{alias}"]
    chosen: list[dict[str, Any]] = []
    for name, cls in sorted(PASSES.items(), key=lambda item: item[1].order):
        enabled = values.get(f"pass__{name}")
        given = {k.split("__", 2)[2]: _text(v) for k, v in values.items() if k.startswith(f"pass__{name}__") and v is not None}
        implies = {f.name for f in dataclasses.fields(cls.Config) if f.metadata.get("enables_pass")}
        if enabled is None and implies & set(given) and cls.shorthand:
            enabled = next(f.default for f in dataclasses.fields(cls.Config) if f.name == cls.shorthand)
        if enabled is None:
            if given:
                flag = f"--{name.replace('_', '-')}-{next(iter(given)).replace('_', '-')}"
                raise PlanError(f"{flag} needs the pass itself: add --{name.replace('_', '-')}")
            continue
        item: dict[str, Any] = {"name": name, **given}
        if cls.shorthand:
            item[cls.shorthand] = _text(enabled)
        chosen.append(item)
    return chosen or None


def _text(value: Any) -> Any:
    """Mark a flag's text as typed on the command line (the only text read as a boolean: yes/no, true/false...)."""
    from exporter.settings import CommandLineText

    return CommandLineText(value) if isinstance(value, str) else value


def run_export_command(args: argparse.Namespace) -> int:
    """`exporter export`: build the plan, run it, print the headline."""
    from exporter.api import export
    from exporter.errors import ValidationFailed
    from exporter.progress import set_progress

    if args.progress is not None:
        set_progress(args.progress)
    if not args.model and not args.plan:
        raise PlanError("no model given: exporter export MODEL [--target cpu-int8] [--calib DATA] [--out DIR]")
    settings = settings_from_args(args)
    if args.dry_run:
        plan = export(plan_file=args.plan, dry_run=True, **settings)
        print(plan.to_json())
        return 0
    try:
        result = export(plan_file=args.plan, **settings)
    except ValidationFailed as exc:
        report = exc.result.report
        print(report["headline"], file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(result.report["headline"])
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    return 0


def run_targets_command(args: argparse.Namespace) -> int:
    """`exporter targets`: one line per target with what it needs and produces."""
    from targets import builtin_targets, load_target_file

    rows = []
    for name, path in builtin_targets().items():
        target = load_target_file(path)
        needs = [n for n, flag in (("calibration data", target.needs_calibration), ("fixed shapes", target.needs_fixed_shapes)) if flag]
        rows.append((name, target.description, ", ".join(needs) or "nothing", target.produces))
    rows.append(("auto", "picks the int8 settings that are fast on this CPU (reads its features)", "calibration data", "model.onnx (int8 QDQ)"))
    width = max(len(r[0]) for r in rows)
    for name, description, needs, produces in rows:
        print(f"{name:<{width}}  {description}")
        print(f"{'':<{width}}    needs: {needs}; produces: {produces}")
    return 0


def run_inspect_command(args: argparse.Namespace) -> int:
    """`exporter inspect OUT_DIR`: the worst layers of a finished run, with a plot written beside it."""
    from pathlib import Path

    from exporter.accuracy.inspect import inspect_run

    print(inspect_run(Path(args.out_dir), top=args.top))
    return 0


def run_verify_command(args: argparse.Namespace) -> int:
    """`exporter verify OUT_DIR --runtime R`: golden vectors on runtime R, judged with the gate's tolerance."""
    from exporter.verify import verify

    result = verify(args.out_dir, runtime=args.runtime, time_repeats=max(0, args.time))
    print(result.describe())
    return 0 if result.passed else 1
