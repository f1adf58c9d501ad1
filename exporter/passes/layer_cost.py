"""What a Conv/Linear layer costs at a given channel count: the cost models behind `prune --prune-speedup`.

A cost model answers `cost(layer, in_channels, out_channels, precision)` for one layer of the model
(`LayerShape`: its kind, sizes and the batch-1 input shape it really gets) resized to other channel
counts, in float or int8. Registered models (`COST_MODELS`, one class each; add the next one here):

- `macs`: multiply-accumulates from the shapes, deterministic; precision does not change the figure.
- `int8-latency`: batch-1 kernel time in milliseconds measured on THIS CPU with onnxruntime. For every
  distinct layer signature, a one-layer ONNX model is built at the layer's real input shape for a
  handful of channel counts (the dimensions that can shrink, at about 1/8, 1/4, 1/2, 3/4 and all of
  the full count, multiples of 16), quantized QDQ U8S8 per-channel with onnxruntime's `quantize_static` (the target's
  scheme, cpu-int8's by default), and profiled at one intra-op thread; only the layer's own kernel
  counts (QLinearConv, Conv...), not the Quantize/Dequantize/Transpose/Reorder nodes at the edges of
  the one-layer model, which a whole int8 model does not run between its layers. A layer whose
  input and output both shrink is costed as `T(full, out) * T(in, full) / T(full, full)` (each
  factor interpolated linearly between the measured counts, made monotone), so a pointwise conv
  needs 9 int8 measurements, a depthwise conv 5; the float kernel is measured at full size (the
  original model's cost), and at the other counts only when the candidate will stay float.
  Measurements are cached per CPU model, onnxruntime version and quantization scheme in
  `$EXPORTER_CACHE_DIR` (default `~/.cache/exporter`), `layer-latency-<key>.json`.

Neither model sees activations, additions, pooling or the per-node dispatch overhead: the figure is
the cost of the weight layers, which is what pruning changes. For the measured model, `whole_model_ms`
times the whole original model once (float and int8 ONNX) so the allocator can scale the layer sums
to real wall time (`speed_goal.allocate`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from exporter.registry import Registry

Precision = Literal["float", "int8"]
"""What a layer runs in."""
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
"""Where the `int8-latency` model measures a dimension that can shrink, as fractions of its full size."""
_EDGE_OPS = {"QuantizeLinear", "DequantizeLinear", "Transpose", "ReorderInput", "ReorderOutput", "Identity"}


@dataclass(frozen=True)
class LayerShape:
    """One Conv/Linear call of the model at batch 1: sizes, geometry and the input/output shapes it saw.

    `in_channels` is the input feature count for a Linear. A depthwise conv (groups == in_channels > 1)
    stays depthwise when resized.
    """

    name: str
    kind: Literal["conv", "linear"]
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    bias: bool

    @property
    def depthwise(self) -> bool:
        """True for a depthwise conv: each output channel reads one input channel."""
        return self.kind == "conv" and self.groups == self.in_channels and self.groups > 1

    def resized(self, in_channels: int, out_channels: int) -> LayerShape:
        """The same layer with other channel counts (a depthwise conv keeps groups == in_channels)."""
        groups = in_channels if self.depthwise else self.groups
        shape_in = (*self.input_shape[:1], in_channels, *self.input_shape[2:])
        shape_out = (*self.output_shape[:1], out_channels, *self.output_shape[2:])
        if self.kind == "linear":
            shape_in = (*self.input_shape[:-1], in_channels)
            shape_out = (*self.output_shape[:-1], out_channels)
        return replace(
            self, in_channels=in_channels, out_channels=out_channels, groups=groups,
            input_shape=shape_in, output_shape=shape_out,
        )  # fmt: skip

    def macs(self) -> int:
        """Multiply-accumulates of this call (batch 1)."""
        if self.kind == "linear":
            return self.in_channels * math.prod(self.output_shape)
        return (self.in_channels // self.groups) * math.prod(self.kernel) * math.prod(self.output_shape)

    def signature(self) -> str:
        """Everything that decides the kernel's speed except the name: the cache key of a measurement."""
        geometry = f"k{self.kernel}s{self.stride}p{self.padding}d{self.dilation}g{'dw' if self.depthwise else self.groups}"
        return f"{self.kind}:{self.in_channels}->{self.out_channels}:{geometry}:in{self.input_shape}:b{int(self.bias)}"


def layer_shapes(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict[str, LayerShape]:
    """The `LayerShape` of every Conv/Linear the model calls on `example_inputs` (batch 1), by module name.

    Found with forward hooks, so it works on any module tree, including a lifted `fx.GraphModule`.
    A layer called more than once keeps its first call.
    """
    names = {module: name for name, module in model.named_modules()}
    found: dict[str, LayerShape] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        name = names.get(module, "")
        if name in found or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        if not isinstance(output, torch.Tensor):
            return
        found[name] = _shape_of(name, module, tuple(inputs[0].shape), tuple(output.shape))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONV, nn.Linear))]
    try:
        with torch.no_grad():
            model(*[x[:1] for x in example_inputs])
    finally:
        for handle in handles:
            handle.remove()
    return found


def _shape_of(name: str, module: nn.Module, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> LayerShape:
    if isinstance(module, nn.Linear):
        return LayerShape(
            name, "linear", module.in_features, module.out_features, 1, (), (), (), (),
            shape_in, shape_out, module.bias is not None,
        )  # fmt: skip
    padding = module.padding
    if isinstance(padding, str):  # 'same' / 'valid'
        padding = tuple(d * (k - 1) // 2 if padding == "same" else 0 for k, d in zip(module.kernel_size, module.dilation))
    return LayerShape(
        name, "conv", module.in_channels, module.out_channels, module.groups, tuple(module.kernel_size),
        tuple(module.stride), tuple(padding), tuple(module.dilation), shape_in, shape_out, module.bias is not None,
    )  # fmt: skip


@dataclass(frozen=True)
class Resizing:
    """A layer and which of its channel dimensions the allocator may shrink."""

    layer: LayerShape
    in_varies: bool
    out_varies: bool


class CostModel(ABC):
    """Cost of a layer at other channel counts. `prepare` may measure; `cost` must then be cheap."""

    name: ClassVar[str]
    unit: ClassVar[str]

    def prepare(self, resizings: list[Resizing], precisions: set[str]) -> None:
        """Get ready to answer for these layers and counts in these precisions (default: nothing to do)."""

    @abstractmethod
    def cost(self, layer: LayerShape, in_channels: int, out_channels: int, precision: Precision) -> float:
        """The cost of `layer` resized to (`in_channels`, `out_channels`) in `precision`."""


COST_MODELS: Registry[type[CostModel]] = Registry("prune cost model")


@COST_MODELS.register("macs")
class MacsCost(CostModel):
    """Multiply-accumulates of the resized layer; the same in float and int8."""

    name = "macs"
    unit = "MACs"

    def cost(self, layer: LayerShape, in_channels: int, out_channels: int, precision: Precision) -> float:
        """MACs of `layer` at these channel counts."""
        return float(layer.resized(in_channels, out_channels).macs())


@COST_MODELS.register("int8-latency")
class MeasuredLatencyCost(CostModel):
    """Kernel milliseconds at batch 1 on this CPU, measured with onnxruntime (see the module docstring)."""

    name = "int8-latency"
    unit = "ms"

    def __init__(self, scheme: Any = None, cache_dir: Path | None = None, runs: int = 100) -> None:
        from targets.profile import QuantScheme

        self.scheme = scheme if scheme is not None and scheme.mode == "static" else QuantScheme(mode="static")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.runs = runs
        self.table: dict[str, float] = {}
        self.measured = 0
        self.cache_path = self.cache_dir / f"layer-latency-{self._cache_key()}.json"
        self.whole_model_cache = self.cache_dir / f"whole-model-warm-{self._cache_key()}"
        """File prefix for `whole_model_ms` results measured under this key."""
        self.speed_check_cache = self.cache_dir / f"speed-check-{self._cache_key()}"
        """File prefix for `measured_speedup` results measured under this key."""

    def _cache_key(self) -> str:
        import onnxruntime as ort

        s = self.scheme
        parts = [
            cpu_model(), ort.__version__, s.format, str(s.per_channel), s.activation_type, s.weight_type,
            str(s.activation_symmetric), str(s.weight_symmetric), str(s.reduce_range), "threads=1",
        ]  # fmt: skip
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def prepare(self, resizings: list[Resizing], precisions: set[str]) -> None:
        """Measure every (layer signature, counts, precision) point not in the cache, then save the cache.

        The missing points of one layer and precision are measured together: one model holding every
        variant side by side, so each profiled run times all of them and outside load hits them alike.
        """
        from exporter.progress import progress_bar

        self.table = _read_cache(self.cache_path)
        batches: dict[tuple[str, str], dict[str, LayerShape]] = {}
        for r in resizings:
            for variant, precision in _points(r, precisions):
                key = _key(variant, precision)
                if key not in self.table:
                    batches.setdefault((r.layer.signature(), precision), {})[key] = variant
        if not batches:
            return
        bar = progress_bar("measuring layer latency", total=sum(len(b) for b in batches.values()), unit="point")
        try:
            with tempfile.TemporaryDirectory(prefix="exporter-layer-cost-") as scratch:
                for (_, precision), variants in batches.items():
                    times = measure_variants_ms(list(variants.values()), precision, self.scheme, Path(scratch), self.runs)
                    self.table.update(zip(variants, times))
                    self.measured += len(variants)
                    bar.update(len(variants))
        finally:
            bar.close()
        _write_cache(self.cache_path, self.table)

    def cost(self, layer: LayerShape, in_channels: int, out_channels: int, precision: Precision) -> float:
        """Interpolated kernel ms of `layer` at these counts (separable in input and output counts)."""
        full_in, full_out = layer.in_channels, layer.out_channels
        if layer.depthwise:
            return self._along(layer, precision, "both", in_channels)
        full = self._point(layer, full_in, full_out, precision)
        by_out = self._along(layer, precision, "out", out_channels) if out_channels != full_out else full
        by_in = self._along(layer, precision, "in", in_channels) if in_channels != full_in else full
        return by_out * by_in / full if full > 0 else 0.0

    def _point(self, layer: LayerShape, in_channels: int, out_channels: int, precision: Precision) -> float:
        key = _key(_variant(layer, in_channels, out_channels), precision)
        if key not in self.table:
            raise KeyError(f"no measurement for {key}: call prepare() with this layer and count first")
        return self.table[key]

    def _along(self, layer: LayerShape, precision: Precision, axis: str, count: int) -> float:
        """Linear interpolation over the measured counts of one axis, made monotone (more channels never cheaper)."""
        full = layer.in_channels if axis in ("in", "both") else layer.out_channels
        known: list[tuple[int, float]] = []
        for c in candidate_counts(full):
            i, o = (c, full_out_for(layer, c)) if axis == "both" else (c, layer.out_channels) if axis == "in" else (layer.in_channels, c)
            key = _key(_variant(layer, i, o), precision)
            if key in self.table:
                known.append((c, self.table[key]))
        if not known:
            raise KeyError(f"no measurements for {layer.name} along {axis}: call prepare() first")
        counts = np.array([c for c, _ in known], dtype=float)
        times = isotonic([t for _, t in known])
        if count <= counts[0]:
            return float(times[0] * count / counts[0])
        return float(np.interp(count, counts, times))


def isotonic(values: list[float]) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in least squares (pool adjacent violators).

    Measured kernel times are noisy; more channels are assumed never cheaper, and one slow outlier
    should not lift every larger count (as a running maximum would).
    """
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1), (m2, w2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2]
    return np.array([m for m, w in blocks for _ in range(int(w))])


def full_out_for(layer: LayerShape, in_channels: int) -> int:
    """The output count of a depthwise conv with `in_channels` inputs (its channel multiplier kept)."""
    return in_channels * (layer.out_channels // layer.in_channels)


def candidate_counts(full: int) -> list[int]:
    """The counts a dimension of size `full` is measured at: `FRACTIONS` of it, multiples of 16 (8) when it allows.

    The multiples match the allocator's step (`speed_goal.SPEED_STEP`): counts between them are never chosen.
    """
    multiple = 16 if full >= 32 else 8 if full >= 16 else 1
    return sorted({min(full, max(multiple, round(full * f / multiple) * multiple)) for f in FRACTIONS})


def _points(r: Resizing, precisions: set[str]) -> list[tuple[LayerShape, Precision]]:
    layer = r.layer
    full_in, full_out = layer.in_channels, layer.out_channels
    shapes: set[tuple[int, int]] = {(full_in, full_out)}
    if layer.depthwise:
        if r.in_varies or r.out_varies:
            shapes |= {(c, full_out_for(layer, c)) for c in candidate_counts(full_in)}
    else:
        if r.out_varies:
            shapes |= {(full_in, c) for c in candidate_counts(full_out)}
        if r.in_varies:
            shapes |= {(c, full_out) for c in candidate_counts(full_in)}
    points: list[tuple[LayerShape, Precision]] = []
    for i, o in sorted(shapes):
        for precision in ("float", "int8"):
            # The float kernel at full size is the original model's cost; other float counts only when needed.
            if precision in precisions or (precision == "float" and (i, o) == (full_in, full_out)):
                points.append((_variant(layer, i, o), precision))
    return points


def _variant(layer: LayerShape, in_channels: int, out_channels: int) -> LayerShape:
    return layer.resized(in_channels, out_channels)


def _key(layer: LayerShape, precision: str) -> str:
    return f"{layer.signature()}|{precision}"


def measure_variants_ms(
    variants: list[LayerShape], precision: Precision, scheme: Any, scratch: Path, runs: int = 100
) -> list[float]:
    """Batch-1 kernel ms of each layer in `variants`, float or quantized QDQ with `quantize_static` and `scheme`.

    The variants sit side by side in one model (each with its own input); the profiler times each
    one's kernels, and the mean of the fastest half of the runs is its figure (robust to outside load,
    finer than the profiler's 1 us steps).
    """
    import onnx

    model, feed = _side_by_side_onnx(variants)
    stem = scratch / f"layers{len(list(scratch.iterdir()))}"
    float_path = stem.with_suffix(".float.onnx")
    onnx.save(model, float_path)
    path = float_path
    if precision == "int8":
        path = stem.with_suffix(".int8.onnx")
        _quantize(float_path, path, feed, scheme)
    per_variant = _profiled_ms(path, feed, len(variants), runs)
    return [max(ms, 1e-6) for ms in per_variant]


def _side_by_side_onnx(variants: list[LayerShape]) -> tuple[Any, dict[str, np.ndarray]]:
    """A float ONNX model computing every layer of `variants` from its own input (random weights), and inputs."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, inits, inputs, outputs, feed = [], [], [], [], {}
    for index, layer in enumerate(variants):
        x, y = f"x{index}", f"y{index}"
        feed[x] = rng.standard_normal(layer.input_shape).astype(np.float32)
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, list(layer.input_shape)))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
        layer_nodes, layer_inits = _layer_nodes(layer, f"v{index}", x, y, rng)
        nodes += layer_nodes
        inits += layer_inits
    graph = helper.make_graph(nodes, "layers", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model, feed


def _layer_nodes(layer: LayerShape, name: str, x: str, y: str, rng: np.random.Generator) -> tuple[list, list]:
    """ONNX nodes and initializers of one Conv (or Gemm / MatMul+Add) named `name`, from `x` to `y`."""
    from onnx import helper, numpy_helper

    def init(suffix: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_{suffix}"))
        return f"{name}_{suffix}"

    inits: list = []
    bias = np.zeros(layer.out_channels, np.float32)
    if layer.kind == "conv":
        w = rng.standard_normal((layer.out_channels, layer.in_channels // layer.groups, *layer.kernel)) * 0.1
        args = [x, init("w", w)] + ([init("b", bias)] if layer.bias else [])
        node = helper.make_node(
            "Conv", args, [y], name=name, kernel_shape=list(layer.kernel), strides=list(layer.stride),
            pads=[*layer.padding, *layer.padding], dilations=list(layer.dilation), group=layer.groups,
        )  # fmt: skip
        return [node], inits
    w = rng.standard_normal((layer.out_channels, layer.in_channels)) * 0.1
    if len(layer.input_shape) == 2:
        args = [x, init("w", w)] + ([init("b", bias)] if layer.bias else [])
        return [helper.make_node("Gemm", args, [y], name=name, transB=1)], inits
    product = f"{name}_mm" if layer.bias else y
    nodes = [helper.make_node("MatMul", [x, init("w", w.T.copy())], [product], name=name)]
    if layer.bias:
        nodes.append(helper.make_node("Add", [product, init("b", bias)], [y], name=f"{name}_bias"))
    return nodes, inits


class _OneBatch:
    """A `CalibrationDataReader` giving one batch."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.items = [feed]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.items.pop() if self.items else None


def _quantize(float_path: Path, out_path: Path, feed: dict[str, np.ndarray], scheme: Any) -> None:
    from onnxruntime.quantization import quantize_static

    from exporter.quantizers.static import ort_static_arguments
    from exporter.quiet import quiet_onnxruntime

    args = ort_static_arguments(scheme)
    with quiet_onnxruntime():
        quantize_static(str(float_path), str(out_path), _OneBatch(feed), **args.quantize)


_VARIANT = re.compile(r"^[vyx](\d+)(_|$)")
_SUFFIX = re.compile(r"(_token_\d+)+$")


def _profiled_ms(path: Path, feed: dict[str, np.ndarray], count: int, runs: int, warmup: int = 5) -> list[float]:
    """Per variant `v<i>`: mean over the fastest half of the runs of its kernels' summed time, one intra-op thread.

    Kernels are matched to variants by name (`v3`, `v3_token_1`, `y3_nchwc`, ...); edge conversions
    (Quantize/Dequantize/Transpose/Reorder) are left out, as a whole model does not run them between layers.
    """
    from exporter.profiling import kernel_events

    events = kernel_events(path, feed, runs, warmup)
    per_kernel: dict[tuple[int, str], list[float]] = {}
    for event in events:
        name = str(event["name"])
        if event.get("args", {}).get("op_name") in _EDGE_OPS:
            continue
        bare = _SUFFIX.sub("", name[: -len("_kernel_time")]).removesuffix("_nchwc")
        match = _VARIANT.match(bare)
        if match:
            per_kernel.setdefault((int(match.group(1)), bare), []).append(event["dur"] / 1000.0)
    totals = [0.0] * count
    for (index, _), times in per_kernel.items():
        kept = sorted(times[warmup:] or times)
        fastest = kept[: max(1, len(kept) // 2)]
        totals[index] += sum(fastest) / len(fastest)
    return totals


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for the cache key."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_dir() -> Path:
    """`$EXPORTER_CACHE_DIR`, else `$XDG_CACHE_HOME/exporter`, else `~/.cache/exporter`."""
    if os.environ.get("EXPORTER_CACHE_DIR"):
        return Path(os.environ["EXPORTER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "exporter"


def _read_cache(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    table = data.get("kernel_ms") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return {}
    return {k: float(v) for k, v in table.items() if isinstance(v, (int, float)) and v >= 0}


def _write_cache(path: Path, table: dict[str, float]) -> None:
    """Write atomically (another run may read it); a cache that cannot be written is just not kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"cpu": cpu_model(), "kernel_ms": table}, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def make_cost_model(name: str, scheme: Any = None) -> CostModel:
    """The registered cost model called `name`; `scheme` is the target's quantization (int8-latency)."""
    cls = COST_MODELS.get(name)
    return cls(scheme=scheme) if cls is MeasuredLatencyCost else cls()


@dataclass(frozen=True)
class WholeModelTiming:
    """Batch-1 wall time of the whole model on this CPU in float and in int8 (interleaved, one thread), ms."""

    float_ms: float
    int8_ms: float


def whole_model_ms(
    model: nn.Module, specs: list[Any], scheme: Any, feeds: list[dict[str, np.ndarray]], cache: Path | None = None
) -> WholeModelTiming:
    """Export `model` to ONNX, quantize it like the layers (QDQ, `scheme`), and time both at batch 1.

    The layer costs count only Conv/Linear kernels; the ratio of these wall times to the summed layer
    costs calibrates the estimate for everything else (activations' Q/DQ, additions, pooling, dispatch).
    Each is the fastest tenth of interleaved runs (the machine's unloaded speed: a busy moment must
    not steer the pruning), and with `cache` (a file prefix) the result is kept per exported model,
    so the same model on the same CPU is always pruned alike.
    Raises whatever export or onnxruntime raise; the caller treats a failure as "no calibration".
    """
    with tempfile.TemporaryDirectory(prefix="exporter-whole-model-") as scratch:
        float_path, int8_path = _export_both(model, specs, scheme, feeds, Path(scratch))
        cached = _cache_file(cache, float_path)
        known = _read_cache(cached) if cached else {}
        if "float_ms" in known and "int8_ms" in known:
            return WholeModelTiming(known["float_ms"], known["int8_ms"])
        times = _interleaved({"float": float_path, "int8": int8_path}, feeds)
    if cached:
        _write_cache(cached, {"float_ms": times["float"], "int8_ms": times["int8"]})
    return WholeModelTiming(times["float"], times["int8"])


def measured_speedup(
    original: Path,
    pruned: nn.Module,
    precision: Precision,
    specs: list[Any],
    scheme: Any,
    feeds: list[dict[str, np.ndarray]],
    cache: Path | None = None,
) -> float:
    """How many times faster `pruned` (in `precision`, quantized like the layers) runs than the `original` float ONNX.

    Both timed at batch 1 in one interleaved run (fastest tenth, warm caches), cached per pair of files.
    Raises whatever export or onnxruntime raise.
    """
    with tempfile.TemporaryDirectory(prefix="exporter-speed-check-") as scratch:
        float_path, int8_path = _export_both(pruned, specs, scheme, feeds, Path(scratch), quantize=precision == "int8")
        deployed = int8_path if precision == "int8" else float_path
        cached = _cache_file(cache, original, deployed)
        known = _read_cache(cached) if cached else {}
        if "speedup" in known:
            return known["speedup"]
        times = _interleaved({"original": original, "pruned": deployed}, feeds)
    speedup = times["original"] / times["pruned"]
    if cached:
        _write_cache(cached, {"speedup": speedup})
    return speedup


def _export_both(
    model: nn.Module, specs: list[Any], scheme: Any, feeds: list[dict[str, np.ndarray]], folder: Path, quantize: bool = True
) -> tuple[Path, Path]:
    """`model` as float ONNX in `folder`, and quantized like the layers (QDQ, `scheme`) when `quantize`."""
    from onnxruntime.quantization import quantize_static

    from exporter.onnx_export import export_onnx
    from exporter.quantizers.static import ort_static_arguments, preprocess_for_quantization
    from exporter.quiet import quiet_onnxruntime

    float_path, pre_path, int8_path = (folder / n for n in ("model.onnx", "pre.onnx", "int8.onnx"))
    export_onnx(model, specs, float_path, opset=18, dynamic_batch=True)
    if not quantize:
        return float_path, float_path
    preprocess_for_quantization(float_path, pre_path)

    class Reader:
        def __init__(self) -> None:
            self.items = list(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.items.pop() if self.items else None

    with quiet_onnxruntime():
        quantize_static(str(pre_path), str(int8_path), Reader(), **ort_static_arguments(scheme).quantize)
    return float_path, int8_path


def _cache_file(prefix: Path | None, *models: Path) -> Path | None:
    """The cache file for a measurement of these ONNX files (keyed by their bytes), or None without a prefix."""
    if prefix is None:
        return None
    digest = hashlib.sha256()
    for path in models:
        digest.update(path.read_bytes())
    return Path(f"{prefix}-{digest.hexdigest()[:16]}.json")


def _interleaved(paths: dict[str, Path], feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Batch-1 milliseconds of each ONNX file, interleaved, the fastest tenth."""
    from exporter.runtime import interleaved_latency_ms, session_for

    sessions = {name: session_for(path) for name, path in paths.items()}
    feed = {k: v[:1] for k, v in feeds[0].items()}
    calls = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
    return interleaved_latency_ms(calls, warmup=10, repeats=200, budget_s=20.0, quantile=0.1, settle=1)
