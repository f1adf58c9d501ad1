"""Static int8 for transformer encoders: smoothed weight MatMuls in int8, everything else float, checked end to end.

Rule (the static quantizer calls `quantize_transformer` when `find_transformer` recognises the graph):
1. per group of weight MatMuls, choose the SmoothQuant alpha and static / dynamic / float by simulated
   error (`exporter.ptq.transformer_plan`);
2. insert the smoothing `Mul`s (`exporter.ptq.smoothquant`), calibrate the MatMul inputs once
   (MinMax), and write one file: `quantize_static` (QDQ) for the static MatMuls, then
   `quantize_dynamic` restricted to the dynamic ones (`DynamicQuantizeLinear` + `MatMulInteger`);
   large embedding tables (`Gather` of a float initializer) are stored int8 too (file size);
   Softmax, normalization, GELU, residual Adds and attention MatMuls get no Q/DQ at all;
3. probe each quantized group alone (`exporter.ptq.transformer_probe`): its output loss 1 - cosine on
   held calibration samples; groups stay int8 cheapest first while their losses add up to at most
   `PLANNED_SHARE` of the budget 1 - `min_cosine`, the rest go to float;
4. run the written file and the float model on the held samples; while the outputs' mean cosine is
   below `min_cosine`, the embedding tables go back to float first, then the int8 group with the
   largest probed loss goes to float (at most
   `max_demotions` times) and the file is written again from the same calibration cache.
Every weight MatMul gets a `MatMulDecision` and every smoothed group a `SmoothingRecord` in the log.

Measured on all-MiniLM-L6-v2 (real sentences, sequence 128, cpu-int8 with 7-bit weights): whole-graph
static QDQ (the old default) gives embedding cosine 0.33-0.37; static or dynamic int8 of every weight
MatMul without smoothing 0.93 / 0.96. This path: 30 static, 4 dynamic, 2 float MatMuls, cosine 0.995
on held-out sentences, 1.6x the float ONNX speed, 3.4x smaller. The FFN output projections (reading
the GELU output) are the sensitive ones: each alone costs 0.001-0.005 of output cosine.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.errors import QuantizationError
from exporter.ptq.activations import CalibrationBatches, for_each_batch, session
from exporter.ptq.records import PtqLog
from exporter.ptq.smoothquant import apply_smoothing, smoothing_scales, weight_in_out
from exporter.ptq.transformer_error import WeightGrid
from exporter.ptq.transformer_graph import TransformerGraph, find_transformer
from exporter.ptq.transformer_plan import MIN_SQNR_DB, GroupChoice, choose_treatment, demote, measure_group
from exporter.quiet import quiet_onnxruntime
from targets.profile import QuantScheme

SIMULATION_SAMPLES = 16
CHECK_SAMPLES = 32
MIN_COSINE = 0.995
MAX_DEMOTIONS = 12
TENSORS_PER_PASS = 8
EMBEDDING_MIN_ELEMENTS = 65536
PLANNED_SHARE = 0.9  # of the cosine budget that the probed groups' own losses may add up to (their sum predicted
# the written file's loss within 5% on MiniLM: 0.00229 planned, 0.00227 measured)


@dataclass(frozen=True)
class TransformerSettings:
    """The knobs of the transformer path (defaults measured on MiniLM; see the module docstring)."""

    min_sqnr_db: float = MIN_SQNR_DB
    min_cosine: float = MIN_COSINE
    max_demotions: int = MAX_DEMOTIONS
    simulation_samples: int = SIMULATION_SAMPLES
    check_samples: int = CHECK_SAMPLES


@dataclass
class TransformerResult:
    """What `quantize_transformer` did: the log, the smoothed float model it quantized, the end-to-end check."""

    log: PtqLog
    smoothed_path: Path
    cache_path: Path
    calibration_batches: int
    cosine: float
    rounds: int
    counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def detect_transformer(model_path: Path) -> TransformerGraph | None:
    """The transformer parts of the float model at `model_path`, or None when it is not transformer-style."""
    graph = find_transformer(onnx.load(str(model_path), load_external_data=False))
    return graph if graph.is_transformer else None


def quantize_transformer(
    prepared: Path,
    out_path: Path,
    scheme: QuantScheme,
    make_reader: Callable[[], Any],
    calibrate: Callable[[Path, Any, list[str], Path], int],
    work_dir: Path,
    forced_float: tuple[str, ...] = (),
    settings: TransformerSettings = TransformerSettings(),
) -> TransformerResult:
    """Write the int8 transformer file for `prepared` to `out_path` (see the module docstring).

    `calibrate(model, reader, op_types, cache)` collects MinMax activation ranges of the given op
    types' tensors into an onnxruntime calibration cache and returns the batch count (the static
    quantizer's own calibration, so bounded streaming and sharding apply). `forced_float` names
    weight MatMuls the caller wants kept float (the accuracy search).
    """
    model = onnx.load(str(prepared))
    graph = find_transformer(model)
    log = PtqLog()
    held = CalibrationBatches(make_reader(), max(settings.simulation_samples, settings.check_samples))
    grid = WeightGrid(per_channel=scheme.per_channel, reduce_range=scheme.reduce_range)
    choices = _measure_groups(model, graph, held, settings.simulation_samples, grid)
    for choice in choices:
        if any(m.node in forced_float for m in choice.matmuls):
            choice.treatment, choice.reason = "float", "kept float by the caller (accuracy search)"
        else:
            choose_treatment(choice, settings.min_sqnr_db, dynamic_allowed=scheme.activation_type == "uint8")

    smoothed = prepare_inputs(model, graph, choices, log)
    smoothed_path = work_dir / "transformer_smoothed.onnx"
    onnx.save(smoothed, str(smoothed_path))
    cache = work_dir / "calibration.json"
    cache.unlink(missing_ok=True)
    batches = calibrate(smoothed_path, make_reader(), ["MatMul", "Gemm", "Gather"], cache)

    reference = _outputs(model, held)

    def loss(candidate: onnx.ModelProto) -> float:
        return 1.0 - _mean_cosine(reference, _outputs(candidate, held))

    from exporter.ptq.ranges import read_cache
    from exporter.ptq.transformer_probe import group_losses

    budget = 1.0 - settings.min_cosine
    for tensor, value in group_losses(smoothed, choices, read_cache(cache), grid, loss).items():
        next(c for c in choices if c.tensor == tensor).output_loss = value
    spent = 0.0
    for choice in sorted((c for c in choices if c.output_loss is not None), key=lambda c: c.output_loss):
        if spent + choice.output_loss > PLANNED_SHARE * budget:
            demote(choice, f"alone costs output cosine {choice.output_loss:.2g}; with it the groups' planned loss "
                           f"{spent + choice.output_loss:.2g} would pass {PLANNED_SHARE * budget:.2g}")
        else:
            spent += choice.output_loss
    rounds, cosine = 0, -1.0
    tables = embedding_tables(model)
    while True:
        rounds += 1
        write_mixed(smoothed_path, out_path, cache, choices, scheme, work_dir, gathers=tables)
        cosine = 1.0 - loss(onnx.load(str(out_path)))
        log.notes.append(f"transformer int8 round {rounds}: {_counts(choices)}, {len(tables)} embedding table(s) int8, "
                         f"output cosine {cosine:.5f}")
        quantized = [c for c in choices if c.treatment != "float"]
        if cosine >= settings.min_cosine or rounds > settings.max_demotions or not (quantized or tables):
            break
        if tables:
            log.notes.append("embedding tables back to float: the file missed the output cosine goal with them in int8")
            tables = []
            continue
        worst = max(quantized, key=lambda c: c.output_loss or 0.0)
        demote(worst, f"alone costs output cosine {worst.output_loss:.2g}, the most while the file had {cosine:.4f} "
                      f"< {settings.min_cosine:g}")
    if not any(c.treatment != "float" for c in choices):
        shutil.copyfile(prepared, out_path)
        log.notes.append("no weight MatMul stays int8 faithfully: the file is the float model")
    for choice in choices:
        for decision in choice.decisions():
            log.add(decision)
    return TransformerResult(
        log=log,
        smoothed_path=smoothed_path,
        cache_path=cache,
        calibration_batches=batches,
        cosine=cosine,
        rounds=rounds,
        counts=_counts(choices),
        settings={"min_sqnr_db": settings.min_sqnr_db, "min_cosine": settings.min_cosine,
                  "attention_matmuls_float": list(graph.attention_matmuls)},
    )


def prepare_inputs(model: onnx.ModelProto, graph: TransformerGraph, choices: list[GroupChoice], log: PtqLog) -> onnx.ModelProto:
    """A copy of `model` where each int8 group reads its own input: smoothed (`Mul`) at its alpha, else an `Identity`."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    weights = _weights(model, graph)
    for choice in choices:
        if choice.alpha is None:
            if choice.treatment != "float":
                _isolate_input(prepared, choice)
            continue
        per_matmul = [weight_in_out(weights, m) for m in choice.matmuls]
        scales = smoothing_scales(choice.absmax, per_matmul, choice.alpha)
        log.add(apply_smoothing(prepared, choice.matmuls, scales, choice.alpha, choice.absmax))
        choice.applied_alpha = choice.alpha
    return prepared


def _isolate_input(model: onnx.ModelProto, choice: GroupChoice) -> None:
    """Give the group its own copy of its input (`Identity`), as the smoothing `Mul` does.

    onnxruntime's QDQ quantizer makes every reader of a quantized tensor read the dequantized one;
    without this the residual Add beside a LayerNorm -> MatMul would read int8-rounded values.
    onnxruntime removes the Identity when it loads the file.
    """
    members = {m.node for m in choice.matmuls}
    index = min(i for i, node in enumerate(model.graph.node) if node.name in members)
    copy = f"{choice.tensor}.int8_input"
    for node in model.graph.node:
        if node.name in members:
            node.input[0] = copy
    model.graph.node.insert(index, onnx.helper.make_node("Identity", [choice.tensor], [copy], name=f"{choice.matmuls[0].node}.isolate"))


def _weights(model: onnx.ModelProto, graph: TransformerGraph) -> dict[str, np.ndarray]:
    wanted = {m.weight for m in graph.weight_matmuls}
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in wanted}


def _measure_groups(model: onnx.ModelProto, graph: TransformerGraph, held: CalibrationBatches, samples: int,
                    grid: WeightGrid) -> list[GroupChoice]:
    """Capture each group's activation on `samples` held samples (a few tensors per run) and measure it."""
    groups = graph.groups()
    weights = _weights(model, graph)
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    feeds, taken = [], 0
    for feed in held:
        if taken >= samples:
            break
        feeds.append(feed)
        taken += len(next(iter(feed.values())))
    tensors = list(groups)
    choices: list[GroupChoice] = []
    for start in range(0, len(tensors), TENSORS_PER_PASS):
        chunk = tensors[start : start + TENSORS_PER_PASS]
        captured: dict[str, list[np.ndarray]] = {t: [] for t in chunk}
        for_each_batch(model, chunk, feeds, lambda values: [captured[t].append(v) for t, v in values.items()])
        for tensor in chunk:
            x = np.concatenate(captured.pop(tensor)).astype(np.float32)
            if x.ndim == 2:
                x = x[:, None, :]
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            matmuls = groups[tensor]
            smoothable = all(uses.get(m.weight, 0) == 1 for m in matmuls)
            choices.append(measure_group(tensor, matmuls, x, weights, grid, smoothable))
    return choices


def embedding_tables(model: onnx.ModelProto) -> list[str]:
    """`Gather` nodes reading a float initializer of at least `EMBEDDING_MIN_ELEMENTS` values (token/position tables).

    In int8 they make the file about 4x smaller where they dominate it (MiniLM's word table is half its
    weights); the lookup itself costs no time either way.
    """
    tables = {i.name for i in model.graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and int(np.prod(i.dims)) >= EMBEDDING_MIN_ELEMENTS}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.name and n.input[0] in tables]


def write_mixed(smoothed_path: Path, out_path: Path, cache: Path, choices: list[GroupChoice], scheme: QuantScheme,
                work_dir: Path, gathers: list[str] | None = None) -> None:
    """`quantize_static` of the static MatMuls (and `gathers`), then `quantize_dynamic` of the dynamic ones, into `out_path`.

    With no MatMul left in int8 the file is the smoothed float model (the same function).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    static_nodes = [m.node for c in choices if c.treatment == "static" for m in c.matmuls] + list(gathers or [])
    dynamic_nodes = [m.node for c in choices if c.treatment == "dynamic" for m in c.matmuls]
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if scheme.weight_type not in types or scheme.activation_type not in types:
        raise QuantizationError(
            f"the transformer int8 path needs 8-bit types, got activation {scheme.activation_type!r} and weight {scheme.weight_type!r}"
        )
    stage = work_dir / "transformer_static.onnx"
    try:
        with quiet_onnxruntime():
            if static_nodes:
                quantize_static(
                    str(smoothed_path),
                    str(stage),
                    calibration_data_reader=None,
                    calibration_cache_path=str(cache),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                    nodes_to_quantize=static_nodes,
                    per_channel=scheme.per_channel,
                    reduce_range=scheme.reduce_range,
                    activation_type=types[scheme.activation_type],
                    weight_type=types[scheme.weight_type],
                    # MatMul outputs stay float: the bias Add and the residual stream are not re-quantized,
                    # and onnxruntime runs DQ -> MatMul as MatMulIntegerToFloat
                    extra_options={"ActivationSymmetric": scheme.activation_symmetric,
                                   "WeightSymmetric": scheme.weight_symmetric,
                                   "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
                )
            else:
                shutil.copyfile(smoothed_path, stage)
            if dynamic_nodes:
                quantize_dynamic(
                    str(stage),
                    str(out_path),
                    op_types_to_quantize=["MatMul"],
                    nodes_to_quantize=dynamic_nodes,
                    per_channel=scheme.per_channel,
                    reduce_range=scheme.reduce_range,
                    weight_type=types[scheme.weight_type],
                    extra_options={"WeightSymmetric": scheme.weight_symmetric, "MatMulConstBOnly": True},
                )
            else:
                shutil.copyfile(stage, out_path)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime quantization of the transformer MatMuls failed: {type(exc).__name__}: {exc}") from exc


def _outputs(model: onnx.ModelProto, held: CalibrationBatches) -> list[list[np.ndarray]]:
    runner = session(model)
    names = {i.name for i in runner.get_inputs()}
    return [runner.run(None, {k: v for k, v in feed.items() if k in names}) for feed in held]


def _mean_cosine(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """The lowest, over outputs, of the mean per-sample cosine between candidate and reference."""
    worst = 1.0
    for index in range(len(reference[0])):
        a = np.concatenate([r[index] for r in reference]).astype(np.float64)
        b = np.concatenate([c[index] for c in candidate]).astype(np.float64)
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        both_zero = norms == 0
        cos = np.where(both_zero, 1.0, np.sum(a * b, axis=1) / np.where(both_zero, 1.0, norms))
        worst = min(worst, float(np.mean(cos)))
    return worst


def _counts(choices: list[GroupChoice]) -> dict[str, int]:
    counts = {"static": 0, "dynamic": 0, "float": 0}
    for choice in choices:
        counts[choice.treatment] += len(choice.matmuls)
    return counts


def quantize_transformer_request(request, prepared: Path, notes: list[str]):
    """The static quantizer's hook: a `QuantizeInfo` for a transformer-style `prepared` model, else None.

    Applies to QDQ schemes with 8-bit types; other graphs and schemes go through the whole-graph path.
    """
    import dataclasses

    from exporter.quantizers.base import QuantizeInfo
    from exporter.quantizers.static import calibrate_ranges, ort_static_arguments

    scheme = request.scheme
    eight_bit = {"int8", "uint8"}
    if scheme.format != "qdq" or scheme.activation_type not in eight_bit or scheme.weight_type not in eight_bit:
        return None
    graph = detect_transformer(prepared)
    if graph is None:
        return None

    def calibrate(model: Path, reader: Any, op_types: list[str], cache: Path) -> int:
        minmax = dataclasses.replace(scheme, calibration_method="minmax", op_types=tuple(op_types), exclude_op_types=())
        return calibrate_ranges(model, reader, ort_static_arguments(minmax), cache)

    result = quantize_transformer(prepared, request.out_path, scheme, request.make_reader, calibrate, request.work_dir,
                                  forced_float=tuple(request.nodes_to_exclude))
    summary = (f"transformer encoder: {len(graph.weight_matmuls)} weight MatMuls -> {result.counts}; "
               f"{len(graph.attention_matmuls)} attention MatMuls, Softmax, normalization and GELU kept float; "
               f"output cosine {result.cosine:.4f} on held calibration samples after {result.rounds} round(s)")
    result.log.notes.insert(0, summary)
    return QuantizeInfo(
        mode="static",
        settings={"transformer": result.settings, "per_channel": scheme.per_channel,
                  "reduce_range": scheme.reduce_range, "activation_type": scheme.activation_type,
                  "weight_type": scheme.weight_type},
        calibration_batches=result.calibration_batches,
        notes=notes + result.log.notes,
        ptq_log=result.log,
        quantized_from=str(result.smoothed_path),
        calibration_cache=str(result.cache_path),
    )
