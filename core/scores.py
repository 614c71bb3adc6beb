"""The export contract (shared/spec/fusion.md): what a system writes for each split it scores, and
the validating reader that fusion and later stages use.

`EXP/<system>/scores/<split>/` holds, for the split's readable utterances in manifest order:
  logits.tsv              header `utt_id label 0 1 2 3 4 5 6`; label −1 where unknown
  embeddings.npy          (N, E) float32, the layer before the classifier; row i ↔ line i + 1
  ids.txt                 the utterance ids, one per line
and, where the system scored windows (dev and test): the utterance's windows at the system's input
length (its config says length and shift), the last one ending at the utterance's end:
  window_embeddings.npy   (M, E) float32
  window_offsets.npy      int64 (N + 1): utterance i owns rows offsets[i]:offsets[i + 1]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_path, save_npy
from core.errors import fail
from core.labels import NO_LABEL, NUM_KNOWN, SCORE_COLUMNS, UNKNOWN
from core.tables import read_table, write_table

LOGIT_COLUMNS = ("utt_id", "label") + SCORE_COLUMNS


def write_scores(folder: Path, ids: list[str], labels: np.ndarray, logits: np.ndarray, embeddings: np.ndarray,
                 window_embeddings: np.ndarray | None = None, window_offsets: np.ndarray | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(np.asarray(logits, dtype=np.float64), columns=list(SCORE_COLUMNS))
    frame.insert(0, "label", np.asarray(labels, dtype=np.int64))
    frame.insert(0, "utt_id", list(ids))
    # 6 significant digits: softmax decisions do not move, and the file stays readable by eye
    write_table(folder / "logits.tsv", frame, float_format="%.6g")
    save_npy(folder / "embeddings.npy", np.asarray(embeddings, dtype=np.float32))
    with atomic_path(folder / "ids.txt") as tmp:
        tmp.write_text("".join(u + "\n" for u in ids))
    if window_embeddings is not None:
        save_npy(folder / "window_embeddings.npy", np.asarray(window_embeddings, dtype=np.float32))
        save_npy(folder / "window_offsets.npy", np.asarray(window_offsets, dtype=np.int64))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:
        fail(f"{path}: unreadable array ({type(err).__name__}: {err})")


class SystemScores:
    """One system's exported split: ids, labels, logits, embeddings (and windows when present)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "logits.tsv"
        if not path.is_file():
            fail(f"{self.folder}: no logits.tsv; run the score stage for this system")
        frame = read_table(path, LOGIT_COLUMNS, {"utt_id": str}, what="score file")
        self.ids = frame["utt_id"].tolist()
        try:
            self.labels = frame["label"].to_numpy(dtype=np.int64)
            self.logits = frame[list(SCORE_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, NUM_KNOWN)
        except (ValueError, TypeError) as err:
            fail(f"{path}: non-numeric label or score ({err})")
        if np.any((self.labels < NO_LABEL) | (self.labels >= UNKNOWN)):
            fail(f"{path}: labels must be −1 (unknown) or a known class 0–{UNKNOWN - 1}")
        if len(set(self.ids)) != len(self.ids):
            fail(f"{path}: duplicate utterance ids")
        self.embeddings = _load_npy(self.folder / "embeddings.npy")
        if len(self.embeddings) != len(self.ids):
            fail(f"{self.folder}: {len(self.ids)} ids but {len(self.embeddings)} embeddings")
        wpath = self.folder / "window_embeddings.npy"
        self.window_embeddings = _load_npy(wpath) if wpath.is_file() else None
        self.window_offsets = _load_npy(self.folder / "window_offsets.npy") if wpath.is_file() else None
        if self.window_offsets is not None and (len(self.window_offsets) != len(self.ids) + 1
                                                or self.window_offsets[-1] != len(self.window_embeddings)):
            fail(f"{self.folder}: window_offsets do not match {len(self.ids)} utterances and "
                 f"{len(self.window_embeddings)} window embeddings")
