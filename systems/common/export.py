"""The export contract (shared/spec/fusion.md): what every system writes for fusion to read.

`EXP/scores/<split>/` holds, for the split's readable utterances in manifest order:
  logits.tsv              header `utt_id label 0 1 2 3 4 5 6`; label −1 where unknown
  embeddings.npy          (N, 256) float32, the layer before the classifier; row i ↔ line i + 1
  ids.txt                 the utterance ids, one per line
and with windows (the dev and test splits): each utterance's 3 s windows every 1 s (the last one ending at
the utterance's end, a short utterance padded to one window):
  window_embeddings.npy   (M, 256) float32
  window_offsets.npy      int64 (N + 1): utterance i owns rows offsets[i]:offsets[i + 1]
Unreadable utterances are not scored; the submission labels them (see submit/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.common import atomic_path, fail
from data_prep.prepare import PreparedSplit
from data_prep.views import window_starts

CLASS_NAMES = tuple(str(c) for c in range(7))
WINDOW_SECONDS, WINDOW_SHIFT_SECONDS = 3.0, 1.0


class WindowAudio:
    """Lazy sequence of every window of a split's readable utterances, and their offsets."""

    def __init__(self, split: PreparedSplit, index: np.ndarray, sample_rate: int = 16000):
        win, hop = int(WINDOW_SECONDS * sample_rate), int(WINDOW_SHIFT_SECONDS * sample_rate)
        self.split, self.win = split, win
        self.items: list[tuple[int, int]] = []
        offsets = [0]
        for i in index:
            starts = window_starts(split.num_samples(int(i)), win, hop)
            self.items += [(int(i), s) for s in starts]
            offsets.append(len(self.items))
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> np.ndarray:
        i, start = self.items[k]
        return self.split.audio(i)[start:start + self.win]


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def write_scores(folder: Path, ids: list[str], labels: np.ndarray, logits: np.ndarray, embeddings: np.ndarray,
                 window_embeddings: np.ndarray | None = None, window_offsets: np.ndarray | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(("utt_id", "label") + CLASS_NAMES)]
    lines += ["\t".join([u, str(int(lab))] + [f"{v:.6g}" for v in row]) for u, lab, row in zip(ids, labels, logits)]
    with atomic_path(folder / "logits.tsv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    save_npy(folder / "embeddings.npy", embeddings.astype(np.float32))
    with atomic_path(folder / "ids.txt") as tmp:
        tmp.write_text("".join(u + "\n" for u in ids))
    if window_embeddings is not None:
        save_npy(folder / "window_embeddings.npy", window_embeddings.astype(np.float32))
        save_npy(folder / "window_offsets.npy", window_offsets)


class SystemScores:
    """Read one system's exported split: ids, labels, logits, embeddings (and windows when present)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "logits.tsv"
        if not path.is_file():
            fail(f"{self.folder}: no logits.tsv; run the score stage for this system")
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        if tuple(header[2:]) != CLASS_NAMES or header[:2] != ["utt_id", "label"]:
            fail(f"{path}: unexpected header {lines[0]!r}")
        rows = [line.split("\t") for line in lines[1:]]
        self.ids = [r[0] for r in rows]
        self.labels = np.array([int(r[1]) for r in rows], dtype=np.int64)
        self.logits = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float64).reshape(-1, 7)
        self.embeddings = np.load(self.folder / "embeddings.npy")
        if len(self.embeddings) != len(self.ids):
            fail(f"{self.folder}: {len(self.ids)} ids but {len(self.embeddings)} embeddings")
        wpath = self.folder / "window_embeddings.npy"
        self.window_embeddings = np.load(wpath) if wpath.is_file() else None
        self.window_offsets = np.load(self.folder / "window_offsets.npy") if wpath.is_file() else None
