"""AdaRound: choose each int8 weight's rounding (down or up) to minimise the layer's output error.

Rule (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", 2020), layer
by layer on the float graph: for a Conv/Gemm with weight W on onnxruntime's per-channel grid
(`exporter.ptq.weight_grid`: scale s, zero point z), the quantized weight is
`s * (floor(W / s) + h(V))` with `h` a rectified sigmoid of a learnt tensor V. V is optimised
with Adam to minimise the error of the layer's *activated* output (the following Relu or Clip
included) against the float layer on inputs cached from the float model on calibration data,
plus a regulariser that pushes every h to exactly 0 or 1 as its exponent anneals from 20 to 2.
The result is hardened to integers and kept only if its output error beats round-to-nearest.

Inputs are cached as `samples` random output positions per layer (im2col rows gathered straight
from the float activations, so a layer costs `samples x (Cin/groups x k x k)` floats however
large its feature map), which bounds both memory and time.

Writing back: the layer's float weights become exactly `s * (q - z)`. Each channel's extreme
values (its min and max weight) keep their nearest rounding, so onnxruntime recomputes the same
scale and zero point from the written weights and its own round-to-nearest reproduces q; this is
checked per channel after writing and any channel that would not reproduce is restored.
"""

from __future__ import annotations

import time

import numpy as np

from exporter.ptq.activations import for_each_batch
from exporter.ptq.graph import Graph, Layer
from exporter.ptq.records import PtqLog, RoundingRecord
from exporter.ptq.weight_grid import WeightGrid, weight_grid
from targets.profile import QuantScheme

ZETA, GAMMA = 1.1, -0.1
REG_WEIGHT = 0.01
WARMUP = 0.2
LEARNING_RATE = 1e-2
BATCH_ROWS = 256  # cached rows per optimisation step (a random mini-batch; the final check uses all rows)


def adaround(
    graph: Graph,
    batches,
    scheme: QuantScheme,
    log: PtqLog,
    iterations: int = 200,
    samples: int = 1024,
    seconds: float | None = None,
    seed: int = 0,
    skip: tuple[str, ...] = (),
) -> None:
    """Optimise the rounding of every layer of `graph` in place (see the module docstring).

    Layers named in `skip` (kept in float by the quantizer) are left alone.

    `seconds` bounds the whole pass: layers not reached keep round-to-nearest and a note says so.
    """
    import torch

    layers = [layer for layer in graph.layers.values() if layer.node not in skip]
    if not layers:
        return
    inputs = collect_inputs(graph, layers, batches, samples, seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    # One thread: these are many small steps, and on a shared CPU torch's worker threads spin-wait
    # (measured on 2 busy cores: 74-580 ms per step with 2 threads, 2-8 ms with one).
    torch.set_num_threads(1)
    try:
        _round_all(graph, layers, inputs, scheme, log, iterations, seconds, start)
    finally:
        torch.set_num_threads(threads)


def _round_all(graph, layers, inputs, scheme, log, iterations, seconds, start) -> None:
    cut = 0
    for done, layer in enumerate(layers):
        x = inputs.pop(layer.node, None)
        if x is None or len(x) == 0:
            continue
        allowance = None
        if seconds is not None:
            allowance = max(seconds - (time.perf_counter() - start), 0.0) / (len(layers) - done)
        record = round_layer(graph, layer, x, scheme, iterations, activation_of(graph, layer), allowance)
        cut += record is not None and record.iterations < iterations
        if record is not None:
            log.add(record)
    if cut:
        log.notes.append(f"adaround: {cut} of {len(layers)} layers stopped early to fit the {seconds:g} s budget")


def activation_of(graph: Graph, layer: Layer) -> tuple[float, float] | None:
    """(low, high) of the Relu/Clip that alone follows `layer` (None when there is none)."""
    consumers = graph.consumers(layer.output)
    if len(consumers) != 1 or graph.is_graph_output(layer.output):
        return None
    follower = consumers[0]
    if follower.op_type == "Relu":
        return (0.0, float("inf"))
    if follower.op_type == "Clip":
        from exporter.ptq.equalize import clip_bounds

        return clip_bounds(graph, follower)
    return None


def round_layer(
    graph: Graph,
    layer: Layer,
    x: np.ndarray,
    scheme: QuantScheme,
    iterations: int,
    activation: tuple[float, float] | None,
    seconds: float | None = None,
) -> RoundingRecord | None:
    """Optimise one layer's rounding on cached inputs `x` (rows, groups, patch) and write it back.

    `seconds` stops the optimisation early (the rounding found so far is hardened and still kept
    only if it beats nearest)."""
    import torch

    w = graph.weight(layer)
    grid = weight_grid(w, scheme)
    groups = x.shape[1]
    w_g = torch.from_numpy(w.reshape(groups, w.shape[0] // groups, -1).astype(np.float32))
    scale = torch.from_numpy(grid.scale.reshape(groups, -1, 1).astype(np.float32))
    zero = torch.from_numpy(grid.zero_point.reshape(groups, -1, 1).astype(np.float32))
    bias = torch.from_numpy(graph.bias(layer).reshape(groups, -1).astype(np.float32))
    xt = torch.from_numpy(x)
    low, high = activation if activation is not None else (-float("inf"), float("inf"))

    def forward(weights: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        xs = xt if rows is None else xt[rows]
        if groups == 1:
            y = (xs[:, 0, :] @ weights[0].T)[:, None, :] + bias
        elif weights.shape[1] == 1:  # depthwise: one output per group
            y = (xs * weights[:, 0, :]).sum(-1, keepdim=True) + bias
        else:
            y = torch.einsum("pgd,god->pgo", xs, weights) + bias
        return y.clamp(low, high) if activation is not None else y

    with torch.no_grad():
        target = forward(w_g)
        nearest_q = torch.clamp(torch.round(w_g / scale) + zero, grid.qmin, grid.qmax)
        nearest_err = float(torch.mean((forward((nearest_q - zero) * scale) - target) ** 2))
    if nearest_err == 0.0:
        return None
    floor = torch.floor(w_g / scale)
    rest = (w_g / scale - floor).clamp(0.01, 0.99)
    v = torch.log((rest - GAMMA) / (ZETA - rest)).requires_grad_(True)  # h(v) == rest at the start
    pinned = _extremes(w_g)
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    start = time.perf_counter()
    steps = 0
    for step in range(iterations):
        if seconds is not None and time.perf_counter() - start > seconds:
            break
        steps += 1
        h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)
        q = torch.where(pinned, nearest_q, torch.clamp(floor + h + zero, grid.qmin, grid.qmax))
        rows = torch.randint(0, len(xt), (min(BATCH_ROWS, len(xt)),))
        recon = torch.mean((forward((q - zero) * scale, rows) - target[rows]) ** 2) / nearest_err
        loss = recon
        if step >= WARMUP * iterations:
            beta = 20.0 - 18.0 * (step - WARMUP * iterations) / max((1 - WARMUP) * iterations, 1)
            loss = loss + REG_WEIGHT * torch.mean(1 - torch.abs(2 * h - 1) ** beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hard = torch.where(pinned, nearest_q, torch.clamp(floor + (v >= 0).float() + zero, grid.qmin, grid.qmax))
        optimized_err = float(torch.mean((forward((hard - zero) * scale) - target) ** 2))
    if optimized_err >= nearest_err:
        hard, optimized_err = nearest_q, nearest_err
    q = hard.reshape(w.shape).numpy().astype(np.float64)
    flipped = int(np.sum(q != nearest_q.reshape(w.shape).numpy()))
    _write(graph, layer, w, q, grid, scheme)
    return RoundingRecord(
        node=layer.node,
        weights=int(w.size),
        flipped=flipped,
        output_mse_nearest=nearest_err,
        output_mse_optimized=optimized_err,
        iterations=steps,
    )


def _extremes(w_g):
    """Mask of each output channel's min and max weight (they set onnxruntime's scale: never moved)."""
    flat = w_g
    return (flat == flat.amax(dim=2, keepdim=True)) | (flat == flat.amin(dim=2, keepdim=True))


def _write(graph: Graph, layer: Layer, w: np.ndarray, q: np.ndarray, grid: WeightGrid, scheme: QuantScheme) -> None:
    """Store `scale * (q - z)`; restore any channel whose re-computed grid would not give back q."""
    new = grid.dequantize(q)
    check = weight_grid(new, scheme)
    back = check.quantize(new)
    bad = np.any((back != q).reshape(w.shape[0], -1), axis=1)
    if bad.any():
        new[bad] = w[bad]
    graph.set_weight(layer, new)


def collect_inputs(graph: Graph, layers: list[Layer], batches, samples: int, seed: int) -> dict[str, np.ndarray]:
    """Per layer, `samples` rows of its input patches (rows, groups, Cin/groups x kernel) from the float model."""
    rng = np.random.default_rng(seed)
    total = sum(len(next(iter(feed.values()))) for feed in batches)
    per_sample = max(1, -(-samples // max(total, 1)))
    chunks: dict[str, list[np.ndarray]] = {layer.node: [] for layer in layers}
    by_input: dict[str, list[Layer]] = {}
    for layer in layers:
        by_input.setdefault(layer.input, []).append(layer)

    def visit(values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            for layer in by_input[name]:
                chunks[layer.node].append(patches(layer, graph.weight(layer).shape, value, per_sample, rng))

    for_each_batch(graph.model, list(by_input), batches, visit)
    return {node: np.concatenate(parts)[:samples] if parts else np.zeros((0,)) for node, parts in chunks.items()}


def patches(layer: Layer, weight_shape: tuple[int, ...], x: np.ndarray, per_sample: int, rng) -> np.ndarray:
    """`per_sample` random im2col rows per sample of `x`, shaped (rows, groups, Cin/groups x kernel)."""
    x = np.asarray(x, dtype=np.float32)
    if layer.op_type == "Gemm":
        rows = x.reshape(len(x), -1)
        take = rng.choice(len(rows), size=min(len(rows), per_sample * len(rows)), replace=False)
        return rows[take][:, None, :]
    if x.ndim == 3:  # Conv1d as a 2-D conv of height 1
        x = x[:, :, None, :]
        kernel, strides, dil = (1, layer.kernel[0]), (1, layer.strides[0]), (1, layer.dilations[0])
        pads = (0, layer.pads[0], 0, layer.pads[1])
    else:
        kernel, strides, dil, pads = layer.kernel, layer.strides, layer.dilations, layer.pads
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (padded.shape[2] - dil[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    out_w = (padded.shape[3] - dil[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    count = min(per_sample, out_h * out_w)
    rows = []
    for sample in padded:
        flat = rng.choice(out_h * out_w, size=count, replace=False)
        oh, ow = flat // out_w, flat % out_w
        r = oh[:, None] * strides[0] + np.arange(kernel[0]) * dil[0]
        c = ow[:, None] * strides[1] + np.arange(kernel[1]) * dil[1]
        block = sample[:, r[:, :, None], c[:, None, :]]  # (C, count, kh, kw)
        rows.append(block.transpose(1, 0, 2, 3).reshape(count, -1))
    groups = layer.group
    stacked = np.concatenate(rows)
    return stacked.reshape(len(stacked), groups, -1)
