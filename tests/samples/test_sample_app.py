"""The sample app classifies the shipped digit images with an exported model, without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_app_classifies_shipped_images_without_torch(sample_export):
    images = sorted((ROOT / "samples" / "digits" / "images").glob("*/*.png"))
    assert len(images) == 100
    script = (
        "import sys, runpy; sys.modules['torch'] = None; "  # any torch import would fail
        f"sys.argv = ['app', {str(sample_export.model_path)!r}] + {[str(p) for p in images]!r}; "
        f"runpy.run_path({str(ROOT / 'samples' / 'app' / 'classify_digits.py')!r}, run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 100
    correct = sum(Path(line.split(":")[0]).parent.name == line.split(": ")[1].split(" ")[0] for line in lines)
    assert correct >= 95
