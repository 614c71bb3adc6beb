"""A rehearsal corpus of ADD 2023 Track 3's size, re-cut from a demo corpus's own audio.

    python -m data_prep.rehearsal_corpus --source data/demo_large --out DIR
        [--train 22400 --dev 8400 --test 79490] [--seconds 1.0-2.0] [--seed 0] [--nj 2]

It exists to time the recipe at full size on cheap audio (issue 12): every clip is an excerpt of
one source utterance of the same split and class (train and dev from the source's train and dev
with their labels, test from its test audio and answer key, so the unknown class 7 is in test
only), its length uniform in `--seconds`, its sample rate the source's. Each split keeps the
source split's class shares. The layout is the demo corpus's, which `data_prep.prepare` reads:
`ADD2023_Track3_{train,dev,test}/wav/*.wav`, `label.txt` for train and dev, the test key in
`keys/test_label.txt`, and `meta.tsv` (the clip's source, start and length; the source's test
condition where the source has a meta.tsv, for the report's per-condition table).

The same seed, sizes and source give byte-identical files whatever `--nj`. The corpus is built in
`.<name>.building/` beside OUT, one file at a time under a temporary name, so an interrupted run
continues where it stopped; OUT appears only when complete. Memory holds the plan (a few bytes per
clip) and one source file per worker, never the corpus.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from core.atomic import (atomic_dir, atomic_path, ensure_dir, remove_staging_of, remove_stale_temporaries,
                         write_text_atomic)
from core.errors import ArgumentParser, fail, run_cli
from core.label_files import label_lines, read_label_file
from core.labels import ALL_LABELS, NUM_KNOWN
from core.stamps import STAMP_NAME, file_signature, stage_is_current, write_stamp
from core.utt_tables import read_conditions

from .audio_io import AudioReadError, read_audio, wav_truncation, write_wav
from .demo_corpus import SPLIT_DIR, SPLITS, assign_ids
from .prepare import discover

# ADD 2023 Track 3's split sizes (the challenge's train, dev and evaluation sets)
ADD23_T3_SIZES = {"train": 22400, "dev": 8400, "test": 79490}
CHUNK = 200  # clips per worker task: large enough that the pool's overhead vanishes
KIND = "rehearsal"  # in the stamp: OUT is replaced only when it is a rehearsal corpus


@dataclass(slots=True)
class Clip:
    split: str
    label: int
    source: int  # index into the split's source list
    start: int  # first sample, at the source's rate
    frames: int
    utt_id: str = ""


@dataclass
class Source:
    utt_id: str
    path: Path
    label: int
    frames: int
    sample_rate: int
    condition: str | None


def parse_seconds(text: str) -> tuple[float, float]:
    parts = text.split("-")
    try:
        lo, hi = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (float(text), float(text))
    except ValueError:
        fail(f"--seconds {text!r}: expected LO-HI in seconds, e.g. 1.0-2.0")
    if not 0 < lo <= hi:
        fail(f"--seconds {text!r}: need 0 < LO <= HI")
    return lo, hi


def read_sources(source_root: Path, key: Path) -> dict[str, list[Source]]:
    """Every labelled, readable source utterance of each split, in id order."""
    if not source_root.is_dir():
        fail(f"--source {source_root}: not a folder")
    found = discover(source_root)
    if "test" not in found:
        fail(f"--source {source_root}: no test folder (ADD2023_Track3_test/); the rehearsal test set is cut from it")
    meta = source_root / "meta.tsv"
    conditions = read_conditions(meta) if meta.is_file() else None
    out = {}
    for split in SPLITS:
        label_file = found[split].label_file if split != "test" else key
        # as prepare: train and dev teach the known classes only; the key may hold the unknown class
        labels = read_label_file(label_file, ALL_LABELS if split == "test" else range(NUM_KNOWN),
                                 "answer key" if split == "test" else "label file")
        sources = []
        for utt in sorted(labels):
            path = found[split].wav_dir / f"{utt}.wav"
            if not path.is_file():
                fail(f"{label_file}: {utt} has no file {path}")
            problem = wav_truncation(path)
            try:
                info = sf.info(str(path))
            except Exception as err:  # libsndfile raises several types for a file it cannot parse
                problem = problem or " ".join(str(err).split())
            if problem:
                fail(f"{path}: unreadable source audio: {problem}")
            sources.append(Source(utt, path, labels[utt], info.frames, info.samplerate,
                                  conditions.get(utt, "-") if conditions is not None else None))
        out[split] = sources
    return out


def class_counts(labels: list[int], total: int, split: str) -> dict[int, int]:
    """`total` shared among the classes in proportion to their source counts (largest remainder)."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if total < len(classes):
        fail(f"--{split} {total}: too small to hold each of the source's {len(classes)} {split} classes once")
    exact = counts / counts.sum() * total
    share = np.floor(exact).astype(int)
    # ties go to the lower class, so the result depends on the counts alone
    for i in sorted(range(len(classes)), key=lambda i: (-(exact[i] - share[i]), classes[i]))[:total - share.sum()]:
        share[i] += 1
    return {int(c): int(n) for c, n in zip(classes, share)}


def plan_split(split: str, sources: list[Source], total: int, seconds: tuple[float, float],
               seed: int) -> list[Clip]:
    # one generator per split: resizing one split leaves the others' files unchanged
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    clips: list[Clip] = []
    for label, n in class_counts([s.label for s in sources], total, split).items():
        members = sorted((i for i, s in enumerate(sources) if s.label == label),
                         key=lambda i: (sources[i].frames / sources[i].sample_rate, i))
        lengths = np.array([sources[i].frames / sources[i].sample_rate for i in members])
        if lengths[-1] < seconds[1]:
            fail(f"--seconds up to {seconds[1]:g}: the longest {split} source of class {label} lasts only "
                 f"{lengths[-1]:.2f} s; lower the upper bound")
        want = rng.uniform(seconds[0], seconds[1], size=n)
        # a clip comes from a source at least as long: no padding, no seams in the rehearsal audio
        first = np.searchsorted(lengths, want, side="left")
        picks = rng.integers(first, len(members))
        offsets = rng.random(n)
        for w, p, u in zip(want, picks, offsets):
            src = sources[members[p]]
            frames = min(src.frames, int(round(w * src.sample_rate)))
            clips.append(Clip(split, label, members[p], int(u * (src.frames - frames + 1)), frames))
    assign_ids(clips, rng)
    return clips


def _cut_chunk(job) -> int:
    wav_dir, items = job
    for utt_id, path, start, frames, sample_rate in items:
        try:
            x, sr = read_audio(path)
        except AudioReadError as err:
            fail(f"{path}: unreadable source audio: {err}")
        if sr != sample_rate or len(x) < start + frames:
            fail(f"{path}: changed while the rehearsal corpus was being built; start again")
        target = Path(wav_dir) / f"{utt_id}.wav"
        with atomic_path(target) as tmp:
            write_wav(tmp, x[start:start + frames], sr)
    return len(items)


def corpus_options(source_root: Path, key: Path, sizes: dict[str, int], seconds: tuple[float, float],
                   seed: int) -> dict:
    found = discover(source_root)
    return {"kind": KIND, "version": 1, "source": str(source_root.resolve()), "seed": seed, "sizes": sizes,
            "seconds": list(seconds), "key": file_signature(key),
            "labels": {s: file_signature(found[s].label_file) for s in ("train", "dev")}}


def _is_rehearsal(folder: Path) -> bool:
    try:
        return json.loads((folder / STAMP_NAME).read_text())["options"]["kind"] == KIND
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _meta_rows(clips: list[Clip], sources: list[Source], with_condition: bool) -> list[str]:
    rows = []
    for c in sorted(clips, key=lambda c: c.utt_id):
        s = sources[c.source]
        cond = f"{s.condition}\t" if with_condition else ""
        rows.append(f"{c.utt_id}\t{c.split}\t{c.label}\t{cond}{s.sample_rate}\t{c.frames / s.sample_rate:.4f}\t"
                    f"{s.utt_id}\t{c.start / s.sample_rate:.4f}\n")
    return rows


def build(source_root: Path, key: Path, out: Path, sizes: dict[str, int], seconds: tuple[float, float],
          seed: int, nj: int) -> dict:
    t0 = time.time()
    options = corpus_options(source_root, key, sizes, seconds, seed)
    sources = read_sources(source_root, key)
    plans = {s: plan_split(s, sources[s], sizes[s], seconds, seed) for s in SPLITS}
    building = out.parent / f".{out.name}.building"
    if building.exists() and not stage_is_current(building, options):
        shutil.rmtree(building)  # left by a run with other options: nothing in it can be reused
    ensure_dir(building)
    write_stamp(building, options)
    for split in SPLITS:
        remove_stale_temporaries(ensure_dir(building / SPLIT_DIR[split] / "wav"))
    jobs, todo = [], 0
    for split, clips in plans.items():
        wav_dir = building / SPLIT_DIR[split] / "wav"
        done = set(os.listdir(wav_dir))
        items = [(c.utt_id, sources[split][c.source].path, c.start, c.frames, sources[split][c.source].sample_rate)
                 for c in clips if f"{c.utt_id}.wav" not in done]
        jobs += [(str(wav_dir), items[i:i + CHUNK]) for i in range(0, len(items), CHUNK)]
        todo += len(items)
    total = sum(len(c) for c in plans.values())
    if todo < total:
        print(f"[rehearsal] resuming {building}: {total - todo} of {total} clips already written")
    # fork: the workers need only numpy and soundfile, already loaded here
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(max(1, nj)) as pool, tqdm(total=todo, desc="rehearsal corpus", unit="utt", mininterval=1.0) as bar:
        for done in pool.imap_unordered(_cut_chunk, jobs):
            bar.update(done)

    for split in ("train", "dev"):
        write_text_atomic(building / SPLIT_DIR[split] / "label.txt",
                          label_lines({c.utt_id: c.label for c in plans[split]}))
    write_text_atomic(building / "keys" / "test_label.txt", label_lines({c.utt_id: c.label for c in plans["test"]}))
    with_condition = sources["test"][0].condition is not None
    header = "utt_id\tsplit\tlabel\t" + ("condition\t" if with_condition else "") + \
        "sample_rate\tseconds\tsource\tsource_start_s\n"
    write_text_atomic(building / "meta.tsv", header + "".join(
        row for s in SPLITS for row in _meta_rows(plans[s], sources[s], with_condition)))
    with atomic_dir(out) as stage:
        for entry in building.iterdir():
            if entry.name != STAMP_NAME:
                os.replace(entry, stage / entry.name)
        write_stamp(stage, options)
    shutil.rmtree(building)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"utterances": {s: len(plans[s]) for s in SPLITS}, "bytes": size, "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="a demo corpus (data_prep.demo_corpus) to re-cut")
    ap.add_argument("--source_key", help="the source's test answer key (default: SOURCE/keys/test_label.txt)")
    ap.add_argument("--out", required=True, help="corpus folder (appears only when complete)")
    for split in SPLITS:
        ap.add_argument(f"--{split}", type=int, default=ADD23_T3_SIZES[split], help=f"{split} utterances")
    ap.add_argument("--seconds", default="1.0-2.0", help="clip length range LO-HI, uniform (default 1.0-2.0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    args = ap.parse_args()
    sizes = {s: getattr(args, s) for s in SPLITS}
    for split, n in sizes.items():
        if n < 1:
            fail(f"--{split} {n}: must be a positive number of utterances")
        # test ids leave gaps of a quarter (demo_corpus.assign_ids) and have eight digits
        if n > 79_000_000:
            fail(f"--{split} {n}: more than the eight-digit utterance ids can number")
    seconds = parse_seconds(args.seconds)
    source, out = Path(args.source), Path(args.out)
    key = Path(args.source_key) if args.source_key else source / "keys" / "test_label.txt"
    if not source.is_dir():
        fail(f"--source {source}: not a folder")
    if not key.is_file():
        fail(f"{key}: no test answer key in the source (give --source_key)")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        fail(f"--out {out}: must lie outside the source corpus {source}")
    if stage_is_current(out, corpus_options(source, key, sizes, seconds, args.seed)):
        print(f"rehearsal corpus {out} is current; nothing to do")
        remove_staging_of(out)
        return
    if out.exists() and not _is_rehearsal(out):
        fail(f"{out} exists and is not a rehearsal corpus built by this kit; refusing to overwrite it")
    info = build(source, key, out, sizes, seconds, args.seed, args.nj)
    print(f"rehearsal corpus written to {out}: {info['utterances']} utterances, {info['bytes'] / 1e9:.2f} GB, "
          f"{info['seconds']} s")


if __name__ == "__main__":
    run_cli(main)
