"""A prepared split (stage 2's output, read by every later stage).

`<split>/` holds
  manifest.tsv   utt_id, path, label (−1 when unknown), orig_sr, duration_s (as stored),
                 num_samples (16 kHz, after preparation), status (ok | unreadable: reason)
  audio.f32      every prepared utterance, float32 16 kHz mono, concatenated (read with np.memmap)
  offsets.npy    int64 (n + 1): utterance i is audio.f32[offsets[i]:offsets[i + 1]]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import fail
from core.stage_files import load_npy
from core.tables import read_table, write_table

MANIFEST_COLUMNS = ("utt_id", "path", "label", "orig_sr", "duration_s", "num_samples", "status")
STAGE = "prepare"  # the stage that writes a prepared split: the one to re-run when a file is damaged
MANIFEST_DTYPES = {"utt_id": str, "path": str, "label": "int64", "orig_sr": "int64", "duration_s": "float64",
                   "num_samples": "int64", "status": str}


def write_manifest(path: Path, rows: list[tuple]) -> None:
    write_table(path, pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_DTYPES))


class PreparedSplit:
    """Read access to a prepared split: ids, labels and the cached audio (memory-mapped)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.tsv"
        if not manifest.is_file():
            fail(f"{self.folder}: not a prepared split (no manifest.tsv); run the data-preparation stage")
        frame = read_table(manifest, MANIFEST_COLUMNS, MANIFEST_DTYPES, what="manifest", stage=STAGE)
        self.ids = frame["utt_id"].tolist()
        self.paths = frame["path"].tolist()
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        status = frame["status"]
        self.readable = (status == "ok").to_numpy()
        bad_status = ~(self.readable | status.str.startswith("unreadable").to_numpy())
        if bad_status.any():
            i = int(np.flatnonzero(bad_status)[0])
            fail(f"{manifest}: status {status.iloc[i]!r} of {self.ids[i]} is neither ok nor unreadable; "
                 f"re-run the {STAGE} stage")
        self.offsets = load_npy(self.folder / "offsets.npy", "offset array", STAGE, ndim=1)
        if self.offsets.dtype.kind not in "iu" or len(self.offsets) != len(self.ids) + 1 or self.offsets[0] != 0 \
                or np.any(np.diff(self.offsets) != frame["num_samples"].to_numpy()):
            fail(f"{self.folder / 'offsets.npy'}: {len(self.offsets)} entries do not match the {len(self.ids)} "
                 f"utterances of {manifest}; re-run the {STAGE} stage")
        size = int(self.offsets[-1])
        audio = self.folder / "audio.f32"
        have = audio.stat().st_size if audio.is_file() else None
        if size and have != 4 * size:
            fail(f"{audio}: " + ("missing" if have is None else f"{have} bytes, expected {4 * size}")
                 + f" (the audio cache does not match offsets.npy); re-run the {STAGE} stage")
        self._audio = np.memmap(audio, dtype=np.float32, mode="r", shape=(size,)) \
            if size else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def audio(self, i: int) -> np.ndarray:
        return np.array(self._audio[self.offsets[i]:self.offsets[i + 1]])  # a writable copy

    def excerpt(self, i: int, start: int, length: int) -> np.ndarray:
        """Samples start..start + length of utterance i (shorter at its end), read from the cache alone."""
        lo = int(self.offsets[i]) + start
        return np.array(self._audio[lo:min(lo + length, int(self.offsets[i + 1]))])

    def num_samples(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])
