"""Per-MatMul int8 decisions for a transformer encoder: smoothing alpha, then static, dynamic or float.

Rule, for each group of weight MatMuls reading one activation (`TransformerGraph.groups`):
1. capture the activation on calibration samples and simulate the group's int8 output
   (`exporter.ptq.transformer_error`) for every smoothing candidate (none, alpha in `ALPHAS`), in the
   static and the dynamic form; keep the best alpha of each form;
2. the group's form is `static`, or `dynamic` when that is `DYNAMIC_MARGIN_DB` better (MatMul only:
   onnxruntime rewrites a dynamic Gemm under another name); `float` when neither reaches `min_sqnr_db`;
3. which quantized groups then stay int8 is decided end to end (`exporter.ptq.transformer`): by each
   group's own output loss (`exporter.ptq.transformer_probe`) and a check of the whole file.
Speed does not separate the two forms on this CPU: onnxruntime runs a static QDQ MatMul (float
output) as `MatMulIntegerToFloat` and a dynamic one as `DynamicQuantizeMatMul`, and all-static and
all-dynamic MiniLM (sequence 128, batch 1, one thread) measured 36.1 and 35.4 ms against 60.1 ms
float. Static is the default form because its ranges are fixed and portable to QDQ runtimes;
dynamic is taken where it is measurably more faithful (an activation whose range varies by input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.ptq.smoothquant import smoothing_scales, weight_in_out
from exporter.ptq.transformer_error import WeightGrid, group_sqnr_db
from exporter.ptq.transformer_graph import WeightMatMul

ALPHAS = (0.5, 0.7, 0.8, 0.9)
MIN_SQNR_DB = 20.0
DYNAMIC_MARGIN_DB = 0.5


@dataclass(frozen=True)
class MatMulDecision:
    """What was done to weight MatMul `node` and why (one row of the report's per-layer table).

    `treatment` is `static` (QDQ int8, calibrated range), `dynamic` (int8 with the activation range
    taken per run) or `float`; `alpha` is the SmoothQuant alpha applied to its input in the file (None:
    none; a group moved to float after smoothing keeps its function-preserving `Mul`);
    `static_sqnr_db` / `dynamic_sqnr_db` are the simulated SQNRs of its group in each form;
    `output_loss` is 1 - output cosine with only its group in int8 (None when not probed).
    """

    node: str
    treatment: str
    reason: str
    alpha: float | None
    static_sqnr_db: float
    dynamic_sqnr_db: float
    output_loss: float | None = None
    algorithm: str = "transformer_int8"


@dataclass
class GroupChoice:
    """The measured options of one group and the form picked for it."""

    tensor: str
    matmuls: list[WeightMatMul]
    absmax: np.ndarray
    static_sqnr_db: float
    static_alpha: float | None
    dynamic_sqnr_db: float
    dynamic_alpha: float | None
    treatment: str = "float"
    reason: str = ""
    smoothable: bool = True
    applied_alpha: float | None = None
    output_loss: float | None = None

    @property
    def alpha(self) -> float | None:
        """The alpha the chosen form uses (None for float or no smoothing)."""
        return {"static": self.static_alpha, "dynamic": self.dynamic_alpha}.get(self.treatment)

    @property
    def sqnr_db(self) -> float:
        """The simulated SQNR of the chosen form (+inf for float)."""
        return {"static": self.static_sqnr_db, "dynamic": self.dynamic_sqnr_db}.get(self.treatment, float("inf"))

    def decisions(self) -> list[MatMulDecision]:
        """One record per MatMul of the group."""
        return [
            MatMulDecision(m.node, self.treatment, self.reason, self.applied_alpha, round(float(self.static_sqnr_db), 2),
                           round(float(self.dynamic_sqnr_db), 2),
                           None if self.output_loss is None else float(f"{self.output_loss:.3g}"))
            for m in self.matmuls
        ]


def measure_group(tensor: str, matmuls: list[WeightMatMul], x: np.ndarray, weights: dict[str, np.ndarray],
                  grid: WeightGrid, smoothable: bool) -> GroupChoice:
    """Simulated SQNR of the group in static and dynamic int8, each with its best smoothing alpha."""
    per_matmul = [weight_in_out(weights, m) for m in matmuls]
    w = np.concatenate(per_matmul, axis=1)
    absmax = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
    candidates: list[float | None] = [None] + (list(ALPHAS) if smoothable else [])
    best: dict[str, tuple[float, float | None]] = {}
    for mode in ("static", "dynamic"):
        for alpha in candidates:
            scales = None if alpha is None else smoothing_scales(absmax, per_matmul, alpha)
            sqnr = group_sqnr_db(x, w, scales, mode, grid)
            if mode not in best or sqnr > best[mode][0]:
                best[mode] = (sqnr, alpha)
    return GroupChoice(tensor, matmuls, absmax, best["static"][0], best["static"][1], best["dynamic"][0],
                       best["dynamic"][1], smoothable=smoothable)


def choose_treatment(group: GroupChoice, min_sqnr_db: float = MIN_SQNR_DB, dynamic_allowed: bool = True) -> None:
    """Pick the int8 form of `group` by simulated SQNR: static unless dynamic is `DYNAMIC_MARGIN_DB` better; float below `min_sqnr_db`.

    `dynamic_allowed` is False for schemes with int8 activations (`DynamicQuantizeLinear` gives uint8).
    """
    dynamic_ok = dynamic_allowed and all(m.op_type == "MatMul" for m in group.matmuls)
    dynamic_better = dynamic_ok and group.dynamic_sqnr_db >= group.static_sqnr_db + DYNAMIC_MARGIN_DB
    form = "dynamic" if dynamic_better else "static"
    sqnr = group.dynamic_sqnr_db if dynamic_better else group.static_sqnr_db
    if sqnr >= min_sqnr_db:
        group.treatment = form
        group.reason = (f"{form} int8 SQNR {sqnr:.1f} dB"
                        + (f" (static {group.static_sqnr_db:.1f} dB)" if dynamic_better else ""))
    else:
        group.treatment = "float"
        group.reason = f"best int8 SQNR {sqnr:.1f} dB < {min_sqnr_db:g} dB"


def demote(group: GroupChoice, why: str) -> None:
    """Move `group` to float, saying why."""
    group.reason = f"{group.treatment} int8 {why}"
    group.treatment = "float"
