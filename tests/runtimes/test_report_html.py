"""report.html: one self-contained page built from report.json, rendered and screenshotted in headless Chromium."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from exporter.report_html import SECTIONS, render_html

from .conftest import chromium_command


class _Page(HTMLParser):
    """Collects section ids, svg ids, bar counts per svg, and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.svgs, self.urls, self.scripts = [], {}, [], 0
        self._svg = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "svg":
            self._svg = attrs.get("id")
            self.svgs[self._svg] = 0
        if tag == "rect" and self._svg and "bar" in (attrs.get("class") or ""):
            self.svgs[self._svg] += 1
        if tag == "script":
            self.scripts += 1
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def test_report_html_is_self_contained_with_every_section(sample_export):
    text = (sample_export.out_dir / "report.html").read_text()
    assert text == render_html(json.loads((sample_export.out_dir / "report.json").read_text()))  # from report.json alone
    page = _parse(text)
    assert page.sections == list(SECTIONS)
    assert page.scripts == 0 and page.urls == []  # nothing to fetch: no scripts, no links, no images by URL
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert page.svgs["latency-plot"] == 3 and page.svgs["size-plot"] == 3  # PyTorch, float ONNX, final
    report = sample_export.report
    assert report["headline"].splitlines()[-1] in text.replace("&#x27;", "'")
    for check in report["validation"]["checks"]:
        assert f"<td>{check['figure']}</td>" in text


def test_layer_plot_and_decisions_come_from_the_report_data(sample_export):
    report = copy.deepcopy(sample_export.report)
    report["accuracy_fallback"] = {"decisions": [
        {"node": "conv_0", "module": "features.0", "op_type": "Conv", "precision": "float", "why": "adds the most error",
         "error_db": 12.5, "int8_ms": 0.01, "float_ms": 0.02},
        {"node": "conv_1", "module": "features.3", "op_type": "Conv", "precision": "int8", "why": "int8 saves 0.005 ms",
         "error_db": 31.0, "int8_ms": 0.01, "float_ms": 0.015},
        {"node": "fc", "module": "classifier", "op_type": "Gemm", "precision": "int8", "why": "int8 saves 0.001 ms",
         "error_db": 24.0, "int8_ms": 0.004, "float_ms": 0.005},
    ]}
    page = _parse(render_html(report))
    assert page.svgs["layer-plot"] == 3 and page.svgs["decision-plot"] == 6
    text = render_html(report)
    assert "1 of 3 layers listed run in float." in text
    # worst layer first in the error plot
    assert text.index("features.0") < text.index("features.3")


def test_report_html_renders_in_chromium(sample_export, chromium, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory(prefix="exporter-chromium-") as profile:
        url = (sample_export.out_dir / "report.html").as_uri()
        subprocess.run(chromium_command(chromium, profile, "--window-size=1100,2600", f"--screenshot={shot}", url),
                       capture_output=True, timeout=120, check=True)
        dom = subprocess.run(chromium_command(chromium, profile, "--dump-dom", url), capture_output=True, text=True,
                             timeout=120, check=True).stdout
    page = _parse(dom)
    assert page.sections == list(SECTIONS) and page.svgs["latency-plot"] == 3
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 2600)
    colours = image.getcolors(maxcolors=1_000_000)
    counts = {rgb: n for n, rgb in colours}
    assert counts.get((0xE3, 0xF5, 0xE8), 0) > 5000  # the green PASS banner was painted
    assert counts.get((0xF5, 0x85, 0x18), 0) > 300  # the final model's orange bars (latency and size)
    assert counts.get((0x4C, 0x78, 0xA8), 0) > 300  # the float model's blue bars
