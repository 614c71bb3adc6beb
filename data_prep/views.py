"""Fixed-length views of an utterance, as the systems and the fusion use them.

Training: a random crop of N samples (repeat-padded when shorter, as the RawNet2/AASIST references
do). Scoring: the first N samples (repeat-padded). Feature fusion (spec fusion.md): 3 s windows
every 1 s, the last one ending at the utterance's end; a shorter utterance gives one padded window.
"""
from __future__ import annotations

import numpy as np


def repeat_pad(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(n, dtype=np.float32)
    if len(x) >= n:
        return x[:n]
    return np.tile(x, int(np.ceil(n / len(x))))[:n]


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return repeat_pad(x, n)
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start:start + n]


def first_crop(x: np.ndarray, n: int) -> np.ndarray:
    return repeat_pad(x, n)


def window_starts(num_samples: int, win: int, hop: int) -> list[int]:
    """Start offsets of `win`-sample windows every `hop`; the last one ends at the utterance's end."""
    if num_samples <= win:
        return [0]
    starts = list(range(0, num_samples - win + 1, hop))
    if starts[-1] + win < num_samples:
        starts.append(num_samples - win)
    return starts


def sliding_windows(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """(n_windows, win) array of the windows of `x` (one repeat-padded window when short)."""
    if len(x) <= win:
        return repeat_pad(x, win)[None, :]
    return np.stack([x[s:s + win] for s in window_starts(len(x), win, hop)])
