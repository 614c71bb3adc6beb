"""A dev split that looks like the test conditions: the clean dev, mixed and coded once, reproducibly.

Model selection (best epoch by dev F1) and the unknown threshold τ are chosen on dev. Selecting on
clean audio picks the epoch and τ that suit clean audio; seed 004 §3.1 mixes MUSAN into dev as
well as train. `python -m data_prep.prepare --augment_dev MUSAN` therefore prepares the clean dev as
`<out>/dev_clean/` and writes `<out>/dev/` as its augmented copy, so every later stage reads the
augmented dev without knowing. Per utterance, with probability `p_noisy` one of noise, music or
babble (equally likely) at an SNR uniform in `snr_db`, then with probability `p_codec` a round trip
through a random codec at a random bit rate — noise before codec, the order of the ADD and demo test
conditions. Everything is drawn from (seed, utterance id): the copy is the same on every run.

The bank must be the *training* bank (real MUSAN, or the demo's `musan_demo`), never the demo's
evaluation-only noise: dev would then carry the test's own noise and selection would be tuned to it.

`<out>/dev/` has the prepared-split format (core/prepared_split.py) with the clean dev's manifest and
offsets (every transform keeps the length) and adds `conditions.tsv` (utt_id, condition).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of, writing
from core.prepared_split import PreparedSplit
from core.stamps import STAMP_NAME, current_or_restamped, folder_listing, read_stamp, write_stamp
from core.tables import write_table

from .augment import CODECS, AugmentConfig, MusanAugmenter, musan_folders
from .codec_cache import ordered_map, utterance_rng

VERSION = 1


def bank_signature(root: Path) -> dict:
    """File count, bytes and newest mtime of the bank's audio: notices a changed bank without reading it."""
    files = [p for paths in musan_folders(root).values() for p in paths]
    return {"root": str(root.resolve()), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "newest_mtime_ns": max(p.stat().st_mtime_ns for p in files)}


_worker: dict[str, object] = {}


def _augment_one(args) -> tuple[int, np.ndarray, str]:
    i, utt, seed = args
    x = _worker["split"].audio(i)
    if len(x) == 0:
        return i, x, "clean"
    y, condition = _worker["aug"](x, utterance_rng(seed, utt, 1))
    return i, y, condition


def augment_split(clean_dir: str | Path, target: str | Path, musan: str | Path, snr_db=(5.0, 20.0),
                  p_noisy: float = 0.5, p_codec: float = 1 / 3, seed: int = 0, nj: int = 1) -> dict:
    """Write `target` as the augmented copy of the prepared split `clean_dir`, unless current."""
    clean_dir, target, musan = Path(clean_dir), Path(target), Path(musan)
    cfg = dict(musan=str(musan), p_noise=p_noisy / 3, p_music=p_noisy / 3, p_babble=p_noisy / 3,
               snr_db=tuple(float(v) for v in snr_db), p_codec=float(p_codec), codecs=CODECS)
    AugmentConfig(**cfg)  # refuses bad probabilities before any work
    clean = json.loads((clean_dir / STAMP_NAME).read_text())
    # the clean split named from the target's folder: a copy of the experiment stays current; its
    # stamp's options and the listing of its audio (a file replaced with its time kept changes the
    # listing only)
    options = {"clean": os.path.relpath(clean_dir.resolve(), target.parent.resolve()), "clean_stamp": clean["digest"],
               "clean_inputs": clean.get("inputs"), "bank": bank_signature(musan), "snr_db": list(cfg["snr_db"]),
               "p_noisy": float(p_noisy), "p_codec": float(p_codec), "codecs": list(CODECS), "seed": int(seed),
               "version": VERSION}
    # noise files are drawn by their place in a sorted list: a renamed one changes what is drawn
    inputs = folder_listing(musan)
    # an earlier kit named the clean split by absolute path (the stamp's own, where it names a split
    # of the same name: an experiment moved or copied since) and did not hold its listing; the stamp
    # itself is kept as it is, since training digests its bytes and rewriting them would retrain
    recorded = (read_stamp(target) or {}).get("clean")
    same = isinstance(recorded, str) and os.path.isabs(recorded) and Path(recorded).name == clean_dir.name
    earlier = {k: v for k, v in options.items() if k != "clean_inputs"}
    earlier["clean"] = recorded if same else str(clean_dir.resolve())
    if current_or_restamped(target, options, earlier, inputs, restamp=False):
        remove_staging_of(target)
        return {"skipped": True}
    split = PreparedSplit(clean_dir)
    conditions = [""] * len(split)
    with atomic_dir(target) as stage:
        for name in ("manifest.tsv", "offsets.npy", "report.txt"):
            shutil.copyfile(clean_dir / name, stage / name)
        # set up here, before the fork: the workers inherit the loaded bank lists and libraries
        _worker.update(split=split, aug=MusanAugmenter(AugmentConfig(**cfg), quiet=True))
        jobs = [(i, split.ids[i], seed) for i in range(len(split))]
        with writing(target / "audio.f32"), open(stage / "audio.f32", "wb") as fh:
            for i, y, condition in tqdm(ordered_map(_augment_one, jobs, nj), total=len(jobs),
                                        desc=f"augment {target.name}", unit="utt", mininterval=1.0):
                fh.write(np.ascontiguousarray(y, dtype=np.float32).tobytes())
                conditions[i] = condition
        _worker.clear()
        write_table(stage / "conditions.tsv", pd.DataFrame({"utt_id": split.ids, "condition": conditions}))
        write_stamp(stage, options, inputs=inputs)
    counts = pd.Series(conditions).value_counts().to_dict()
    return {"skipped": False, "utterances": len(split), "conditions": counts}
