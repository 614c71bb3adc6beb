"""Text for the demo corpus's text-to-speech classes: sentences cut from the Debian licence texts.

Every Debian machine carries /usr/share/common-licenses, so the corpus needs no downloaded text.
The sentences are shuffled with the corpus seed and cut into train/dev/test pieces that share no
sentence, so a detector cannot lean on having heard the words before.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

from core.errors import fail

LICENSES_DIR = "/usr/share/common-licenses"
MIN_SENTENCES = 100


def cut_sentences(texts: Iterable[str]) -> list[str]:
    """Unique 7–11-word sentences cut from free text, sorted.

    Sentences are split at punctuation, broken at tokens that are not plain words (numbers,
    URLs, code), and the runs of words are cut into consecutive 7–11-word pieces.
    """
    lengths = (9, 7, 11, 8, 10)
    found: set[str] = set()
    for text in texts:
        text = re.sub(r"\s+", " ", text)
        for sentence in re.split(r"[.!?;:()\[\]\"]+", text):
            runs, run = [], []
            for token in sentence.split():
                if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*,?", token):
                    run.append(token)
                else:
                    runs.append(run)
                    run = []
            runs.append(run)
            for words in runs:
                i = k = 0
                while len(words) - i >= 7:
                    n = min(lengths[k % len(lengths)], len(words) - i)
                    found.add(" ".join(words[i:i + n]).rstrip(",") + ".")
                    i, k = i + n, k + 1
    return sorted(found)


def load_sentences() -> list[str]:
    """The sentences of the licence texts every Debian machine carries (cut_sentences)."""
    return cut_sentences(path.read_text(errors="replace") for path in sorted(Path(LICENSES_DIR).iterdir())
                         if path.is_file())


def disjoint_text_pools(rng: np.random.Generator) -> tuple[list[str], dict[str, np.ndarray]]:
    """All sentences, and per split the indices of its own 60/20/20 share of them.

    Takes the planner's generator rather than a seed: the permutation is its first draw, and the
    rest of the plan depends on the generator's state after it.
    """
    sentences = load_sentences()
    if len(sentences) < MIN_SENTENCES:
        fail(f"only {len(sentences)} usable sentences under {LICENSES_DIR}")
    order = rng.permutation(len(sentences))
    cut1, cut2 = int(0.6 * len(order)), int(0.8 * len(order))
    return sentences, {"train": order[:cut1], "dev": order[cut1:cut2], "test": order[cut2:]}
