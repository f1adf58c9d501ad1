"""Per-layer quantization error: how much error each quantized layer introduces, against the float graph.

Rule: every quantized node of the QDQ model is re-run *in isolation* on the float graph's own
activations. One extra ONNX model holds the float graph plus, for each quantized node, duplicates
fed through the exact QuantizeLinear/DequantizeLinear parameters of the quantized model:

- `full`: quantized inputs, weights and output (the node as deployed, given perfect inputs);
- `weights`: only the weights (and bias) dequantized; `inputs`: only the activation inputs;
- `output`: only the node's output quantization.

Each duplicate is compared with the float node's output on the same samples, so the figure is the
error that node adds, not the error it inherits. On top, onnxruntime's QDQ debugging helpers
(`qdq_loss_debug`) give the tensor-level figures: the error of each activation's own
quantize-dequantize step, the error accumulated up to that tensor in the quantized model, and the
weight error in weight space.

SQNR is measured against the signal's *variation*: per channel (axis 1 of 4-D tensors, the last
axis otherwise) the channel mean is removed from the reference before taking its energy. Plain
SQNR hides the two classic failures: an output with a large offset and a tiny range, and a tensor
where one outlier channel takes all the quantization range. `relative_error` is the plain
||float - quantized|| / ||float||.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from exporter.quiet import quiet_onnxruntime
from exporter.accuracy.modules import QDQ_OPS, node_module_map

# Ops quantized only so that int8 flows through them: they add no error of their own.
TRANSPARENT_OPS = frozenset(
    {
        "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "MaxPool", "Relu", "Clip", "Slice",
        "Split", "Pad", "Gather", "GatherElements", "TopK", "Identity", "Resize", "AveragePool",
        "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "ArgMax",
    }
)
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
DB_LIMIT = 200.0
"""SQNR figures are clamped to +-200 dB so that the report stays plain JSON (no infinities)."""

_ISO = "iso::"


@dataclass
class _Site:
    """One quantized node of the QDQ model, matched by name to the float graph."""

    name: str
    op_type: str
    float_node: onnx.NodeProto
    activations: dict[int, tuple[str, str]] = field(default_factory=dict)  # input index -> (scale, zero point)
    weights: dict[int, onnx.NodeProto] = field(default_factory=dict)  # input index -> its DequantizeLinear
    output_qdq: tuple[str, str] | None = None
    ref_raw: str = ""  # the float node's own output
    ref_out: str = ""  # the float tensor the quantized node's output stands for (after a removed Relu/Clip)


def layer_sensitivity(
    float_path: Path,
    quant_path: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    work_dir: Path,
    preprocessed: bool = False,
) -> list[dict[str, Any]]:
    """Rows of per-layer error, worst (lowest `sqnr_db`) first; see the module docstring for the rule.

    `float_path` is the float ONNX file the quantized model `quant_path` (QDQ format) was made from;
    it is passed through onnxruntime's quantization pre-processing first (as the static quantizer
    does) so that node names match, unless `preprocessed`. `feeds` are input batches keyed by input
    name (a few batches are enough). Row keys: `tensor`, `node`, `op_type`, `module`, `kind`
    ("activation": the node's output, as deployed; "weight": weights alone), `sqnr_db`,
    `relative_error`; activation rows add `input_sqnr_db`, `weight_sqnr_db` (the weight-error entry),
    `output_sqnr_db`, `qdq_sqnr_db`, `cumulative_sqnr_db`, `weights` and `float_bytes`; weight rows
    add `tensor_sqnr_db` (weight-space SQNR from onnxruntime's `compute_weight_error`).
    """
    from exporter.quantizers.static import preprocess_for_quantization

    if not feeds:
        raise ValueError("layer_sensitivity needs at least one input batch")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    float_prep = Path(float_path)
    if not preprocessed:
        float_prep = work_dir / "sensitivity_float.onnx"
        preprocess_for_quantization(Path(float_path), float_prep)
    float_model = onnx.load(str(float_prep))
    quant_model = onnx.load(str(quant_path))
    sites = find_sites(float_model, quant_model)
    iso_model, comparisons = build_isolation_model(float_model, quant_model, sites)
    iso_path = work_dir / "sensitivity_isolated.onnx"
    onnx.save(iso_model, str(iso_path))
    q_aug_path = work_dir / "sensitivity_quant_augmented.onnx"
    with quiet_onnxruntime():
        from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

        modify_model_output_intermediate_tensors(str(quant_path), str(q_aug_path))

    pairs = {key: ErrorSums() for key in comparisons}
    local = {site.name: ErrorSums() for site in sites}  # the output tensor's own QDQ step in the quantized model
    cumulative = {site.name: ErrorSums() for site in sites}
    iso_session = _session(iso_path)
    q_session = _session(q_aug_path)
    iso_names = [o.name for o in iso_session.get_outputs()]
    q_names = [o.name for o in q_session.get_outputs()]
    for feed in feeds:
        iso_values = dict(zip(iso_names, iso_session.run(None, feed)))
        for key, (reference, candidate) in comparisons.items():
            pairs[key].add(iso_values[reference], iso_values[candidate])
        q_values = dict(zip(q_names, q_session.run(None, feed)))
        _add_tensor_errors(sites, iso_values, q_values, local, cumulative)

    weight_space = _weight_space_sqnr(float_prep, Path(quant_path))
    modules = node_module_map(quant_model)
    float_modules = node_module_map(float_model)
    initializers = {init.name: init for init in float_model.graph.initializer}
    rows = []
    for site in sites:
        rows.extend(_rows_for(site, pairs, local, cumulative, weight_space, modules, float_modules, initializers))
    order = {site.name: index for index, site in enumerate(sites)}
    rows.sort(key=lambda r: (r["sqnr_db"], order[r["node"]], r["kind"]))
    return rows


def find_sites(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> list[_Site]:
    """The quantized nodes of `quant_model` that add error of their own (not pass-through ops),
    with the quantization parameters of their inputs, weights and output, in graph order."""
    q_graph = quant_model.graph
    producer = {out: node for node in q_graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in q_graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    q_inits = {init.name for init in q_graph.initializer}
    float_nodes = {node.name: node for node in float_model.graph.node if node.name}
    float_tensors = {out for node in float_model.graph.node for out in node.output}
    float_tensors |= {i.name for i in float_model.graph.input}
    sites = []
    for node in q_graph.node:
        if node.op_type in QDQ_OPS or node.op_type in TRANSPARENT_OPS or node.name not in float_nodes:
            continue
        fnode = float_nodes[node.name]
        if fnode.op_type != node.op_type or len(fnode.input) != len(node.input) or not fnode.output:
            continue
        site = _Site(node.name, node.op_type, fnode)
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            if not name or dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = dq.input[0]
            if dq.output[0].endswith("_float_bias"):  # a bias pinned float (exporter.accuracy.pin)
                continue
            if source in q_inits:
                site.weights[index] = dq
                continue
            q = producer.get(source)
            if q is not None and q.op_type == "QuantizeLinear" and len(dq.input) > 1:
                site.activations[index] = (dq.input[1], dq.input[2] if len(dq.input) > 2 else "")
        for consumer in consumers.get(node.output[0], []):
            if consumer.op_type == "QuantizeLinear" and len(consumer.input) > 1:
                site.output_qdq = (consumer.input[1], consumer.input[2] if len(consumer.input) > 2 else "")
                break
        if not (site.activations or site.weights or site.output_qdq):
            continue
        site.ref_raw = fnode.output[0]
        site.ref_out = node.output[0] if site.output_qdq and node.output[0] in float_tensors else site.ref_raw
        sites.append(site)
    return sites


def build_isolation_model(
    float_model: onnx.ModelProto, quant_model: onnx.ModelProto, sites: Sequence[_Site]
) -> tuple[onnx.ModelProto, dict[tuple[str, str], tuple[str, str]]]:
    """The float graph plus isolated duplicates of every site (see the module docstring).

    Returns the model and `{(node, variant): (reference tensor, duplicate tensor)}`; every tensor
    named there is a graph output of the model.
    """
    model = copy.deepcopy(float_model)
    graph = model.graph
    q_inits = {init.name: init for init in quant_model.graph.initializer}
    added_inits: dict[str, str] = {}
    qdq_cache: dict[tuple[str, str, str], str] = {}
    dq_cache: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def init(name: str) -> str:
        if not name:
            return ""
        if name not in added_inits:
            tensor = copy.deepcopy(q_inits[name])
            tensor.name = _ISO + name
            graph.initializer.append(tensor)
            added_inits[name] = tensor.name
        return added_inits[name]

    def qdq(tensor: str, params: tuple[str, str]) -> str:
        key = (tensor, *params)
        if key not in qdq_cache:
            scale, zero = init(params[0]), init(params[1])
            tag = f"{_ISO}{len(qdq_cache)}::{tensor}"
            inputs = [scale, zero] if zero else [scale]
            new_nodes.append(helper.make_node("QuantizeLinear", [tensor, *inputs], [tag + "::q"], name=tag + "::Q"))
            new_nodes.append(helper.make_node("DequantizeLinear", [tag + "::q", *inputs], [tag + "::dq"], name=tag + "::DQ"))
            qdq_cache[key] = tag + "::dq"
        return qdq_cache[key]

    def dequantized_weight(dq: onnx.NodeProto) -> str:
        if dq.name not in dq_cache:
            node = copy.deepcopy(dq)
            node.name = _ISO + dq.name
            node.input[:] = [init(name) for name in dq.input]
            node.output[:] = [_ISO + dq.output[0]]
            new_nodes.append(node)
            dq_cache[dq.name] = node.output[0]
        return dq_cache[dq.name]

    def duplicate(site: _Site, variant: str, acts: bool, weights: bool, output: bool) -> str:
        node = copy.deepcopy(site.float_node)
        node.name = f"{_ISO}{variant}::{site.name}"
        del node.metadata_props[:]
        inputs = list(node.input)
        if acts:
            for index, params in site.activations.items():
                inputs[index] = qdq(site.float_node.input[index], params)
        if weights:
            for index, dq in site.weights.items():
                inputs[index] = dequantized_weight(dq)
        node.input[:] = inputs
        node.output[:] = [f"{node.name}::{k}" if out else "" for k, out in enumerate(site.float_node.output)]
        new_nodes.append(node)
        result = node.output[0]
        if output and site.output_qdq:
            result = qdq(result, site.output_qdq)
        return result

    comparisons: dict[tuple[str, str], tuple[str, str]] = {}
    for site in sites:
        full_ref = site.ref_out if site.output_qdq else site.ref_raw
        comparisons[(site.name, "full")] = (full_ref, duplicate(site, "full", True, True, True))
        if site.weights:
            comparisons[(site.name, "weights")] = (site.ref_raw, duplicate(site, "weights", False, True, False))
        if site.activations:
            comparisons[(site.name, "inputs")] = (site.ref_raw, duplicate(site, "inputs", True, False, False))
        if site.output_qdq:
            comparisons[(site.name, "output")] = (site.ref_out, qdq(site.ref_raw, site.output_qdq))
    graph.node.extend(new_nodes)
    types = _elem_types(model)
    present = {o.name for o in graph.output}
    wanted = {name for pair in comparisons.values() for name in pair}
    wanted |= {site.ref_out for site in sites}
    for name in sorted(wanted - present):
        graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    return model, comparisons


class ErrorSums:
    """Running sums for SQNR between a reference and a candidate over many batches.

    `sqnr_db` uses the reference's per-channel variation as the signal (see the module docstring);
    `plain_sqnr_db` its raw energy; `relative_error` is ||ref - cand|| / ||ref||.
    """

    def __init__(self) -> None:
        self.noise = 0.0
        self.energy = 0.0
        self.channel_sum: np.ndarray | None = None
        self.channel_sq: np.ndarray | None = None
        self.channel_count = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Accumulate one batch (same shapes; channels per `channel_axis`)."""
        ref = np.asarray(reference, dtype=np.float64)
        diff = ref - np.asarray(candidate, dtype=np.float64).reshape(ref.shape)
        self.noise += float(np.sum(diff * diff))
        self.energy += float(np.sum(ref * ref))
        axis = channel_axis(ref.ndim)
        per_channel = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1) if ref.ndim else ref.reshape(1, 1)
        sums, squares = per_channel.sum(axis=1), (per_channel * per_channel).sum(axis=1)
        if self.channel_sum is None or self.channel_sum.shape != sums.shape:
            if self.channel_sum is not None:  # shape changed between batches: fall back to one channel
                sums, squares = np.array([per_channel.sum()]), np.array([(per_channel**2).sum()])
                self.channel_sum = np.array([self.channel_sum.sum()])
                self.channel_sq = np.array([self.channel_sq.sum()])
            else:
                self.channel_sum, self.channel_sq = np.zeros_like(sums), np.zeros_like(squares)
        self.channel_sum += sums
        self.channel_sq += squares
        self.channel_count += per_channel.shape[1]

    @property
    def variation(self) -> float:
        """Energy of the reference with each channel's mean removed."""
        if self.channel_sum is None or self.channel_count == 0:
            return 0.0
        centered = self.channel_sq - self.channel_sum**2 / self.channel_count
        return float(np.sum(np.maximum(centered, 0.0)))

    @property
    def sqnr_db(self) -> float:
        """10 log10(variation / noise), clamped to +-`DB_LIMIT`; a constant reference uses its energy."""
        signal = self.variation
        if signal <= 1e-12 * max(self.energy, 1e-300):
            signal = self.energy
        return _db(signal, self.noise)

    @property
    def plain_sqnr_db(self) -> float:
        """10 log10(energy / noise), clamped."""
        return _db(self.energy, self.noise)

    @property
    def relative_error(self) -> float:
        """||ref - cand|| / ||ref|| (0 when both are zero)."""
        if self.noise == 0.0:
            return 0.0
        return math.sqrt(self.noise / self.energy) if self.energy > 0 else float(DB_LIMIT)


def channel_axis(ndim: int) -> int:
    """Axis holding channels: 1 for 4-D/5-D (NCHW, NCDHW), the last axis otherwise (features last)."""
    if ndim >= 4:
        return 1
    return max(ndim - 1, 0)


def node_ranking(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per node, worst first: its activation row with `worst_sqnr_db` = min over its rows."""
    by_node: dict[str, dict[str, Any]] = {}
    worst: dict[str, float] = {}
    for row in rows:
        node = row["node"]
        worst[node] = min(worst.get(node, DB_LIMIT), row["sqnr_db"])
        if row["kind"] == "activation" or node not in by_node:
            by_node[node] = dict(row)
    ranking = []
    for node, row in by_node.items():
        row["worst_sqnr_db"] = worst[node]
        ranking.append(row)
    ranking.sort(key=lambda r: r["worst_sqnr_db"])
    return ranking


def _rows_for(site, pairs, local, cumulative, weight_space, modules, float_modules, initializers) -> list[dict]:
    module = modules.get(site.name) or float_modules.get(site.name, "")

    def figure(variant: str) -> float | None:
        sums = pairs.get((site.name, variant))
        return None if sums is None else round(sums.sqnr_db, 3)

    full = pairs[(site.name, "full")]
    weight_names = [site.float_node.input[i] for i in sorted(site.weights)]
    float_bytes = sum(_tensor_bytes(initializers[n]) for n in weight_names if n in initializers)
    rows = [
        {
            "tensor": site.ref_out,
            "node": site.name,
            "op_type": site.op_type,
            "module": module,
            "kind": "activation",
            "sqnr_db": round(full.sqnr_db, 3),
            "relative_error": round(full.relative_error, 6),
            "input_sqnr_db": figure("inputs"),
            "weight_sqnr_db": figure("weights"),
            "output_sqnr_db": figure("output"),
            # A Relu/Clip folded into the quantization makes the quantized model's pre-QDQ tensor the
            # un-clipped one; its own QDQ step is then `output_sqnr_db`, measured on float activations.
            "qdq_sqnr_db": (
                round(local[site.name].sqnr_db, 3)
                if local[site.name].channel_count and site.ref_out == site.ref_raw
                else None
            ),
            "cumulative_sqnr_db": (
                round(cumulative[site.name].plain_sqnr_db, 3) if cumulative[site.name].channel_count else None
            ),
            "weights": weight_names,
            "float_bytes": int(float_bytes),
        }
    ]
    if site.weights:
        sums = pairs[(site.name, "weights")]
        main = max(weight_names, key=lambda n: _tensor_size(initializers.get(n)))
        tensor_sqnr = weight_space.get(main)
        rows.append(
            {
                "tensor": main,
                "node": site.name,
                "op_type": site.op_type,
                "module": module,
                "kind": "weight",
                "sqnr_db": round(sums.sqnr_db, 3),
                "relative_error": round(sums.relative_error, 6),
                "tensor_sqnr_db": None if tensor_sqnr is None else round(max(-DB_LIMIT, min(DB_LIMIT, tensor_sqnr)), 3),
            }
        )
    return rows


def _add_tensor_errors(sites, iso_values, q_values, local, cumulative) -> None:
    """onnxruntime's activation matching on one batch: pre/post QDQ in the quantized model and float."""
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    suffix = "_ReshapedSavedOutput"
    qdq = {name[: -len(suffix)]: [value] for name, value in q_values.items() if name.endswith(suffix)}
    wanted = {site.ref_out for site in sites}
    floats = {name: [iso_values[name].reshape(-1)] for name in wanted if name in iso_values}
    matching = create_activation_matching(qdq, floats)
    for site in sites:
        match = matching.get(site.ref_out)
        if not match:
            continue
        shape = iso_values[site.ref_out].shape if site.ref_out in iso_values else None
        pre, post = match["pre_qdq"][0], match["post_qdq"][0]
        if shape is not None and pre.size == int(np.prod(shape)):
            local[site.name].add(pre.reshape(shape), post.reshape(shape))
        if "float" in match and match["float"][0].size == post.size:
            cumulative[site.name].add(match["float"][0], post)


def _weight_space_sqnr(float_path: Path, quant_path: Path) -> dict[str, float]:
    """SQNR of each quantized weight in weight space (onnxruntime's `create_weight_matching`)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    try:
        with quiet_onnxruntime():
            return compute_weight_error(create_weight_matching(str(float_path), str(quant_path)))
    except Exception:  # the helper asserts on layouts it does not know (blocked int4, ...): figure left out
        return {}


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _tensor_size(tensor: onnx.TensorProto | None) -> int:
    return int(np.prod(tensor.dims)) if tensor is not None else 0


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    return _tensor_size(tensor) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return DB_LIMIT
    if signal <= 0.0:
        return -DB_LIMIT
    return float(max(-DB_LIMIT, min(DB_LIMIT, 10.0 * math.log10(signal / noise))))
