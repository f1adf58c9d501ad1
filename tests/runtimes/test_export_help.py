"""`exporter export --help` reads as a map: flags grouped by stage, in stage order, none lost."""

from __future__ import annotations

import subprocess
import sys

from exporter.cli import EXPORT_STAGES, build_parser, settings_from_args


def _export_parser():
    parser = build_parser(with_passes=True)
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["export"]


def test_help_sections_come_in_stage_order():
    text = subprocess.run([sys.executable, "-m", "exporter", "export", "--help"], capture_output=True, text=True, check=True).stdout
    titles = [EXPORT_STAGES[s][0] for s in ("model", "data", "target")] + ["compression passes"] + \
             [EXPORT_STAGES[s][0] for s in ("search", "output")]
    positions = [text.index(f"\n{t}") for t in titles]
    assert positions == sorted(positions)
    sections = {}
    for block in text.split("\n\n"):
        head, _, body = block.partition(":\n")
        sections[head.strip()] = body
    expect = {"--model-class": "model", "--calib-nproc": "data", "--mean": "data", "--target": "target",
              "--accuracy-budget": "search", "--no-search": "search", "--out": "output", "--dry-run": "output"}
    for flag, stage in expect.items():
        assert f"  {flag}" in sections[EXPORT_STAGES[stage][0]], (flag, stage)
    passes = next(body for head, body in sections.items() if head.startswith("compression passes"))
    assert "  --prune PRUNE" in passes or "  --prune " in passes
    assert "  --prune-importance" in passes


def test_every_flag_is_in_exactly_one_group_and_still_parses():
    parser = _export_parser()
    grouped = [a for g in parser._action_groups for a in g._group_actions]
    assert len(grouped) == len(parser._actions)  # nothing dropped, nothing listed twice
    for stage, (title, flags) in EXPORT_STAGES.items():
        group = next(g for g in parser._action_groups if g.title == title)
        names = {n for a in group._group_actions for n in (a.option_strings or [a.dest])}
        assert set(flags) <= names, stage
    args = parser.parse_args(["m.pt2", "--target", "cpu-int8", "--calib", "d.npz", "--val-fraction", "0.3", "--no-search",
                              "--out", "o", "--force", "--prune", "0.5", "--seed", "3"])
    settings = settings_from_args(args)
    assert settings["target"] == "cpu-int8" and settings["calib"] == "d.npz" and settings["val_fraction"] == 0.3
    assert settings["search"] is False and settings["out"] == "o" and settings["seed"] == 3
    assert settings["passes"] == [{"name": "prune", "ratio": "0.5"}]
