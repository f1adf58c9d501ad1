"""The export pipeline: load, compress, trace to ONNX, quantize, package, validate, report.

`ExportRun` is the one object that flows through the stages; each stage is a function that reads
the plan and earlier results from it and fills in its own fields. Nothing is written to the user's
output folder until every stage has run (see `exporter.outputs`).
"""

from __future__ import annotations

import shutil
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import CalibrationError, CompressionError, PlanError, ValidationFailed
from exporter.inputs import InputSpec
from exporter.outputs import StagedOutputs
from exporter.plan import Plan

MODEL_FILE = "model.onnx"
FLOAT_FILE = "model.float.onnx"
RANDOM_VALIDATION_SAMPLES = 32

log = logging.getLogger("exporter")


@dataclass
class ExportRun:
    """State of one export run, filled in stage by stage (the report is built from it alone)."""

    plan: Plan
    outputs: StagedOutputs
    work_dir: Path
    original: Any = None
    model_format: str = ""
    program: Any = None  # the torch.export.ExportedProgram of a .pt2 file (None for other formats)
    model: Any = None
    input_names: list[str] = field(default_factory=list)
    specs: list[InputSpec] = field(default_factory=list)
    calib: Any = None
    val: Any = None
    data_notes: list[str] = field(default_factory=list)
    reference: list = field(default_factory=list)
    export_reference: list = field(default_factory=list)
    pass_records: list = field(default_factory=list)
    export_info: Any = None
    export_check: dict = field(default_factory=dict)
    quant_info: Any = None
    fallback: Any = None
    layer_decisions: list = field(default_factory=list)
    packages: list = field(default_factory=list)
    evaluator: Any = None  # exporter.evaluation.Evaluator: reference outputs, output kinds, figures
    float_figures: Any = None  # exporter.figures.Figures of the float ONNX against the original model
    final_figures: Any = None  # the final file against the original model
    gate_figures: Any = None  # the final file against the exported model: what the gate judges
    checks: list = field(default_factory=list)
    measurements: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def float_path(self) -> Path:
        return self.outputs.path(FLOAT_FILE)

    @property
    def final_path(self) -> Path:
        return self.outputs.path(MODEL_FILE)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @contextmanager
    def stage(self, name: str):
        """Time a stage into `stage_seconds`."""
        start = time.perf_counter()
        log.info("%s ...", name)
        try:
            yield
        finally:
            self.stage_seconds[name] = round(time.perf_counter() - start, 3)
            log.info("%s done in %.2f s", name, self.stage_seconds[name])


@dataclass
class ExportResult:
    """What `export()` returns: where the files went, the gate verdict and the full report."""

    out_dir: Path
    files: list[Path]
    passed: bool
    report: dict[str, Any]

    @property
    def model_path(self) -> Path:
        """The deployable ONNX file."""
        return self.out_dir / MODEL_FILE


def run_export(plan: Plan) -> ExportResult:
    """Run every stage of `plan`; raise a typed `ExporterError` on bad input, `ValidationFailed` on a missed gate.

    On `ValidationFailed` the outputs are written all the same and the exception carries the result.
    """
    from exporter.errors import raise_if_disk_full, raise_if_user_code
    from exporter.run_lock import work_folder

    outputs = StagedOutputs(plan.out_dir, plan.force)
    with work_folder() as work:
        outputs.check_writable()  # before any work: the lock, and --out is writable
        from exporter.target_runtime import require_target_runtime

        require_target_runtime(plan.target)  # and the target's runtime is installed
        run = ExportRun(plan=plan, outputs=outputs, work_dir=Path(work))
        try:
            for stage in (load_stage, data_stage, compress_stage, export_stage, quantize_stage,
                          accuracy_stage, fidelity_stage, package_stage, measure_stage, runtime_stage):
                with run.stage(stage.__name__.removesuffix("_stage")):
                    stage(run)
            from exporter.report import build_report, write_report

            report = build_report(run)
            write_report(run, report)
            from exporter.report_html import write_html_report

            write_html_report(run.outputs.path("report.html"), report)
            files = outputs.commit()
            shutil.rmtree(checkpoint_dir(plan), ignore_errors=True)
        except BaseException as exc:
            outputs.discard()
            raise_if_disk_full(exc)
            raise_if_user_code(exc)
            raise
    result = ExportResult(out_dir=plan.out_dir, files=files, passed=run.passed, report=report)
    if not run.passed:
        failed = [c.describe() for c in run.checks if not c.passed]
        error = ValidationFailed(f"validation failed: {'; '.join(failed)} (outputs written to {plan.out_dir})")
        error.result = result
        raise error
    return result


def checkpoint_dir(plan: Plan) -> Path:
    """Where training passes keep checkpoints between runs (beside the output folder, hidden)."""
    return plan.out_dir.parent / f".{plan.out_dir.name}.checkpoints"


def load_stage(run: ExportRun) -> None:
    """Load the user's model (the untouched original is the reference and the teacher)."""
    from exporter.loading import load_model

    loaded = load_model(run.plan.model)
    run.original, run.model_format, run.input_names = loaded.module, loaded.format, loaded.input_names
    run.program = loaded.program
    run.model = run.original


def data_stage(run: ExportRun) -> None:
    """Open calibration/validation data, decide the input specs, split, and compute reference outputs."""
    from calibration import DataOptions, ImagePreprocess, bind_to_inputs, infer_input_specs, open_samples, split_samples
    from calibration.split import draw_indices, samples_needed

    plan, data = run.plan, run.plan.data
    image = _image_options(data, ImagePreprocess)
    needed = data.calib_samples if data.val else samples_needed(data.calib_samples, data.val_samples, data.val_fraction)
    options = DataOptions(image=image, max_samples=needed, seed=data.seed, scratch=run.work_dir / "samples")
    if plan.input_shapes and len(plan.input_shapes) != len(run.input_names):
        raise PlanError(
            f"the model takes {len(run.input_names)} input(s) ({', '.join(run.input_names)}) "
            f"but {len(plan.input_shapes)} --input-shape value(s) were given"
        )
    samples = bind_to_inputs(open_samples(data.calib, options), run.input_names) if data.calib else None
    run.data_notes.extend(samples.notes if samples is not None else ())
    if data.val:
        run.calib = samples.subset(range(min(len(samples), data.calib_samples or len(samples)))) if samples else None
        val_options = DataOptions(image=image, max_samples=data.val_samples, seed=data.seed, scratch=options.scratch)
        val = open_samples(data.val, val_options)
        run.data_notes.extend(val.notes)
        if data.val_samples is not None and len(val) > data.val_samples:
            val = val.subset(draw_indices(len(val), data.val_samples, data.seed))
        run.val = bind_to_inputs(val, run.input_names)
    elif samples is not None:
        run.calib, run.val = split_samples(samples, data.calib_samples, data.val_samples, data.seed, data.val_fraction)
    if plan.input_shapes:
        dtypes = [s.dtype for s in infer_input_specs(samples, run.input_names)] if samples else ["float32"] * len(run.input_names)
        run.specs = [InputSpec(n, tuple(shape), d) for n, shape, d in zip(run.input_names, plan.input_shapes, dtypes)]
    elif samples is not None:
        run.specs = infer_input_specs(samples, run.input_names)
    else:
        raise PlanError("cannot tell the model's input shape: pass --calib PATH or --input-shape 1,3,224,224")
    if samples is not None and (run.val is None or len(run.val) == 0):
        raise CalibrationError(
            f"--calib {data.calib} gives {len(samples)} sample(s), too few to hold any out for validation (the gate "
            "would judge the model on random inputs): give more samples, or a separate --val"
        )
    if run.val is None or len(run.val) == 0:
        run.val = _random_samples(run.specs, RANDOM_VALIDATION_SAMPLES, data.seed)
        run.data_notes.append(
            f"no held-out data: validated on {RANDOM_VALIDATION_SAMPLES} random inputs; pass --calib or --val for real figures"
        )
    _check_model_accepts(run)
    from exporter.evaluation import Evaluator

    fixed = None if plan.target.dynamic_batch else run.specs[0].shape[0]
    run.evaluator = Evaluator.build(run.original, run.val, run.specs, data.batch_size, plan.target.tolerances,
                                    overrides=plan.output_kinds, fixed_batch=fixed)
    run.reference = run.evaluator.original


def compress_stage(run: ExportRun) -> None:
    """Run the plan's compression passes in order; each gets a private copy and is measured against the original."""
    if not run.plan.passes:
        return
    import torch

    from exporter.passes import PASSES, PassContext
    from exporter.validate import compare_torch

    example_inputs = tuple(torch.from_numpy(s.example(batch=2, seed=run.plan.data.seed)) for s in run.specs)
    lifted = pass_graph(run, example_inputs)
    ctx = PassContext(
        example_inputs=example_inputs,
        input_specs=run.specs,
        teacher=lifted,
        calib=run.calib,
        val=run.val,
        seed=run.plan.data.seed,
        work_dir=run.work_dir,
        checkpoint_dir=checkpoint_dir(run.plan),
        quantization=run.plan.target.quantization,
        batch_size=run.plan.data.batch_size,
    )
    model = lifted
    for step in run.plan.passes:
        model, record = PASSES.get(step.name)(step.config).run(model, ctx)
        record.metrics = compare_torch(model, run.reference)
        run.pass_records.append(record)
    run.model = model
    from exporter.validate import reference_outputs

    run.export_reference = reference_outputs(model, run.val, run.specs, run.plan.data.batch_size)


def pass_graph(run: ExportRun, example_inputs: tuple) -> Any:
    """The lifted `torch.export` graph of the user's model, which every compression pass works on.

    A `.pt2` program is lifted as it is; an `nn.Module` is captured with `torch.export` first (if that
    fails, the passes get the module itself and read it with `torch.fx`, and a warning says why).
    A TorchScript file has no graph the passes can rebuild: one line says how to get a `.pt2`.
    The same graph is the teacher: each pass works on a private copy and never changes what it is given.
    """
    from exporter.program_graph import CaptureFailure, capture, lift

    if run.model_format == "torchscript":
        raise CompressionError(
            f"{run.plan.model.path} is a TorchScript file, whose layers compression passes cannot rebuild: save a "
            "torch.export program instead, torch.export.save(torch.export.export(model.eval(), example_args), "
            "'model.pt2'), and pass that (or a state dict with --model-class)"
        )
    program = run.program
    if program is None:
        try:
            program = capture(run.original, example_inputs)
        except CaptureFailure as exc:
            run.warnings.append(f"{exc}; the compression passes read the module with torch.fx instead")
            return run.original
    return lift(program)


def export_stage(run: ExportRun) -> None:
    """Trace the (compressed) model to the float ONNX file and check it against PyTorch on real samples."""
    from exporter.onnx_export import compare_with_torch, export_onnx

    target = run.plan.target
    run.export_info = export_onnx(
        run.model, run.specs, run.float_path, target.opset, dynamic_batch=target.dynamic_batch, exporter=run.plan.exporter
    )
    feeds = [feed for feed, _, _ in run.reference[:4]]
    if not target.dynamic_batch:
        feeds = [_fixed_batch(feed, run.specs) for feed in feeds]
    run.export_check = compare_with_torch(
        run.model, run.float_path, feeds, target.tolerances.export_max_abs_error, target.tolerances.export_min_cosine
    )


def quantize_stage(run: ExportRun) -> None:
    """Quantize the float file as the target says, calibrating on the calibration split."""
    from exporter.quantizers import quantize_model

    run.quant_info = quantize_model(_quantize_request(run))
    evaluator = run.evaluator
    if run.export_reference:
        evaluator.use_exported(run.export_reference)
    run.gate_figures = evaluator.onnx(run.final_path)
    run.final_figures = evaluator.onnx(run.final_path, versus="original") if run.export_reference else run.gate_figures
    if run.plan.target.quantization.mode == "none":
        run.float_figures = run.final_figures
    else:
        run.float_figures = evaluator.onnx(run.float_path, versus="original")
    run.checks = evaluator.gate(run.gate_figures)


def fidelity_stage(run: ExportRun) -> None:
    """After compression: warn when the final model misses the target's tolerances against the ORIGINAL model.

    The gate judges quantization (the int8 file against the compressed model); what the passes cost is the
    user's trade, but a run that passes with, say, 60% agreement with the original must say so.
    """
    if not run.export_reference:
        return
    missed = [c for c in run.evaluator.gate(run.final_figures) if not c.passed]
    if missed:
        figures = ", ".join(
            f"{c.figure} {c.measured:.4g} (the target asks {c.rule} {c.threshold:g})" + (f" on {c.output}" if c.output else "")
            for c in missed
        )
        run.warnings.append(
            f"the compressed model is far from the original: {figures} against the original model; the gate judged "
            "quantization only (the int8 file against the compressed model): recover more (--distill, a longer "
            "--distill-epochs or --distill-minutes) or compress less"
        )


def accuracy_stage(run: ExportRun) -> None:
    """The mixed-precision search (`exporter.accuracy.search`), on by default for static QDQ int8.

    It runs when the plain int8 model misses the gate (or the `--accuracy-budget` goal) or is slower
    than the float ONNX at batch 1, within `--search-minutes` (default: scaled to the model);
    `--no-search` turns it off unless `--accuracy-budget` asks for it.
    """
    scheme = run.plan.target.quantization
    asked = run.plan.accuracy_budget is not None
    if scheme.mode != "static" or scheme.format != "qdq" or run.calib is None:
        return
    if not (run.plan.search or asked):
        _record_plain_decisions(run, "search off (--no-search): every quantizable layer stays int8")
        return
    from exporter.accuracy.budget import AccuracyBudget
    from exporter.accuracy.search import (
        SearchRequest, algorithm_notes, auto_search_seconds, batches_from, run_search, slower_than_float,
    )

    budget = AccuracyBudget.from_settings(run.plan.accuracy_budget)
    goal = budget.tolerances(run.plan.target.tolerances)
    make_reader = _quantize_request(run).make_reader
    feeds = batches_from(make_reader(), count=2)
    latency_feed = {k: np.ascontiguousarray(v[:1] if run.plan.target.dynamic_batch else v) for k, v in feeds[0].items()}
    missed = not all(c.passed for c in run.evaluator.gate(run.gate_figures, goal))
    slower = slower_than_float(run.final_path, run.float_path, latency_feed)
    if not (missed or slower):
        _record_plain_decisions(run, "plain int8 meets the goal and is no slower than the float model: no search needed")
        return
    if run.plan.search_minutes is not None:
        seconds = run.plan.search_minutes * 60.0
    elif asked and "max_minutes" in run.plan.accuracy_budget:
        seconds = budget.max_minutes * 60.0
    else:
        seconds = auto_search_seconds(run.float_path)
    quantized_from = Path(getattr(run.quant_info, "quantized_from", "") or run.work_dir / "preprocessed.onnx")
    if (run.work_dir / "ptq_reference.onnx").is_file():  # equalized, before AdaRound and bias correction
        quantized_from = run.work_dir / "ptq_reference.onnx"
    ptq_log = getattr(run.quant_info, "ptq_log", None)
    baseline = run.work_dir / "plain_int8.onnx"
    baseline.write_bytes(run.final_path.read_bytes())
    from exporter.accuracy.cache import CACHE_FILE

    run.fallback = run_search(SearchRequest(
        float_path=run.float_path, plain_path=baseline, prepared_path=quantized_from, plain_figures=run.gate_figures,
        evaluator=run.evaluator, goal=goal, work_dir=run.work_dir / "search", latency_feed=latency_feed,
        ranking_feeds=feeds, seconds=seconds, max_trials=budget.max_trials if asked else 16, scheme=repr(scheme),
        cache_in=run.plan.out_dir / CACHE_FILE, cache_out=run.outputs.path(CACHE_FILE),
        latency_repeats=run.plan.latency_repeats, algorithms=algorithm_notes(ptq_log),
        why=("plain int8 misses the goal" if missed else "") + (" and " if missed and slower else "")
        + ("plain int8 is slower than the float model" if slower else ""),
    ))
    run.final_path.write_bytes(run.fallback.best_path.read_bytes())
    run.gate_figures = run.fallback.best.figures
    run.final_figures = run.evaluator.onnx(run.final_path, versus="original") if run.export_reference else run.gate_figures
    run.checks = run.evaluator.gate(run.gate_figures, goal)
    if not run.fallback.met or run.fallback.chose_float_model or run.fallback.slower_than_float:
        run.warnings.append(run.fallback.why)


def _record_plain_decisions(run: ExportRun, why: str) -> None:
    """The per-layer table when no search ran: every quantized layer is int8, for `why`."""
    import onnx

    from exporter.accuracy.decision import plain_decisions
    from exporter.accuracy.search import algorithm_notes
    from exporter.accuracy.units import quantized_units

    units = quantized_units(onnx.load(str(run.final_path), load_external_data=False))
    run.layer_decisions = plain_decisions(units, why, algorithm_notes(getattr(run.quant_info, "ptq_log", None)))


def package_stage(run: ExportRun) -> None:
    """Run the target's packaging steps (ORT format, mobile checks...) into the staging folder."""
    if not run.plan.target.package_steps:
        return
    from targets.packaging import run_package_steps

    run.packages = run_package_steps(run.plan.target, run.final_path, run.outputs.staging, run.specs)


def measure_stage(run: ExportRun) -> None:
    """Sizes, parameter counts and latency (median, one thread) of PyTorch, ORT fp32 and the final file.

    Timed at batch 1, or at the file's own batch size when the target fixes shapes.
    """
    import torch

    from exporter.modelstats import count_params
    from exporter.runtime import interleaved_latency_ms, session_for
    from exporter.figures import GateCheck, rule_passes

    batch = 1 if run.plan.target.dynamic_batch else run.specs[0].shape[0]
    feed = _fixed_batch(run.reference[0][0], run.specs, batch=batch)
    float_session = session_for(run.float_path, threads=1)
    calls = {"ort_float": lambda: float_session.run(None, feed)}
    if run.quant_info.mode != "none":
        final_session = session_for(run.final_path, threads=1)
        calls["final"] = lambda: final_session.run(None, feed)
    args = [torch.from_numpy(v) for v in feed.values()]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            calls["pytorch_eager"] = lambda: run.original(*args)
            latency = interleaved_latency_ms(calls, repeats=run.plan.latency_repeats)
    finally:
        torch.set_num_threads(previous_threads)
    float_ms = latency["ort_float"]
    final_ms = latency.get("final", float_ms)
    float_bytes, final_bytes = run.float_path.stat().st_size, run.final_path.stat().st_size
    run.measurements = {
        "params_original": count_params(run.original) if hasattr(run.original, "parameters") else None,
        "params_final": count_params(run.model) if hasattr(run.model, "parameters") else None,
        "size_float_bytes": float_bytes,
        "size_final_bytes": final_bytes,
        "size_ratio": round(float_bytes / final_bytes, 3),
        "latency_ms": {
            "pytorch_eager": round(latency["pytorch_eager"], 4),
            "ort_float": round(float_ms, 4),
            "final": round(final_ms, 4),
        },
        "speedup_vs_float": round(float_ms / final_ms, 3),
        "latency_setup": f"batch {batch}, 1 intra-op thread, median of repeated runs timed in alternation",
    }
    if run.quant_info.mode != "none" and final_ms > float_ms:
        run.warnings.append(
            f"the {run.plan.target.name} model is SLOWER than the float ONNX on this CPU "
            f"({final_ms:.3f} ms vs {float_ms:.3f} ms at batch {batch}): check the target's scheme (try --target auto)"
        )
    if run.plan.fail_if_slower and run.quant_info.mode != "none":
        ratio = run.measurements["speedup_vs_float"]
        run.checks.append(GateCheck("speedup_vs_float", ratio, 1.0, ">=", rule_passes(ratio, 1.0, ">=")))


def runtime_stage(run: ExportRun) -> None:
    """Golden vectors beside the model (for apps on any runtime), then the target's own runtime if not onnxruntime."""
    from exporter.golden import write_run_golden
    from exporter.target_runtime import validate_on_target_runtime

    write_run_golden(run)
    validate_on_target_runtime(run)
    if Path(run.plan.model.path).is_file():
        run.measurements["size_pytorch_bytes"] = Path(run.plan.model.path).stat().st_size


def _quantize_request(run: ExportRun):
    from calibration import OrtCalibrationReader
    from exporter.quantizers import QuantizeRequest

    calib, specs = run.calib, run.specs
    batch = run.plan.data.batch_size if run.plan.target.dynamic_batch else specs[0].shape[0]
    from exporter.training.settings import Rendezvous

    data = run.plan.data
    rendezvous = Rendezvous(nproc=data.calib_nproc, nnodes=data.calib_nnodes, node_rank=data.calib_node_rank,
                            endpoint=data.calib_rdzv_endpoint)
    make_reader = (lambda: OrtCalibrationReader(calib, specs, batch_size=batch, rendezvous=rendezvous)) if calib is not None else None
    return QuantizeRequest(
        float_path=run.float_path,
        out_path=run.final_path,
        scheme=run.plan.target.quantization,
        input_specs=specs,
        work_dir=run.work_dir,
        make_reader=make_reader,
    )


def _fixed_batch(feed: dict[str, np.ndarray], specs: list[InputSpec], batch: int | None = None) -> dict[str, np.ndarray]:
    """Cut a feed down to the spec's fixed batch size (or `batch`) for fixed-shape files and timing."""
    out = {}
    for spec in specs:
        size = batch or spec.shape[0]
        array = feed[spec.name][:size]
        if len(array) < size:
            array = np.concatenate([array] * (size // len(array) + 1))[:size]
        out[spec.name] = array
    return out


def _image_options(data, image_cls):
    image = image_cls.preset(data.image_preset) if data.image_preset else image_cls()
    changes = {k: getattr(data, k) for k in ("resize", "crop", "mean", "std") if getattr(data, k) is not None}
    if changes:
        import dataclasses

        image = dataclasses.replace(image, **changes)
    image.validate()
    return image


def _random_samples(specs: list[InputSpec], count: int, seed: int):
    from calibration import ListSampleSet, Sample

    arrays = {s.name: s.example(batch=count, seed=seed) for s in specs}
    return ListSampleSet(
        [Sample({n: a[i] for n, a in arrays.items()}, origin=f"random[{i}]") for i in range(count)],
        description="random inputs",
    )


def _check_model_accepts(run: ExportRun) -> None:
    """One forward pass on a real sample, so a shape, dtype or output the model gets wrong is named before any long work."""
    import torch

    from calibration import iter_batches

    sample_set = run.calib if run.calib is not None and len(run.calib) else run.val
    batch = next(iter(iter_batches(sample_set.subset([0]), run.specs, 1)))
    try:
        with torch.no_grad():
            outputs = run.original(*[torch.from_numpy(batch.inputs[s.name]) for s in run.specs])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        integers = [s.name for s in run.specs if np.issubdtype(batch.inputs[s.name].dtype, np.integer)]
        if integers and _computes_in_float(run.original):
            names = ", ".join(f"{n!r} ({batch.inputs[n].dtype})" for n in integers)
            raise CalibrationError(
                f"the model computes in floating point but the data gives integer input {names}: {first}; "
                "convert the data to float32 as in training (e.g. pixels / 255)"
            ) from None
        shapes = ", ".join(f"{s.name!r} of shape {tuple(batch.inputs[s.name].shape)}" for s in run.specs)
        raise CalibrationError(
            f"the model rejects input {shapes}: {first} (check --input-shape and the calibration data)"
        ) from None
    _check_model_outputs(outputs, sample_set.description)


def _computes_in_float(model) -> bool:
    try:
        return any(p.is_floating_point() for p in list(model.parameters()) + list(model.buffers()))
    except Exception:  # noqa: BLE001 - a model without parameters() (a plain function)
        return False


def _check_model_outputs(outputs, where: str) -> None:
    """The model must return tensors (ONNX outputs are tensors), and finite ones on real data."""
    import torch

    from exporter.errors import ExportError, LoadError

    tensors = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs) if isinstance(outputs, (tuple, list)) else None
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        kinds = type(outputs).__name__ if tensors is None else ", ".join(type(t).__name__ for t in tensors) or "nothing"
        raise LoadError(
            f"the model returns {kinds}, not a tensor or a tuple of tensors: ONNX outputs are tensors; "
            "make forward return them (e.g. a tuple instead of a dict)"
        )
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors):
        raise ExportError(
            f"the PyTorch model itself outputs NaN or Inf on the first sample of {where} (whose inputs are finite): "
            "fix the model's weights or forward before exporting"
        )
