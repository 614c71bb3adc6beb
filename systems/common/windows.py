"""Fixed-length windows of an utterance, cut once at the model's input length.

Training: a random crop of N samples (repeat-padded when shorter, as the RawNet2/AASIST references
do). Scoring and feature fusion: windows of N samples every `hop` (the system config's
`score.window_hop_seconds`), the last one ending at the utterance's end; a shorter utterance gives
one window, repeat-padded the way training pads it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from core.prepared_split import PreparedSplit


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


class SplitWindows(Dataset):
    """Every window of a split's readable utterances, as (window, owner) items; `offsets[i]` to
    `offsets[i + 1]` are the windows of the i-th readable utterance. Audio is read lazily from the
    memory-mapped cache, so memory stays at one batch whatever the split's size."""

    def __init__(self, split: PreparedSplit, win: int, hop: int):
        self.split, self.win = split, win
        self.index = np.flatnonzero(split.readable)  # manifest rows of the readable utterances
        owners, starts = [], []
        for k, i in enumerate(self.index):
            s = window_starts(split.num_samples(int(i)), win, hop)
            owners += [k] * len(s)
            starts += s
        self.owners = np.asarray(owners, dtype=np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(self.owners, minlength=len(self.index)))])

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, k: int):
        owner = int(self.owners[k])
        i, start = int(self.index[owner]), int(self.starts[k])
        x = repeat_pad(self.split.excerpt(i, start, self.win), self.win)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), owner
