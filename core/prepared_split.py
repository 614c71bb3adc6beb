"""A prepared split (stage 2's output, read by every later stage).

`<split>/` holds
  manifest.tsv   utt_id, path, label (−1 when unknown), orig_sr, duration_s (as stored),
                 num_samples (16 kHz, after preparation), status (ok | unreadable: reason)
  audio.f32      every prepared utterance, float32 16 kHz mono, concatenated (read with np.memmap)
  offsets.npy    int64 (n + 1): utterance i is audio.f32[offsets[i]:offsets[i + 1]]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import save_npy, writing
from core.errors import fail
from core.stage_files import load_npy
from core.stamps import STAMP_NAME, stage_is_current
from core.tables import read_table, write_table

MANIFEST_COLUMNS = ("utt_id", "path", "label", "orig_sr", "duration_s", "num_samples", "status")
STAGE = "prepare"  # the stage that writes a prepared split: the one to re-run when a file is damaged
MANIFEST_DTYPES = {"utt_id": str, "path": str, "label": "int64", "orig_sr": "int64", "duration_s": "float64",
                   "num_samples": "int64", "status": str}


def write_manifest(path: Path, rows: list[tuple]) -> None:
    write_table(path, pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_DTYPES))


class PreparedSplitWriter:
    """Writes a prepared split into `folder` (an existing folder, e.g. atomic_dir's staging one),
    one utterance at a time: the audio is appended to audio.f32 as it comes (memory holds one
    utterance), offsets.npy and manifest.tsv are written when the block ends without an error.
    `target`: the path that error messages name (the split's final folder; `folder` by default).

        with PreparedSplitWriter(stage, target) as split:
            split.add(utt_id, path, label, orig_sr, duration_s, audio)
            split.add_unreadable(utt_id, path, label, reason)
    """

    def __init__(self, folder: Path, target: Path | None = None):
        self.folder, self.target = Path(folder), Path(target or folder)
        self._rows: list[tuple] = []
        self._offsets = [0]

    def __enter__(self) -> "PreparedSplitWriter":
        with writing(self.target / "audio.f32"):
            self._audio = open(self.folder / "audio.f32", "wb")
        return self

    def add(self, utt_id: str, path, label: int, orig_sr: int, duration_s: float, audio: np.ndarray) -> None:
        with writing(self.target / "audio.f32"):
            self._audio.write(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        self._offsets.append(self._offsets[-1] + len(audio))
        self._rows.append((utt_id, str(path), int(label), int(orig_sr), float(duration_s), len(audio), "ok"))

    def add_unreadable(self, utt_id: str, path, label: int, reason: str) -> None:
        """A row without audio (num_samples 0), so that the utterance keeps its place and its line."""
        self._offsets.append(self._offsets[-1])
        self._rows.append((utt_id, str(path), int(label), 0, 0.0, 0, f"unreadable: {reason}"))

    def __exit__(self, kind, value, traceback) -> None:
        with writing(self.target / "audio.f32"):
            self._audio.close()
        if kind is None:
            save_npy(self.folder / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))
            write_manifest(self.folder / "manifest.tsv", self._rows)


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


CODEC_FOLDER = "codec_variants"
CODEC_VARIANT_COLUMNS = ("utt_id", "variant", "codec", "kbps")
CODEC_CACHE_VERSION = 1


def codec_cache_options(split_dir: Path, k: int, codecs: tuple[str, ...], seed: int) -> dict:
    """The stamp of a split's codec cache: its options and the split's own stamp digest, so that
    re-prepared audio makes the cache stale."""
    stamp = Path(split_dir) / STAMP_NAME
    try:
        split_stamp = json.loads(stamp.read_text()).get("digest") if stamp.is_file() else None
    except (OSError, ValueError, AttributeError):
        split_stamp = None
    return {"k": int(k), "codecs": list(codecs), "seed": int(seed), "split_stamp": split_stamp,
            "version": CODEC_CACHE_VERSION}


class CodecVariants:
    """Read access to `<split>/codec_variants/` (memory-mapped); `audio(i, k)`, `codec_of(i, k)`.

    K codec round trips of every utterance of the split (written by data_prep/codec_cache.py):
      audio.f32     float32, utterance-major: variant k of utterance i starts at K·offsets[i] + k·len_i
      variants.tsv  utt_id, variant, codec, kbps
      .options.json K, codecs, seed and the split's own stamp digest (`codec_cache_options`)
    """

    def __init__(self, split: PreparedSplit):
        folder = split.folder / CODEC_FOLDER
        try:
            stamp = json.loads((folder / STAMP_NAME).read_text())["options"]
            self.k, self.codecs, self.seed = int(stamp["k"]), tuple(stamp["codecs"]), int(stamp["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            fail(f"{folder / STAMP_NAME}: not a finished codec cache ({type(err).__name__}); re-run the {STAGE} stage")
        self.offsets = split.offsets
        table = read_table(folder / "variants.tsv", CODEC_VARIANT_COLUMNS,
                           {"utt_id": str, "variant": "int64", "codec": str, "kbps": "float64"},
                           what="codec variant table", stage=STAGE)
        if len(table) != self.k * len(split) or table["utt_id"].tolist()[:: self.k] != split.ids:
            fail(f"{folder / 'variants.tsv'}: does not list {self.k} variants of each utterance of {split.folder}; "
                 f"re-run the {STAGE} stage")
        self.names = table["codec"].tolist()
        size = self.k * int(self.offsets[-1])
        audio = folder / "audio.f32"
        have = audio.stat().st_size if audio.is_file() else None
        if have != 4 * size:
            fail(f"{audio}: " + ("missing" if have is None else f"{have} bytes, expected {4 * size}")
                 + f"; re-run the {STAGE} stage")
        self._audio = np.memmap(folder / "audio.f32", dtype=np.float32, mode="r", shape=(size,)) \
            if size else np.zeros(0, np.float32)

    @staticmethod
    def open_matching(split: PreparedSplit, k: int, codecs: tuple[str, ...]) -> CodecVariants | None:
        """The split's cache when it is current (built from this very audio) and was made with
        these K and codecs; None otherwise."""
        folder = split.folder / CODEC_FOLDER
        if not (folder / STAMP_NAME).is_file():
            return None
        try:
            saved = json.loads((folder / STAMP_NAME).read_text())["options"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not stage_is_current(folder, codec_cache_options(split.folder, k, tuple(codecs), saved.get("seed", 0))):
            return None
        return CodecVariants(split)

    def audio(self, i: int, k: int) -> np.ndarray:
        n = int(self.offsets[i + 1] - self.offsets[i])
        lo = self.k * int(self.offsets[i]) + k * n
        return np.array(self._audio[lo:lo + n])

    def codec_of(self, i: int, k: int) -> str:
        return self.names[self.k * i + k]
