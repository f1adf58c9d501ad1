"""Golden vectors: a few real validation inputs, the PyTorch reference outputs and the gate's tolerance.

They are written beside the model so that an app on any runtime (Python, Node, a browser, OpenVINO)
can prove it computes what the exporter validated, without Python or numpy:

    golden.json            names, shapes, dtypes, files, the tolerance rules and how the samples were chosen
    golden.input-<name>.bin  each input, all samples stacked on axis 0, raw little-endian
    golden.reference.bin   the PyTorch reference output (the model the gate compared against), float32
    golden.expected.bin    the exported file's output on onnxruntime's CPU provider at export time, float32

Only the model's first output is kept (the one the gate checks). An app runs the samples in chunks of
`batch` rows (1 for dynamic-batch files, the file's fixed batch otherwise), compares its outputs with
`reference` and applies each rule `figure rule threshold` (`>=` or `<=`) to the figures defined in
`exporter.verify`. The samples are evenly spread over the validation split; for classifiers they are
taken among the samples on which the validated file agrees with PyTorch on top-1 (so the check tests
the runtime, not the model's known error rate, which the gate already measured on the whole split).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import PlanError

GOLDEN_FILE = "golden.json"
FORMAT = "edge-exporter-golden/1"
GOLDEN_SAMPLES = 8
GOLDEN_FIGURES = ("top1_agreement", "cosine", "sqnr_db", "max_abs_error")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")


@dataclass(frozen=True)
class ArrayFile:
    """One raw little-endian array beside golden.json."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]

    def load(self, folder: Path) -> np.ndarray:
        """Read the array back; a size that does not match the shape is an error."""
        path = folder / self.file
        if not path.is_file():
            raise PlanError(f"golden vectors are incomplete: {path} is missing (re-run the export)")
        data = np.fromfile(path, dtype=np.dtype(self.dtype).newbyteorder("<"))
        if data.size != int(np.prod(self.shape)):
            raise PlanError(f"{path} holds {data.size} values, golden.json says shape {list(self.shape)}: re-run the export")
        return data.reshape(self.shape).astype(self.dtype)


@dataclass(frozen=True)
class ToleranceRule:
    """One gated figure: passes when `measured rule threshold` (rule is `>=` or `<=`)."""

    figure: str
    rule: str
    threshold: float

    def passes(self, measured: float) -> bool:
        """The gate's comparison (with the gate's 1e-12 slack on upper bounds)."""
        return measured >= self.threshold if self.rule == ">=" else measured <= self.threshold + 1e-12


@dataclass(frozen=True)
class GoldenSet:
    """The content of golden.json (arrays stay on disk until `load_arrays`)."""

    model: str
    samples: int
    batch: int
    inputs: tuple[ArrayFile, ...]
    reference: ArrayFile
    expected: ArrayFile | None
    tolerance: tuple[ToleranceRule, ...]
    reference_model: str = "original PyTorch model"
    selection: str = ""
    figures_at_export: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> str:
        """golden.json text."""
        data = asdict(self)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def read(cls, folder: Path) -> "GoldenSet":
        """Parse `folder/golden.json`; a missing or malformed file is a `PlanError` naming it."""
        path = Path(folder) / GOLDEN_FILE
        if not path.is_file():
            raise PlanError(f"{path} not found: {folder} is not an export output folder with golden vectors (re-run exporter export)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            arrays = lambda items: tuple(_array(a) for a in items)  # noqa: E731
            return cls(
                model=str(data["model"]),
                samples=int(data["samples"]),
                batch=int(data["batch"]),
                inputs=arrays(data["inputs"]),
                reference=_array(data["reference"]),
                expected=_array(data["expected"]) if data.get("expected") else None,
                tolerance=tuple(ToleranceRule(str(t["figure"]), str(t["rule"]), float(t["threshold"])) for t in data["tolerance"]),
                reference_model=str(data.get("reference_model", "")),
                selection=str(data.get("selection", "")),
                figures_at_export=dict(data.get("figures_at_export", {})),
                preprocess=dict(data.get("preprocess", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"{path} is not a valid golden-vector file ({exc}): re-run exporter export") from None

    def load_inputs(self, folder: Path) -> dict[str, np.ndarray]:
        """All input arrays, keyed by input name, samples on axis 0."""
        return {a.name: a.load(Path(folder)) for a in self.inputs}

    def chunks(self, inputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The feeds an app runs, `batch` samples each, in order."""
        return [{k: v[i:i + self.batch] for k, v in inputs.items()} for i in range(0, self.samples, self.batch)]


def _array(data: dict) -> ArrayFile:
    if data["dtype"] not in DTYPES:
        raise ValueError(f"dtype {data['dtype']!r} is not one of {', '.join(DTYPES)}")
    return ArrayFile(str(data["name"]), str(data["file"]), str(data["dtype"]), tuple(int(d) for d in data["shape"]))


def _write(folder: Path, name: str, file: str, array: np.ndarray) -> ArrayFile:
    array = np.ascontiguousarray(array)
    array.astype(array.dtype.newbyteorder("<"), copy=False).tofile(folder / file)
    return ArrayFile(name, file, str(array.dtype), tuple(int(d) for d in array.shape))


def choose_samples(reference: np.ndarray, validated: np.ndarray, count: int, batch: int) -> np.ndarray:
    """Indices of `count` samples (a multiple of `batch`) evenly spread over the validation split.

    For classifier-shaped outputs (2-D, several columns) only samples on which the validated file's
    top-1 matches the reference's are eligible, unless too few are.
    """
    total = len(reference)
    count = max(batch, (min(count, total) // batch) * batch)
    eligible = np.arange(total)
    if reference.ndim == 2 and reference.shape[1] > 1:
        agree = np.flatnonzero(reference.argmax(1) == validated.argmax(1))
        if len(agree) >= count:
            eligible = agree
    picks = np.unique(np.linspace(0, len(eligible) - 1, num=count).round().astype(int))
    chosen = eligible[picks]
    if len(chosen) < count:  # tiny sets: pad by repeating (still real samples)
        chosen = np.resize(chosen, count)
    return chosen


def write_golden(folder: Path, model_file: str, session_run, feeds: list[dict[str, np.ndarray]], reference: list[np.ndarray],
                 checks: list, batch: int, reference_model: str, figures, preprocess: dict[str, Any] | None = None,
                 count: int = GOLDEN_SAMPLES, dynamic: bool = True) -> GoldenSet:
    """Write golden.json and its arrays into `folder` from per-batch validation feeds and reference outputs.

    `session_run(feed) -> first output` runs the validated file; `checks` are the gate's checks (objects
    with `figure`, `rule`, `threshold`): the figures golden vectors can measure become the tolerance.
    `figures(reference, candidate) -> dict` computes the figures (`figures` below); `dynamic` says whether
    the file takes any batch size (else every run gets exactly `batch` rows).
    """
    names = list(feeds[0])
    stacked = {n: np.concatenate([f[n] for f in feeds]) for n in names}
    ref = np.concatenate(reference).astype(np.float32)
    stacked = {n: a[:len(ref)] for n, a in stacked.items()}
    chunk = 64 if dynamic else batch
    usable = len(ref) if dynamic else (len(ref) // batch) * batch
    ref, stacked = ref[:usable], {n: a[:usable] for n, a in stacked.items()}
    validated = np.concatenate([session_run({n: a[i:i + chunk] for n, a in stacked.items()}) for i in range(0, usable, chunk)])
    idx = choose_samples(ref, validated, count, batch)
    inputs = tuple(_write(folder, n, f"golden.input-{_safe(n)}.bin", stacked[n][idx]) for n in names)
    ref_file = _write(folder, "reference", "golden.reference.bin", ref[idx])
    expected = np.concatenate([session_run({n: stacked[n][idx][i:i + batch] for n in names}) for i in range(0, len(idx), batch)])
    expected_file = _write(folder, "expected", "golden.expected.bin", expected.astype(np.float32))
    first_output = next((getattr(c, "output", "") for c in checks), "")
    rules = tuple(ToleranceRule(c.figure, c.rule, float(c.threshold)) for c in checks
                  if c.figure in GOLDEN_FIGURES and getattr(c, "output", "") == first_output)
    classifier = ref.ndim == 2 and ref.shape[1] > 1
    golden = GoldenSet(
        model=model_file,
        samples=int(len(idx)),
        batch=batch,
        inputs=inputs,
        reference=ref_file,
        expected=expected_file,
        tolerance=rules,
        reference_model=reference_model,
        selection=(f"{len(idx)} of {len(ref)} validation samples, evenly spread"
                   + (", among those where the validated file agrees with PyTorch on top-1" if classifier else "")),
        figures_at_export={"runtime": "onnxruntime-cpu (python)", **figures(ref[idx], expected)},
        preprocess=dict(preprocess or {}),
    )
    (folder / GOLDEN_FILE).write_text(golden.to_json(), encoding="utf-8")
    return golden


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "input"


def write_run_golden(run) -> GoldenSet:
    """Golden vectors of a finished `ExportRun`, written into its staging folder beside model.onnx.

    The reference is the model the gate compared against (the compressed model when passes ran), and
    the tolerance is the gate's own checks (the target's, or the accuracy budget's).
    """
    from exporter.runtime import session_for

    exported = getattr(getattr(run, "evaluator", None), "exported", None) or getattr(run, "export_reference", None)
    batches = reference_batches(exported or run.reference)
    batch = 1 if run.plan.target.dynamic_batch else int(run.specs[0].shape[0])
    session = session_for(run.final_path, threads=1)
    preprocess = _image_preprocess(run.plan.data)
    golden = write_golden(
        run.outputs.staging,
        model_file=run.final_path.name,
        session_run=lambda feed: session.run(None, feed)[0],
        feeds=[feed for feed, _ in batches],
        reference=[out for _, out in batches],
        checks=run.checks,
        batch=batch,
        reference_model="compressed PyTorch model (after the passes)" if exported else "original PyTorch model",
        figures=figures,
        preprocess=preprocess,
        dynamic=run.plan.target.dynamic_batch,
    )
    run.measurements["golden_vectors"] = {"file": GOLDEN_FILE, "samples": golden.samples, "selection": golden.selection,
                                          "reference_model": golden.reference_model, "figures_at_export": golden.figures_at_export}
    return golden


def _image_preprocess(data) -> dict[str, Any]:
    """The image preprocessing the data was read with, when it was set (apps repeat it on user images)."""
    import dataclasses

    keys = ("image_preset", "resize", "crop", "mean", "std")
    if all(getattr(data, k, None) is None for k in keys):
        return {}
    from calibration import ImagePreprocess

    image = ImagePreprocess.preset(data.image_preset) if data.image_preset else ImagePreprocess()
    changes = {k: getattr(data, k) for k in ("resize", "crop", "mean", "std") if getattr(data, k) is not None}
    image = dataclasses.replace(image, **changes)
    return {"channels": image.channels, "resize": image.resize, "crop": image.crop, "scale": image.scale,
            "mean": list(image.mean), "std": list(image.std)}


def figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """The figures golden vectors are checked with (the gate's definitions; samples/common/golden.mjs mirrors them).

    max/mean absolute error; cosine: mean over samples of the cosine between flattened rows; SQNR:
    10 log10(sum ref^2 / sum (ref - cand)^2) in dB; top-1 agreement for 2-D outputs with several columns.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    diff = np.abs(ref - cand)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    same = np.all(ref == cand, axis=1)
    cos = np.where(norms > 0, np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-300), np.where(same, 1.0, 0.0))
    noise, signal = float(np.sum((ref - cand) ** 2)), float(np.sum(ref**2))
    sqnr = float("inf") if noise == 0 else float("-inf") if signal == 0 else float(10 * np.log10(signal / noise))
    classifier = np.ndim(reference) == 2 and np.shape(reference)[1] > 1
    return {
        "samples": int(len(ref)),
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(np.mean(cos)),
        "sqnr_db": sqnr,
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))) if classifier else None,
    }


def reference_batches(reference) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(feed, first output) per validation batch, from the run's reference outputs (either representation)."""
    if hasattr(reference, "batches"):
        return [(b.feed, np.asarray(b.outputs[0])) for b in reference.batches]
    return [(feed, np.asarray(out)) for feed, out, _ in reference]
