"""Real English sentences for text models, all from files on this machine (no corpus download).

Two sources, mixed: `data/everyday_sentences.txt` (146 hand-written sentences: news, weather,
recipes, questions, reviews, small talk) and prose sentences cut from Python's bundled
language reference (`pydoc_data.topics`), filtered to plain text (no code, 40..220 chars).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

EVERYDAY = Path(__file__).with_name("data") / "everyday_sentences.txt"


def everyday_sentences() -> list[str]:
    """The hand-written everyday sentences, one per line."""
    return [line.strip() for line in EVERYDAY.read_text(encoding="utf-8").splitlines() if line.strip()]


def reference_sentences() -> list[str]:
    """Plain prose sentences from Python's bundled language reference, deduplicated, in a fixed order."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    found: list[str] = []
    for key in sorted(topics):
        text = re.sub(r"\s+", " ", topics[key])
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            sentence = sentence.strip()
            if not 40 <= len(sentence) <= 220 or sentence in seen:
                continue
            if re.search(r"[{}\[\]<>=_*|\\`#@$]|\.\.\.|\(\)|::|\d\.\d", sentence) or not sentence.endswith("."):
                continue
            seen.add(sentence)
            found.append(sentence)
    return found


def sentence_split(calib_count: int, val_count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint calibration and validation sentence lists, half everyday and half reference prose each."""
    rng = np.random.default_rng(seed)
    everyday = [everyday_sentences()[i] for i in rng.permutation(len(everyday_sentences()))]
    reference_all = reference_sentences()
    reference = [reference_all[i] for i in rng.permutation(len(reference_all))]
    half = len(everyday) // 2
    calib = everyday[:half] + reference[: calib_count - half]
    val = everyday[half:] + reference[calib_count - half : calib_count - half + val_count - (len(everyday) - half)]
    return calib, val
