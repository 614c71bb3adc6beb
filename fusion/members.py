"""The fusion members' exported scores, read through core/scores.py and aligned.

Members are aligned on utterance ids (the first member's order). Their windows need not match:
each system cuts windows at its own input length, so an utterance near a length boundary can have
one window more in one member than in another. Window j of an utterance with n windows in the
widest member is paired with window round(j · (m − 1) / (n − 1)) of a member that has m: the same
position in the utterance, as both members' windows run from its start to its end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import fail
from core.scores import SystemScores
from core.stamps import read_stamp, recorded_place


@dataclass
class SplitScores:
    ids: list[str]
    labels: np.ndarray
    logits: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    window_embeddings: dict[str, "WindowRows | np.ndarray"] = field(default_factory=dict)
    window_offsets: np.ndarray | None = None


def aligned_window_rows(offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows of a member's window embeddings (given by its `offsets`) for a target of `counts`
    windows per utterance, paired by position."""
    own = np.diff(offsets)
    target_offsets = np.concatenate([[0], np.cumsum(counts)])
    utt = np.repeat(np.arange(len(counts)), counts)
    j = np.arange(target_offsets[-1]) - target_offsets[utt]  # window index within its utterance
    span = np.maximum(counts[utt] - 1, 1)
    return offsets[utt] + np.rint(j * (own[utt] - 1) / span).astype(np.int64)


class WindowRows:
    """One member's window embeddings in the aligned order: aligned row j is row `index[j]` of the
    member's own array (an ndarray or a core.stage_files.NpyRows, read in blocks, never whole)."""

    def __init__(self, source, index: np.ndarray | None = None):
        self.source = source
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.source) if self.index is None else len(self.index)

    @property
    def width(self) -> int:
        return int(self.source.shape[1])

    def block(self, start: int, stop: int) -> np.ndarray:
        if self.index is None:
            return np.asarray(self.source[start:stop])
        rows = self.index[start:stop]
        if not len(rows):
            return np.empty((0, self.width), dtype=np.float32)
        # aligned rows of consecutive utterances map to a short, consecutive stretch of the member's
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return np.asarray(self.source[lo:hi])[rows - lo]


def align_windows(per: dict) -> tuple[dict[str, WindowRows], np.ndarray | None]:
    """Every member's windows (`window_embeddings`, `window_offsets`) paired by position on the
    widest member's window count per utterance."""
    with_windows = {s: m for s, m in per.items() if m.window_offsets is not None}
    if not with_windows:
        return {}, None
    counts = np.max([np.diff(m.window_offsets) for m in with_windows.values()], axis=0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = {s: WindowRows(m.window_embeddings, aligned_window_rows(m.window_offsets, counts))
            for s, m in with_windows.items()}
    return rows, offsets


def scored_checkpoint(folder: Path) -> tuple | None:
    """The checkpoint a split's score stamp names, as (its folder and file name, size, time): the
    same file however the stamp spelt its path (relative, or absolute in an earlier kit or through
    a new test set's link). None when the split has no such stamp (a system scored outside the kit)."""
    recorded = (read_stamp(folder) or {}).get("checkpoint")
    if not (isinstance(recorded, dict) and "path" in recorded):
        return None
    return recorded_place(recorded), recorded.get("size"), recorded.get("mtime_ns")


def check_scored_with_one_checkpoint(exp: Path, system: str, splits) -> None:
    """Every split of a member was scored with the same checkpoint: dev's scores set τ and the
    class statistics for test's, so scores of two trainings must not meet (a system trained again
    and only some of its splits scored since, e.g. a new test set scored after a retraining of its
    experiment whose train and dev scores it links)."""
    seen: dict[tuple, str] = {}
    for split in splits:
        checkpoint = scored_checkpoint(exp / system / "scores" / split)
        if checkpoint is not None:
            seen.setdefault(checkpoint, split)
    if len(seen) > 1:
        (a, split_a), (b, split_b) = list(seen.items())[:2]
        fail(f"{exp / system / 'scores'}: {split_a} was scored with {'/'.join(a[0])} and {split_b} with "
             f"{'/'.join(b[0])} (trained again in between); score every split of {system} with its current "
             "checkpoint (stage 4 of its experiment), then fuse")


def load_members(exp: Path, systems: list[str], splits=("train", "dev", "test")) -> dict[str, SplitScores]:
    """Read every member's exported splits and align them on the ids of the first member."""
    for s in systems:
        check_scored_with_one_checkpoint(exp, s, splits)
    out = {}
    for split in splits:
        per = {s: SystemScores(exp / s / "scores" / split) for s in systems}
        ref = per[systems[0]]
        for s in systems[1:]:
            if per[s].ids != ref.ids:
                fail(f"{exp / s / 'scores' / split}: utterance ids differ from {systems[0]}'s; re-run the score stage")
            if (per[s].window_offsets is None) != (ref.window_offsets is None):
                fail(f"{exp / s / 'scores' / split}: windows exported by some members only; re-run the score stage")
        windows, offsets = align_windows(per)
        out[split] = SplitScores(
            ids=ref.ids, labels=ref.labels, logits={s: per[s].logits for s in systems},
            embeddings={s: per[s].embeddings for s in systems}, window_embeddings=windows, window_offsets=offsets)
    return out
