"""The plan: one frozen object holding every setting of an export run.

A plan is built from flat *settings* (the CLI's flags, a plan file, or `export(**settings)`),
validated once, written beside the outputs as `plan.json`, and is the only source of truth for
the pipeline. `plan.json` holds the flat settings (feed it back with `--plan` to repeat the run)
and, for reading, the fully resolved target and pass configurations.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import PlanError
from exporter.figures import parse_output_kinds
from exporter.inputs import parse_input_shape
from exporter.settings import FilePath, coerce, setting_type_of
from exporter.loading import ModelSource, parse_model_kwargs
from targets import Target, get_target

EXPORTERS = ("auto", "dynamo", "torchscript")
CALIB_METHODS = ("minmax", "entropy", "percentile")
MIN_OPSET = 13

# Flat settings with their defaults: the vocabulary shared by the CLI, plan files and the API.
DEFAULTS: dict[str, Any] = {
    "model": None,
    "target": "cpu-int8",
    "out": None,
    "model_class": None,
    "model_kwargs": None,
    "trust_pickle": False,
    "input_shape": [],
    "calib": None,
    "val": None,
    "calib_samples": None,
    "calib_nproc": 1,
    "calib_nnodes": 1,
    "calib_node_rank": 0,
    "calib_rdzv_endpoint": None,
    "val_samples": None,
    "val_fraction": 0.2,
    "batch_size": 16,
    "calib_method": None,
    "image_preset": None,
    "resize": None,
    "crop": None,
    "mean": None,
    "std": None,
    "passes": [],
    "exporter": "auto",
    "opset": None,
    "seed": 0,
    "latency_repeats": 20,
    "fail_if_slower": False,
    "accuracy_budget": None,
    "search": True,
    "search_minutes": None,
    "output_kind": [],
    "force": False,
}


# Declared types of the settings (`exporter.settings.coerce` applies them to every source); a setting
# not listed here has the type of its default (None and lists: checked by its own parser below).
SETTING_TYPES: dict[str, Any] = {
    "model": FilePath | None,
    "target": FilePath,
    "out": FilePath | None,
    "model_class": str | None,
    "trust_pickle": bool,
    "calib": FilePath | None,
    "val": FilePath | None,
    "calib_samples": int | None,
    "val_samples": int | None,
    "val_fraction": float,
    "batch_size": int,
    "calib_method": str | None,
    "image_preset": str | None,
    "resize": int | None,
    "crop": int | None,
    "passes": list | tuple,
    "exporter": str,
    "opset": int | None,
    "seed": int,
    "latency_repeats": int,
    "fail_if_slower": bool,
    "accuracy_budget": dict | None,
    "search_minutes": float | None,
    "force": bool,
}


def typed_settings(settings: dict[str, Any], source: str = "") -> dict[str, Any]:
    """`settings` with every known setting converted to its declared type (`source` names where they came from)."""
    suffix = f" in {source}" if source else ""
    return {
        key: coerce(value, SETTING_TYPES.get(key, setting_type_of(DEFAULTS[key])), f"{key}{suffix}")
        if key in DEFAULTS and value is not None else value
        for key, value in settings.items()
    }


@dataclass(frozen=True)
class DataPlan:
    """Where calibration and validation samples come from and how many to use."""

    calib: str | None = None
    val: str | None = None
    calib_samples: int | None = None
    calib_nproc: int = 1
    calib_nnodes: int = 1
    calib_node_rank: int = 0
    calib_rdzv_endpoint: str | None = None
    val_samples: int | None = None
    val_fraction: float = 0.2
    batch_size: int = 16
    seed: int = 0
    image_preset: str | None = None
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class PassStep:
    """One compression pass to run, with its validated config."""

    name: str
    config: Any

    def to_dict(self) -> dict[str, Any]:
        """`{"name": ..., **settings}`: the form plan files use."""
        return {"name": self.name, **self.config.to_dict()}


@dataclass(frozen=True)
class Plan:
    """Every setting of one export run, resolved and validated."""

    model: ModelSource
    target: Target
    out_dir: Path
    input_shapes: tuple[tuple[int, ...], ...] = ()
    data: DataPlan = field(default_factory=DataPlan)
    passes: tuple[PassStep, ...] = ()
    exporter: str = "auto"
    latency_repeats: int = 20
    fail_if_slower: bool = False
    accuracy_budget: dict[str, Any] | None = None
    search: bool = True
    search_minutes: float | None = None
    output_kinds: tuple[tuple[str, str], ...] = ()  # --output-kind: (output name or "" for all, kind)
    force: bool = False
    settings: tuple[tuple[str, Any], ...] = ()

    def settings_dict(self) -> dict[str, Any]:
        """The flat settings this plan was built from (replayable with `--plan`)."""
        return json.loads(json.dumps(dict(self.settings)))

    def to_dict(self) -> dict[str, Any]:
        """`plan.json` content: replayable settings plus the resolved target and passes."""
        return {
            "settings": self.settings_dict(),
            "resolved": {
                "model": self.model.to_dict(),
                "target": self.target.to_dict(),
                "out_dir": str(self.out_dir),
                "input_shapes": [list(s) for s in self.input_shapes],
                "data": dataclasses.asdict(self.data),
                "passes": [p.to_dict() for p in self.passes],
                "exporter": self.exporter,
                "accuracy_budget": self.accuracy_budget,
            },
        }

    def to_json(self) -> str:
        """Pretty JSON of `to_dict()`."""
        return json.dumps(self.to_dict(), indent=2, default=str)


def read_plan_file(path: str | Path) -> dict[str, Any]:
    """Read flat settings from a JSON or TOML plan file (a written `plan.json` works too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"plan file not found: {path}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"plan file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"plan file {path} must hold an object of settings")
    settings = data.get("settings", data)
    if not isinstance(settings, dict):
        raise PlanError(f"plan file {path}: 'settings' must be an object of settings")
    return typed_settings(settings, f"plan file {path}")


def build_plan(settings: dict[str, Any]) -> Plan:
    """Validate flat `settings` (unknown keys rejected) and resolve them into a `Plan`."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise PlanError(f"unknown setting {unknown[0]!r}: valid settings are {', '.join(sorted(DEFAULTS))}")
    s = {**DEFAULTS, **typed_settings({k: v for k, v in settings.items() if v is not None})}
    if not s["model"]:
        raise PlanError("no model given: pass the model file, e.g. exporter export model.pt --calib data/")
    target = get_target(str(s["target"]))
    if s["calib_method"] is not None:
        if s["calib_method"] not in CALIB_METHODS:
            raise PlanError(f"bad --calib-method {s['calib_method']!r}: expected one of {', '.join(CALIB_METHODS)}")
        quant = dataclasses.replace(target.quantization, calibration_method=s["calib_method"])
        target = dataclasses.replace(target, quantization=quant)
    if s["opset"] is not None:
        target = dataclasses.replace(target, opset=_opset(s["opset"]))
    if s["exporter"] not in EXPORTERS:
        raise PlanError(f"bad --exporter {s['exporter']!r}: expected one of {', '.join(EXPORTERS)}")
    shapes = tuple(
        parse_input_shape(x) if isinstance(x, str) else tuple(int(d) for d in x) for x in (s["input_shape"] or [])
    )
    if target.needs_fixed_shapes and not shapes:
        raise PlanError(f"target {target.name} needs fixed input shapes: pass --input-shape, e.g. --input-shape 1,3,224,224")
    if target.needs_calibration and not s["calib"]:
        raise PlanError(f"target {target.name} quantizes statically and needs calibration data: pass --calib PATH")
    model_path = Path(str(s["model"]))
    out_dir = Path(s["out"]) if s["out"] else model_path.parent / f"{model_path.stem.split('.')[0]}-{target.name}"
    data = DataPlan(
        calib=_opt_str(s["calib"]),
        val=_opt_str(s["val"]),
        calib_samples=_opt_positive_int(s["calib_samples"], "calib_samples"),
        calib_nproc=_positive_int(s["calib_nproc"], "calib_nproc"),
        calib_nnodes=_positive_int(s["calib_nnodes"], "calib_nnodes"),
        calib_node_rank=_calib_node_rank(s),
        calib_rdzv_endpoint=_calib_endpoint(s),
        val_samples=_opt_positive_int(s["val_samples"], "val_samples"),
        val_fraction=_fraction(s["val_fraction"]),
        batch_size=_positive_int(s["batch_size"], "batch_size"),
        seed=s["seed"],
        image_preset=s["image_preset"],
        resize=_opt_positive_int(s["resize"], "resize"),
        crop=_opt_positive_int(s["crop"], "crop"),
        mean=_floats(s["mean"], "mean"),
        std=_floats(s["std"], "std"),
    )
    passes = build_passes(s["passes"])
    budget = s["accuracy_budget"]
    if budget is not None and not isinstance(budget, dict):
        raise PlanError("accuracy_budget must be a table of settings")
    plan = Plan(
        model=ModelSource(
            path=str(model_path),
            model_class=_opt_str(s["model_class"]),
            model_kwargs=parse_model_kwargs(s["model_kwargs"]),
            trust_pickle=s["trust_pickle"],
        ),
        target=target,
        out_dir=out_dir,
        input_shapes=shapes,
        data=data,
        passes=passes,
        exporter=s["exporter"],
        latency_repeats=_positive_int(s["latency_repeats"], "latency_repeats"),
        fail_if_slower=s["fail_if_slower"],
        accuracy_budget=budget,
        search=s["search"] and s["search_minutes"] != 0,
        search_minutes=_search_minutes(s["search_minutes"]),
        output_kinds=parse_output_kinds(s["output_kind"]),
        force=s["force"],
        settings=tuple(
            sorted(
                {
                    **s,
                    "model": str(model_path),
                    "out": str(out_dir),
                    "input_shape": [",".join(map(str, x)) for x in shapes],
                    "passes": [p.to_dict() for p in passes],
                }.items()
            )
        ),
    )
    return plan


def _search_minutes(value: Any) -> float | None:
    """`--search-minutes`: None (scaled to the model), 0 (search off) or a positive number of minutes."""
    if value is None:
        return None
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise PlanError(f"bad --search-minutes {value!r}: expected a number of minutes (0 turns the search off)") from None
    if minutes < 0 or minutes != minutes:
        raise PlanError(f"bad --search-minutes {value!r}: expected 0 (off) or a positive number of minutes")
    return minutes


def build_passes(items: list[dict[str, Any]] | tuple) -> tuple[PassStep, ...]:
    """Resolve `[{"name": "prune", "ratio": 0.5}, ...]` into validated `PassStep`s, in the given order."""
    from exporter.passes import PASSES

    steps = []
    for item in items or []:
        if isinstance(item, PassStep):
            steps.append(item)
            continue
        if not isinstance(item, dict) or "name" not in item:
            raise PlanError(f"each pass must be a table with a 'name', got {item!r}")
        item = dict(item)
        name = item.pop("name")
        cls = PASSES.get(name)
        steps.append(PassStep(name=name, config=cls.Config.from_dict(item, name)))
    return tuple(steps)


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
        if number != float(value) or number <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise PlanError(f"bad --{name.replace('_', '-')} {value!r}: expected a positive integer") from None
    return number


def _opset(value: int) -> int:
    """`--opset`: from 13 (what the quantizers need) to the newest opset the installed onnx package knows."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= value <= newest:
        raise PlanError(f"bad --opset {value}: expected {MIN_OPSET} to {newest} (the newest opset onnx {onnx.__version__} knows)")
    return value


def _opt_positive_int(value: Any, name: str) -> int | None:
    return None if value is None else _positive_int(value, name)


def _fraction(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0.0 < number < 1.0:
        raise PlanError(f"bad --val-fraction {value!r}: expected a number between 0 and 1")
    return number


def _floats(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise PlanError(f"bad --{name} {value!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def _calib_node_rank(s: dict[str, Any]) -> int:
    """`calib_node_rank` in 0 .. calib_nnodes-1."""
    nnodes = _positive_int(s["calib_nnodes"], "calib_nnodes")
    rank = s["calib_node_rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < nnodes:
        raise PlanError(f"bad calib_node_rank {rank!r}: expected 0 .. {nnodes - 1} for {nnodes} machine(s)")
    return rank


def _calib_endpoint(s: dict[str, Any]) -> str | None:
    """`calib_rdzv_endpoint` as host:port; required when calibration spans several machines."""
    endpoint = _opt_str(s["calib_rdzv_endpoint"])
    if endpoint is not None:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise PlanError(f"bad calib_rdzv_endpoint {endpoint!r}: expected host:port, e.g. host0:29500")
    if _positive_int(s["calib_nnodes"], "calib_nnodes") > 1 and endpoint is None:
        raise PlanError("calibration across machines (--calib-nnodes > 1) needs --calib-rdzv-endpoint host:port of node 0")
    return endpoint
