"""Data preparation: manifests and a decoded-audio cache for each split.

    python -m data_prep.prepare --data_root DIR --out exp/data [--nj 2]
    python -m data_prep.prepare --split train --wav_dir W --label_file L --out exp/data

For every split it writes `<out>/<split>/` (format and reader: core/prepared_split.py):
  manifest.tsv, audio.f32, offsets.npy
  report.txt     unreadable, missing and unlabelled files, and files kept with little or no
                 signal ("weak": digital silence or dither, or under 0.1 s)
  .options.json  the resolved options; the split is skipped when they and the inputs are unchanged
  train/codec_variants/  K codec round trips of every training utterance (--codec_variants K,
                 default 3; 0: none), read by training's codec augmentation (data_prep/codec_cache.py)
With --augment_dev MUSAN the clean dev goes to `<out>/dev_clean/` and `<out>/dev/` is its copy
mixed with that bank and coded, as test audio is (data_prep/dev_augment.py): model selection and
the unknown threshold are then chosen on a dev that looks like test.

Train/dev: an unreadable file is left out of the manifest and listed in the report and on the
console; a label line without a file is an error listed the same way. Test: every file in the
folder is in the manifest; an unreadable one is flagged (status, num_samples 0) so the submission
still gives it a line.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of, write_text_atomic
from core.errors import ArgumentParser, fail, run_cli
from core.label_files import key_labels_exactly, read_label_file, split_wavs, utt_id_of
from core.labels import ALL_LABELS, NUM_KNOWN
from core.prepared_split import PreparedSplitWriter
from core.stamps import entry_stat, file_signature, listing_digest, stage_is_current, write_stamp

from .audio_io import AudioReadError, LoadOptions, read_for_model
from .augment import CODECS, AugmentConfig, musan_folders
from .codec_cache import build_codec_cache
from .dev_augment import augment_split

SPLITS = ("train", "dev", "test")
# audio a split folder may hold besides its .wav files: reported as not read
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".amr"}
SPLIT_ALIASES = {"train": ("train",), "dev": ("dev", "develop", "development"), "test": ("test", "eval")}
LABEL_NAMES = ("label.txt", "labels.txt", "{s}_label.txt", "{s}_labels.txt", "{s}.txt")


@dataclasses.dataclass
class SplitSource:
    name: str
    wav_dir: Path
    label_file: Path | None


def _find_dir(root: Path, split: str) -> Path | None:
    entries = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for alias in SPLIT_ALIASES[split]:
        for name in (f"add2023_track3_{alias}", f"add2023_t3_{alias}", f"track3_{alias}", alias):
            if name in entries:
                return entries[name]
    return None


def _find_label(root: Path, split_dir: Path | None, split: str) -> Path | None:
    """The split's label file; without `split_dir`, only those beside the split folders."""
    candidates = []
    for alias in SPLIT_ALIASES[split]:
        for pattern in LABEL_NAMES:
            name = pattern.format(s=alias)
            candidates += [split_dir / name] if split_dir is not None else []
            candidates += [root / name, root / "label" / name, root / "labels" / name]
    candidates = [c for c in candidates if c.name not in ("label.txt", "labels.txt") or c.parent == split_dir]
    return next((c for c in candidates if c.is_file()), None)


def discover(data_root: str | Path) -> dict[str, SplitSource]:
    """Find each split's wav folder and label file in the common ADD 2023 Track 3 layouts.

    `ADD2023_Track3_train/wav` + `ADD2023_Track3_train/label.txt`, `train/wav` + `train/label.txt`,
    wav files directly under `train/`, or label files named `train_label.txt` beside the folders.
    """
    root = Path(data_root)
    if not root.is_dir():
        fail(f"--data_root {root}: not a folder")
    found = {}
    for split in SPLITS:
        d = _find_dir(root, split)
        if d is None:
            if split == "test":
                orphan = _find_label(root, None, split)
                if orphan is not None:
                    fail(f"{orphan}: test label file without test audio (no test folder in {root}: looked for "
                         "ADD2023_Track3_test/, test/, eval/); add the folder or move the label file away")
                print(f"[prepare] {root}: no test folder (looked for ADD2023_Track3_test/, test/, eval/); "
                      "train and dev only")
                continue
            fail(f"{root}: no {split} folder (looked for ADD2023_Track3_{split}/, {split}/)")
        wav_dir = d / "wav" if (d / "wav").is_dir() else d
        label = _find_label(root, d, split)
        if label is None and split != "test":
            fail(f"{d}: no label file for {split} (looked for label.txt, {split}_label.txt)")
        found[split] = SplitSource(split, wav_dir, label)
    return found


def _load_one(args):
    path, opts = args
    if not path.is_file():
        return path, None, 0, "no such file", ""
    try:
        x, sr, warning = read_for_model(path, opts)
        return path, x, sr, "", warning
    except AudioReadError as err:
        return path, None, 0, _one_line(str(err)), ""
    except Exception as err:  # any decoder failure must be reported for this file, not kill the run
        return path, None, 0, _one_line(f"{type(err).__name__}: {err}"), ""


def read_files(paths: list[Path], opts: LoadOptions, nj: int
               ) -> Iterator[tuple[Path, np.ndarray | None, int, str, str]]:
    """Every file read for the model, in the given order, on `nj` processes (1: this one): its
    path, audio (None when unreadable), original rate, why it is unreadable and its evidence
    warning ("" when none)."""
    jobs = [(p, opts) for p in paths]
    if nj <= 1:
        yield from map(_load_one, jobs)
        return
    # fork: workers inherit the loaded modules instead of re-importing torch/scipy per process
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(nj) as pool:
        # imap keeps the order, so a cache is written sequentially and rows follow the inputs
        yield from pool.imap(_load_one, jobs, chunksize=8)


def _one_line(reason: str) -> str:
    # reasons go into a tab-separated cell and a one-line console message
    return " ".join(reason.split()) or "unknown decoder error"


def utterance_ids(wavs: list[Path]) -> dict[str, Path]:
    """Each file's utterance id. Two names that differ only in case (`A.wav`, `A.WAV`, `a.wav`) are
    refused: they would collapse to one id, or be one file on a case-insensitive file system. Names
    with white space are refused: label files and submissions separate id and label by it."""
    by_id: dict[str, Path] = {}
    folded: dict[str, Path] = {}
    for p in wavs:
        utt = utt_id_of(p.name)
        if any(c.isspace() for c in utt):
            fail(f"{p}: file name contains white space; ids in label files and submissions cannot (rename it)")
        if utt.casefold() in folded:
            fail(f"{folded[utt.casefold()]} and {p}: file names differ only in case, so they name one utterance; "
                 "remove or rename one")
        folded[utt.casefold()] = p
        by_id[utt] = p
    return by_id


def _stored_duration(path: Path) -> float:
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:
        return 0.0


def check_test_key(key_path: str | Path, wav_dir: str | Path) -> None:
    """An answer key for a test folder labels exactly its .wav files (as the report will demand):
    checked before hours of scoring, one line naming the key and an id otherwise."""
    key = read_label_file(key_path, ALL_LABELS, "answer key")
    key_labels_exactly(key, key_path, utterance_ids(split_wavs(Path(wav_dir))), ".wav file(s)",
                       f"the test folder {wav_dir}")


def prepare_split(src: SplitSource, out: Path, opts: LoadOptions, nj: int, folder: str | None = None) -> dict:
    """Decode one split into `out/<folder or split>`; returns counts. Skips when inputs and options
    are unchanged."""
    wavs = split_wavs(src.wav_dir)
    # the challenge's splits are flat folders of .wav (the submission lists their ids): other audio
    # is not read, and said so, never passed over in silence
    read = set(wavs)
    others = sorted(p for p in src.wav_dir.rglob("*")
                    if p.suffix.lower() in AUDIO_SUFFIXES and p not in read and p.is_file())
    not_read = (f"{len(others)} audio file(s) not read (only the .wav files directly in {src.wav_dir} are), "
                f"e.g. {others[0]}") if others else ""
    if not wavs:
        fail(f"{src.wav_dir}: no .wav files for split {src.name}" + (f"; {not_read}" if others else ""))
    if others:
        print(f"[prepare] {src.name}: {not_read}", file=sys.stderr)
    if src.label_file is not None and not src.label_file.is_file():
        problem = "is a folder, not a file" if src.label_file.is_dir() else "does not exist"
        fail(f"{src.label_file}: label file {problem}")
    # file count and newest mtime notice added, removed or replaced audio without hashing a 100 GB corpus
    options = {"split": src.name, "wav_dir": str(src.wav_dir.resolve()), "n_files": len(wavs),
               "newest_mtime_ns": max(entry_stat(p).st_mtime_ns for p in wavs),
               "label_file": file_signature(src.label_file) if src.label_file else None,
               "load": dataclasses.asdict(opts), "version": 1}
    target = out / (folder or src.name)
    # the count and newest time above miss a renamed file and a replacement that keeps its time
    inputs = listing_digest(wavs, src.wav_dir)
    if stage_is_current(target, options, inputs):
        remove_staging_of(target)
        return {"split": src.name, "skipped": True}

    # train/dev teach and select the known classes: 7 (unknown) has no network output to learn
    valid = ALL_LABELS if src.name == "test" else range(NUM_KNOWN)
    labels = read_label_file(src.label_file, valid) if src.label_file else {}
    by_id = utterance_ids(wavs)
    problems: list[str] = []
    if src.label_file:
        missing = sorted(set(labels) - set(by_id))
        problems += [f"missing\t{u}\tlisted in {src.label_file} but no file in {src.wav_dir}" for u in missing]
        unlabelled = sorted(set(by_id) - set(labels))
        problems += [f"unlabelled\t{u}\tfile in {src.wav_dir} has no line in {src.label_file}" for u in unlabelled]
        # test keeps every file of its folder: the submission must give each one a line
        if src.name != "test":
            wavs = [by_id[u] for u in sorted(set(labels) & set(by_id))]
            if not wavs:
                fail(f"{src.label_file}: none of its {len(labels)} ids has a file in {src.wav_dir} "
                     f"(e.g. {min(labels)}); wrong label file or folder?")

    n_ok = 0
    # prepared and kept, but with little or nothing to attribute (audio_io.evidence_warning)
    weak: list[str] = []
    with atomic_dir(target) as stage:
        with PreparedSplitWriter(stage, target) as split:
            for path, x, sr, error, warning in tqdm(read_files(wavs, opts, nj), total=len(wavs),
                                                    desc=f"prepare {src.name}", unit="utt", mininterval=1.0):
                utt = utt_id_of(path.name)
                label = labels.get(utt, -1)
                if x is None:
                    problems.append(f"unreadable\t{utt}\t{path}: {error}")
                    if src.name == "test":
                        split.add_unreadable(utt, path, label, error)
                    continue
                if warning:
                    weak.append(f"weak\t{utt}\t{path}: {warning}")
                split.add(utt, path, label, sr, round(_stored_duration(path), 4), x)
                n_ok += 1
            if not n_ok:
                fail(f"{src.wav_dir}: none of the {len(wavs)} files of split {src.name} could be read")
        write_text_atomic(stage / "report.txt", f"# split {src.name}: {n_ok} prepared ({len(weak)} with little or no "
                          f"signal), {len(problems)} problem(s)\n" + "".join(p + "\n" for p in problems + weak))
        write_stamp(stage, options, inputs=inputs)
    for p in problems + weak:
        kind, utt, detail = p.split("\t", 2)
        print(f"[prepare {src.name}] {kind}: {detail} (utterance {utt})")
    return {"split": src.name, "skipped": False, "prepared": n_ok, "problems": len(problems), "weak": len(weak)}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_root", help="folder holding the ADD 2023 Track 3 splits (layout found automatically)")
    ap.add_argument("--split", choices=SPLITS, help="prepare one split from --wav_dir/--label_file")
    ap.add_argument("--wav_dir")
    ap.add_argument("--label_file")
    ap.add_argument("--out", required=True, help="prepared data folder, e.g. exp/data")
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--normalise", choices=("rms", "peak", "none"), default="rms")
    ap.add_argument("--target_dbfs", type=float, default=-26.0)
    ap.add_argument("--no_trim", action="store_true", help="keep leading/trailing silence")
    ap.add_argument("--trim_top_db", type=float, default=60.0)
    ap.add_argument("--codec_variants", type=int, default=3, metavar="K",
                    help="codec round trips cached per training utterance (0: none); K x 64 kB per second of audio")
    ap.add_argument("--codecs", default=",".join(CODECS), help="codecs the variants draw from (comma-separated)")
    ap.add_argument("--augment_dev", metavar="MUSAN",
                    help="training noise bank (never the evaluation bank): write dev as an augmented copy, "
                         "the clean dev as dev_clean")
    ap.add_argument("--dev_snr_db", type=float, nargs=2, default=(5.0, 20.0), metavar=("LO", "HI"))
    ap.add_argument("--dev_p_noisy", type=float, default=0.5, help="share of dev mixed with noise/music/babble")
    ap.add_argument("--dev_p_codec", type=float, default=1 / 3, help="share of dev sent through a codec")
    ap.add_argument("--seed", type=int, default=0, help="seed of the codec variants and the augmented dev")
    args = ap.parse_args()
    codecs = tuple(c.strip() for c in args.codecs.split(",") if c.strip())
    if args.codec_variants < 0:
        fail(f"--codec_variants {args.codec_variants}: must be 0 or more")
    AugmentConfig(codecs=codecs)  # one-line error for an unknown codec before any work
    opts = LoadOptions(normalise=args.normalise, target_dbfs=args.target_dbfs, trim_silence=not args.no_trim,
                       trim_top_db=args.trim_top_db)
    if args.data_root:
        sources = list(discover(args.data_root).values())
    elif args.split and args.wav_dir:
        sources = [SplitSource(args.split, Path(args.wav_dir), Path(args.label_file) if args.label_file else None)]
        if not sources[0].wav_dir.is_dir():
            fail(f"--wav_dir {sources[0].wav_dir}: not a folder")
        if args.split != "test" and not args.label_file:
            # training and model selection need a class per utterance; only test may come without one
            fail(f"--split {args.split} --wav_dir {args.wav_dir}: needs --label_file (only test may go without)")
    else:
        fail("give --data_root, or --split with --wav_dir (and --label_file)")
    if args.augment_dev:
        musan_folders(args.augment_dev)  # a wrong bank fails before hours of decoding
    out = Path(args.out)
    for src in sources:
        labels = (f"labels {src.label_file}" if src.label_file else
                  "no labels read" + (" (the answer key is read by the evaluate stage)" if src.name == "test" else ""))
        print(f"[prepare] {src.name}: wav {src.wav_dir}, {labels}")
        folder = "dev_clean" if src.name == "dev" and args.augment_dev else src.name
        info = prepare_split(src, out, opts, args.nj, folder)
        if info["skipped"]:
            print(f"[prepare] {folder}: up to date, skipped")
        else:
            print(f"[prepare] {folder}: {info['prepared']} utterances, {info['problems']} problem(s), "
                  f"{info['weak']} with little or no signal; "
                  f"report {out / folder / 'report.txt'}")
        if src.name == "train" and args.codec_variants:
            t0 = time.time()
            info = build_codec_cache(out / "train", args.codec_variants, codecs, args.seed, args.nj)
            print(f"[prepare] train: {args.codec_variants} codec variants "
                  + ("up to date, skipped" if info["skipped"] else
                     f"of {info['seconds_audio'] / 3600:.2f} h of audio in {time.time() - t0:.0f} s")
                  + f" ({out / 'train' / 'codec_variants'})")
        if folder == "dev_clean":
            t0 = time.time()
            info = augment_split(out / "dev_clean", out / "dev", args.augment_dev, args.dev_snr_db,
                                 args.dev_p_noisy, args.dev_p_codec, args.seed, args.nj)
            print("[prepare] dev: augmented copy of dev_clean " + ("up to date, skipped" if info["skipped"] else
                  f"written in {time.time() - t0:.0f} s, conditions {info['conditions']}"))


if __name__ == "__main__":
    run_cli(main)
