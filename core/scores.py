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

from core.atomic import ensure_dir, remove_stale_temporaries, save_npy, write_text_atomic
from core.errors import fail
from core.labels import NO_LABEL, NUM_KNOWN, SCORE_COLUMNS, UNKNOWN
from core.stage_files import NpyRows, load_npy
from core.tables import read_table, write_table

LOGIT_COLUMNS = ("utt_id", "label") + SCORE_COLUMNS


def write_scores(folder: Path, ids: list[str], labels: np.ndarray, logits: np.ndarray, embeddings: np.ndarray,
                 window_embeddings: np.ndarray | None = None, window_offsets: np.ndarray | None = None) -> None:
    folder = ensure_dir(folder)
    remove_stale_temporaries(folder)  # what a killed earlier run's atomic writes left
    frame = pd.DataFrame(np.asarray(logits, dtype=np.float64), columns=list(SCORE_COLUMNS))
    frame.insert(0, "label", np.asarray(labels, dtype=np.int64))
    frame.insert(0, "utt_id", list(ids))
    # 6 significant digits: softmax decisions do not move, and the file stays readable by eye
    write_table(folder / "logits.tsv", frame, float_format="%.6g")
    save_npy(folder / "embeddings.npy", np.asarray(embeddings, dtype=np.float32))
    write_text_atomic(folder / "ids.txt", "".join(u + "\n" for u in ids))
    if window_embeddings is not None:
        save_npy(folder / "window_embeddings.npy", np.asarray(window_embeddings, dtype=np.float32))
        save_npy(folder / "window_offsets.npy", np.asarray(window_offsets, dtype=np.int64))


STAGE = "score"  # the stage that writes these files: the one to re-run when one is damaged


def _load_npy(path: Path, what: str, ndim: int) -> np.ndarray:
    return load_npy(path, what, STAGE, ndim=ndim, finite=True)


class SystemScores:
    """One system's exported split: ids, labels, logits, embeddings (and windows when present)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "logits.tsv"
        if not path.is_file():
            fail(f"{self.folder}: no logits.tsv; run the score stage for this system")
        dtypes = {"utt_id": str, **{c: "float64" for c in SCORE_COLUMNS}}
        frame = read_table(path, LOGIT_COLUMNS, dtypes, what="score file", stage=STAGE)
        self.ids = frame["utt_id"].tolist()
        if not self.ids:
            fail(f"{path}: score file holds no utterances; re-run the score stage")
        try:
            self.labels = frame["label"].to_numpy(dtype=np.int64)
            self.logits = frame[list(SCORE_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, NUM_KNOWN)
        except (ValueError, TypeError) as err:
            fail(f"{path}: non-numeric label or score ({err}); re-run the score stage")
        if np.any((self.labels < NO_LABEL) | (self.labels >= UNKNOWN)):
            fail(f"{path}: labels must be −1 (unknown) or a known class 0–{UNKNOWN - 1}")
        bad = np.flatnonzero(~np.all(np.isfinite(self.logits), axis=1))
        if len(bad):
            fail(f"{path}: NaN or infinite scores for {len(bad)} utterance(s), first {self.ids[bad[0]]}; "
                 "re-run the score stage")
        if len(set(self.ids)) != len(self.ids):
            fail(f"{path}: duplicate utterance ids")
        self.embeddings = _load_npy(self.folder / "embeddings.npy", "embedding array", 2)
        if len(self.embeddings) != len(self.ids):
            fail(f"{self.folder}: {len(self.ids)} ids but {len(self.embeddings)} embeddings; re-run the score stage")
        wpath = self.folder / "window_embeddings.npy"
        # window embeddings are read in row blocks by whoever uses them (fusion streams them): at
        # real size and width they are larger than the memory a stage may take
        self.window_embeddings = (NpyRows(wpath, "window embedding array", STAGE, finite=True)
                                  if wpath.is_file() else None)
        self.window_offsets = (_load_npy(self.folder / "window_offsets.npy", "window offset array", 1)
                               if wpath.is_file() else None)
        if self.window_offsets is not None:
            offsets = self.window_offsets
            if (offsets.dtype.kind not in "iu" or len(offsets) != len(self.ids) + 1 or offsets[0] != 0
                    or np.any(np.diff(offsets) < 1) or offsets[-1] != len(self.window_embeddings)):
                fail(f"{self.folder}: window_offsets do not match {len(self.ids)} utterances and "
                     f"{len(self.window_embeddings)} window embeddings; re-run the score stage")
            if self.window_embeddings.shape[1] != self.embeddings.shape[1]:
                fail(f"{self.folder}: window embeddings have {self.window_embeddings.shape[1]} dimensions, "
                     f"utterance embeddings {self.embeddings.shape[1]}; re-run the score stage")
