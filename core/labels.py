"""The label space of ADD 2023 Track 3: one definition, imported everywhere.

0 is real speech, 1–6 the six known generation algorithms, 7 an algorithm never seen in training.
Networks have one output per known class; score files name their columns by the class number.
"""
from __future__ import annotations

import numpy as np

REAL = 0
FAKE_CLASSES = (1, 2, 3, 4, 5, 6)
KNOWN_CLASSES = (REAL, *FAKE_CLASSES)
NUM_KNOWN = len(KNOWN_CLASSES)  # network outputs
UNKNOWN = 7
NUM_LABELS = NUM_KNOWN + 1  # labels a decision may take, 0–7
ALL_LABELS = range(0, NUM_LABELS)
NO_LABEL = -1  # manifests and score files: the utterance's class is not known (test)

# human-readable names for tables and plots
LABEL_NAMES = ("real", "fake 1", "fake 2", "fake 3", "fake 4", "fake 5", "fake 6", "unknown")
# column headers of per-class score files
SCORE_COLUMNS = tuple(str(c) for c in KNOWN_CLASSES)


def kept_classes(held_out: int | None = None) -> np.ndarray:
    """The known classes that remain when `held_out` plays the unknown (leave-one-out τ rule)."""
    return np.array([c for c in KNOWN_CLASSES if c != held_out])
