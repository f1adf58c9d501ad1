"""The per-layer SVG: valid XML, one bar per layer, worst first, labels escaped."""

import xml.etree.ElementTree as ET

from exporter.accuracy.plot import error_plot_svg

NS = "{http://www.w3.org/2000/svg}"


def rows():
    return [
        {"node": "a", "module": "features.0", "sqnr_db": 31.0, "kind": "activation"},
        {"node": "a", "module": "features.0", "sqnr_db": 35.0, "kind": "weight"},
        {"node": "b", "module": "features.3", "sqnr_db": -4.0, "kind": "weight"},
        {"node": "c", "module": "", "sqnr_db": 12.5, "kind": "activation"},
        {"node": "d", "module": "blocks<1>&x", "sqnr_db": 18.0, "kind": "activation"},
    ]


def test_bars_are_worst_first_with_module_labels() -> None:
    svg = error_plot_svg(rows(), "Per-layer error", threshold_db=15.0)
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    titles = [r.find(f"{NS}title").text for r in bars]
    assert titles == ["features.3: -4.0 dB", "c: 12.5 dB", "blocks<1>&x: 18.0 dB", "features.0: 31.0 dB"]
    colors = [r.get("fill") for r in bars]
    assert colors == ["#d9534f", "#f0ad4e", "#f0ad4e", "#5cb85c"]
    assert root.find(f"{NS}title").text == "Per-layer error"


def test_top_limits_the_bars_and_empty_rows_still_draw() -> None:
    root = ET.fromstring(error_plot_svg(rows(), "t", top=2))
    assert len([r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]) == 2
    empty = ET.fromstring(error_plot_svg([], "nothing"))
    assert "no quantized layer measured" in "".join(empty.itertext())
