"""A target whose runtime is not onnxruntime (`runtime = "openvino-cpu"`): validate and time the file there.

The int8 QDQ file the exporter made is the deployable file either way. For an OpenVINO target it is
also run through OpenVINO's CPU plugin on the whole validation split, with the inference precision
hint set to f32 explicitly (the plugin's default is bf16 on CPUs with AMX or AVX-512 BF16, which
would lower the precision of every float op): those figures join the gate as checks of their own,
so the target passes only if what OpenVINO computes meets the target's tolerances. The report also
gives the figures at the plugin's default precision (for information), and batch-1 latency of the
final and float files on onnxruntime's CPU provider and on OpenVINO, timed in alternation in the
same run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.golden import GOLDEN_FIGURES, figures, reference_batches

OPENVINO_RUNTIMES = ("openvino-cpu",)


def require_target_runtime(target) -> None:
    """Before any work: the target's own runtime must be installed (one line saying how, exit 2)."""
    if target.runtime in OPENVINO_RUNTIMES:
        from exporter.runners import require_openvino

        require_openvino()


def validate_on_target_runtime(run) -> None:
    """For an OpenVINO target: gate OpenVINO's own outputs and time it against onnxruntime (fills `run`)."""
    if run.plan.target.runtime not in OPENVINO_RUNTIMES:
        return
    from exporter.runners import openvino_model, openvino_version

    exported = getattr(getattr(run, "evaluator", None), "exported", None) or getattr(run, "export_reference", None)
    batches = reference_batches(exported or run.reference)
    fixed = None if run.plan.target.dynamic_batch else int(run.specs[0].shape[0])
    if fixed is not None:
        batches = [({k: _rows(v, fixed) for k, v in feed.items()}, _rows(out, fixed)) for feed, out in batches]
    reference = np.concatenate([out for _, out in batches])
    rules = _gate_rules(run.checks)
    rows: list[dict[str, Any]] = []
    compiled = {}
    for precision in ("f32", "default"):
        model, used = openvino_model(run.final_path, precision, threads=1)
        compiled[precision] = (model, used)
        request = model.create_infer_request()
        outputs = np.concatenate([np.array(request.infer(feed)[model.output(0)]) for feed, _ in batches])
        measured = figures(reference, outputs)
        row = {"runtime": f"openvino {openvino_version()}", "file": run.final_path.name, "precision": used,
               "figures": measured, "gated": precision == "f32"}
        if precision == "f32":
            checks = [_check(rule, measured[rule[0]], f"openvino ({used})") for rule in rules if measured.get(rule[0]) is not None]
            run.checks.extend(checks)
            row["passed"] = all(c.passed for c in checks)
        rows.append(row)
    latency = _time_side_by_side(run, compiled, batches[0][0])
    for row, key in zip(rows, ("openvino_f32", "openvino_default")):
        row["latency_ms"] = round(latency[key], 4)
    rows.append({"runtime": "openvino " + openvino_version(), "file": run.float_path.name, "precision": compiled["f32"][1],
                 "latency_ms": round(latency["openvino_float_f32"], 4)})
    rows.insert(0, {"runtime": "onnxruntime-cpu", "file": run.final_path.name, "precision": "",
                    "latency_ms": round(latency["onnxruntime_final"], 4)})
    run.measurements["runtimes"] = rows
    run.measurements["openvino_speedup_vs_onnxruntime"] = round(latency["onnxruntime_final"] / latency["openvino_f32"], 3)
    default = compiled["default"][1]
    run.data_notes.append(
        f"OpenVINO validated with INFERENCE_PRECISION_HINT=f32 (set it in your app: the CPU plugin's default here is {default}"
        + (", which lowers float ops to bfloat16)" if default == "bf16" else ")")
    )


def _time_side_by_side(run, compiled: dict, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Batch-1 latency of the final file on onnxruntime and OpenVINO (both precisions) and the float file on OpenVINO."""
    from exporter.runners import openvino_model
    from exporter.runtime import interleaved_latency_ms, session_for

    batch = 1 if run.plan.target.dynamic_batch else int(run.specs[0].shape[0])
    feed = {k: _rows(v, batch) for k, v in feed.items()}
    session = session_for(run.final_path, threads=1)
    float_model, _ = openvino_model(run.float_path, "f32", threads=1)
    requests = {name: model.create_infer_request() for name, (model, _) in compiled.items()}
    float_request = float_model.create_infer_request()
    return interleaved_latency_ms({
        "onnxruntime_final": lambda: session.run(None, feed),
        "openvino_f32": lambda: requests["f32"].infer(feed),
        "openvino_default": lambda: requests["default"].infer(feed),
        "openvino_float_f32": lambda: float_request.infer(feed),
    }, repeats=run.plan.latency_repeats)


def _gate_rules(checks: list) -> list[tuple[str, str, float]]:
    """(figure, rule, threshold) of the gate's checks on the first output that the figures here measure."""
    first = next((getattr(c, "output", "") for c in checks), "")
    return [(c.figure, c.rule, float(c.threshold)) for c in checks if c.figure in GOLDEN_FIGURES and getattr(c, "output", "") == first]


def _check(rule: tuple[str, str, float], measured: float, where: str):
    from exporter.figures import GateCheck

    figure, direction, threshold = rule
    passed = measured >= threshold if direction == ">=" else measured <= threshold + 1e-12
    return GateCheck(figure=figure, measured=float(measured), threshold=threshold, rule=direction, passed=bool(passed), output=where)


def _rows(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) < size:
        array = np.concatenate([array] * (size // len(array) + 1))
    return array[:size]

