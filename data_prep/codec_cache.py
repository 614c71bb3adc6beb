"""K codec variants of every utterance of a prepared split, computed once, read at training time.

A codec round trip costs 10–90 ms per 2 s (data_prep/codecs.py), more than a CPU training step;
a read from a memory-mapped cache costs microseconds. The prepare stage therefore codes each
training utterance K times (each variant a random codec of the list at a random bit rate of that
codec, distinct codecs while K ≤ the list's length), in `--nj` processes, and training draws among
the variants (data_prep/augment.py, `MusanAugmenter.source`).

`<split>/codec_variants/` holds (reader: core/prepared_split.py `CodecVariants`)
  audio.f32     float32, utterance-major: utterance i's K variants follow each other, each as long
                as the utterance, so variant k of i is at K·offsets[i] + k·len_i (offsets from the split)
  variants.tsv  utt_id, variant, codec, kbps
  .options.json K, the codec list, the seed and the digest of the split's own stamp: a second run
                with the same options is a no-op; re-prepared audio or other options rebuild it
Disk: K × 64 kB per second of audio (the split's cache is 64 kB/s).

A variant depends only on (seed, utterance id, k), not on the order of the utterances or on nj.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of, writing
from core.errors import KitError, fail
from core.prepared_split import (
    CODEC_FOLDER,
    CODEC_VARIANT_COLUMNS,
    PreparedSplit,
    codec_cache_options,
)
from core.stamps import stage_is_current, write_stamp
from core.tables import write_table

from .audio_io import TARGET_SR
from .codecs import CODEC_SPECS, codec_round_trip


def utterance_rng(seed: int, utt_id: str, *more: int) -> np.random.Generator:
    # crc32 of the id, not the row index: a variant must not change when other files are added
    return np.random.default_rng([int(seed), zlib.crc32(utt_id.encode()), *more])


def draw_codecs(utt_id: str, k: int, codecs: tuple[str, ...], seed: int) -> list[tuple[str, float]]:
    """The (codec, kbps) of each of the K variants of `utt_id`."""
    rng = utterance_rng(seed, utt_id)
    names = rng.choice(len(codecs), size=k, replace=k > len(codecs))
    out = []
    for j in names:
        rates = CODEC_SPECS[codecs[int(j)]][3]
        out.append((codecs[int(j)], float(rates[int(rng.integers(len(rates)))])))
    return out


def ordered_map(func, jobs: list, nj: int):
    """`func` over `jobs` in order: in this process for nj <= 1, else in nj forked processes (fork:
    workers inherit what the parent loaded instead of importing it again)."""
    if nj <= 1 or len(jobs) < 2:
        yield from map(func, jobs)
        return
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(nj) as pool:
        # imap keeps the order, so callers write their output sequentially
        yield from pool.imap(func, jobs, chunksize=4)


_worker: dict[str, PreparedSplit] = {}


def _code_one(args) -> tuple[int, list[np.ndarray], str]:
    i, utt, plan = args
    x = _worker["split"].audio(i)
    try:
        return i, [codec_round_trip(x, TARGET_SR, codec, kbps) for codec, kbps in plan], ""
    except KitError as err:
        return i, [], f"{utt}: {err}"


def build_codec_cache(split_dir: str | Path, k: int, codecs: tuple[str, ...], seed: int = 0, nj: int = 1) -> dict:
    """Write `<split_dir>/codec_variants/` unless current; returns {"skipped", "seconds_audio", ...}."""
    split_dir = Path(split_dir)
    unknown = sorted(set(codecs) - set(CODEC_SPECS))
    if unknown or not codecs:
        fail(f"codec cache: unknown codec(s) {unknown}; valid: {', '.join(CODEC_SPECS)}")
    options = codec_cache_options(split_dir, k, tuple(codecs), seed)
    target = split_dir / CODEC_FOLDER
    if stage_is_current(target, options):
        remove_staging_of(target)
        return {"skipped": True}
    split = PreparedSplit(split_dir)
    plans = {i: draw_codecs(split.ids[i], k, tuple(codecs), seed) for i in range(len(split))}
    rows = []
    _worker["split"] = split
    with atomic_dir(target) as stage:
        jobs = [(i, split.ids[i], plans[i]) for i in range(len(split))]
        with writing(target / "audio.f32"), open(stage / "audio.f32", "wb") as fh:
            for i, variants, error in tqdm(ordered_map(_code_one, jobs, nj), total=len(jobs),
                                           desc=f"codec variants {split_dir.name}", unit="utt", mininterval=1.0):
                if error:
                    fail(f"{split_dir / CODEC_FOLDER}: codec round trip failed for {error}")
                for j, v in enumerate(variants):
                    fh.write(np.ascontiguousarray(v, dtype=np.float32).tobytes())
                    rows.append((split.ids[i], j, plans[i][j][0], plans[i][j][1]))
        write_table(stage / "variants.tsv", pd.DataFrame(rows, columns=list(CODEC_VARIANT_COLUMNS)))
        write_stamp(stage, options)
    _worker.clear()
    return {"skipped": False, "seconds_audio": int(split.offsets[-1]) / TARGET_SR, "utterances": len(split)}
