"""Build the embedded demo corpus: a small, Track-3-shaped corpus made offline from Debian/PyPI packages.

Layout, classes and conditions follow `shared/spec/demo_corpus.md`:
  0 real speech (Asterisk G.722 prompts + pocketsphinx test recordings)
  1 espeak-ng formant synthesis      2 flite clustergen (slt/awb/rms)
  3 festival diphone (kal/ked)       4 festival HTS (slt)
  5 Piper VITS (joe, bundled model)  6 WORLD copy-synthesis of real speech not used in class 0
  7 unknown, test only: mel Griffin-Lim resynthesis and an LPC vocoder
Train/dev are clean; about half the test set is mixed with an evaluation-only noise bank at 5–20 dB
and about a third goes through a codec round trip. A MUSAN-layout bank for training augmentation
is built from different sources.

    python -m data_prep.demo_corpus --out data/demo [--scale 1.0] [--test_scale 4.2] [--seed 0] [--nj 2]

The same seed gives byte-identical files: every task draws from its own seeded generator, and the
Piper tasks run in one process, in a fixed order, with onnxruntime's seed set before loading.

This module is the layout and the driver: it plans the tasks (class counts, splits, voices, test
conditions, utterance ids), renders them in worker processes and writes the label files, key and
`meta.tsv`. The pieces it draws on live beside it:
  demo_text.py         the sentences and their disjoint train/dev/test pools
  demo_synth.py        real-speech sources and one synthesis backend per class
  demo_noise_banks.py  the evaluation-only noise bank and the MUSAN-layout training bank
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of, scratch_dir
from core.errors import ArgumentParser, KitError, fail, run_cli
from core.stamps import stage_is_current, write_stamp

from .audio_io import resample, rms_dbfs, trim_edge_silence, write_wav
from .augment import codec_roundtrip, have_tools, mix_at_snr
from .demo_noise_banks import build_eval_bank, build_musan_bank, eval_noise
from .demo_synth import (
    ESPEAK_ACCENTS,
    FESTIVAL_DIPHONES,
    FLITE_VOICES,
    GENERATORS,
    MAX_SECONDS,
    SR,
    PiperEngine,
    crop_seconds,
    espeak_variants,
    festival_waves,
    real_duration,
    real_speech_files,
)
from .demo_text import disjoint_text_pools

MIN_SOURCE_SECONDS = 1.0
SPLITS = ("train", "dev", "test")
SPLIT_FRACTION = {"train": 0.6, "dev": 0.2, "test": 0.2}
PER_KNOWN_CLASS = 100
PER_UNKNOWN_GENERATOR = 50
ID_PREFIX = {"train": "ADD2023_T3_T_", "dev": "ADD2023_T3_D_", "test": "ADD2023_T3_E_"}
SPLIT_DIR = {s: f"ADD2023_Track3_{s}" for s in SPLITS}

KNOWN_GENERATORS = {0: "real", 1: "espeak", 2: "flite", 3: "festival_diphone", 4: "festival_hts",
                    5: "piper", 6: "world"}
UNKNOWN_GENERATORS = ("griffin_lim", "lpc_vocoder")

DEBIAN_PACKAGES = ("ffmpeg", "sox", "libsox-fmt-all", "espeak-ng", "flite", "festival",
                   "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "timidity", "freepats",
                   "asterisk-core-sounds-en-g722", "pocketsphinx-testdata", "asterisk-moh-opsound-g722",
                   "sound-theme-freedesktop", "sound-icons", "klettres-data")
# festival texts per festival process (a batch is one pool job)
FESTIVAL_BATCH = 10
TOOLS = ("ffmpeg", "sox", "espeak-ng", "flite", "text2wave", "timidity")


# --------------------------------------------------------------------------- tasks

@dataclass
class Task:
    index: int
    split: str
    label: int
    generator: str
    seed: int
    voice: str = "-"
    text: str = ""
    text_id: str = "-"
    source: str = "-"
    params: dict = field(default_factory=dict)
    utt_id: str = ""
    out_sr: int = SR
    condition: str = "clean"


def split_counts(total: int) -> dict[str, int]:
    n_train = int(round(total * SPLIT_FRACTION["train"]))
    n_dev = int(round(total * SPLIT_FRACTION["dev"]))
    return {"train": n_train, "dev": n_dev, "test": total - n_train - n_dev}


def known_task_fields(gen: str, draw: np.random.Generator, text_of, source_of, variants: list[str]) -> dict:
    """A known-class task's voice, text, source and parameters, drawn from `draw`: `text_of()` gives
    the next (text, text id), `source_of(gen)` the next real recording for classes 0 and 6."""
    if gen in ("real", "world"):
        params = {"f0_scale": float(draw.uniform(0.92, 1.08))} if gen == "world" else {}
        return {"source": source_of(gen), "params": params}
    text, text_id = text_of()
    if gen == "espeak":
        voice = f"{draw.choice(ESPEAK_ACCENTS)}+{draw.choice(variants)}"
        params = {"speed": int(draw.integers(140, 186)), "pitch": int(draw.integers(30, 71))}
    elif gen == "flite":
        voice, params = str(draw.choice(FLITE_VOICES)), {"stretch": float(draw.uniform(0.9, 1.15))}
    elif gen == "festival_diphone":
        voice, params = str(draw.choice(FESTIVAL_DIPHONES)), {}
    elif gen == "festival_hts":
        voice, params = "cmu_us_slt_arctic_hts", {}
    else:  # piper
        voice = "en_US-joe-medium"
        params = {"length_scale": float(draw.uniform(0.85, 1.2)),
                  "noise_scale": float(draw.uniform(0.4, 0.9)), "noise_w": float(draw.uniform(0.5, 1.0))}
    return {"voice": voice, "text": text, "text_id": text_id, "params": params}


def plan_tasks(scale: float, seed: int, test_scale: float | None = None) -> tuple[list[Task], list[str]]:
    test_scale = scale if test_scale is None else test_scale
    rng = np.random.default_rng(seed)
    # One generator for the whole plan, in a fixed order of draws: the text permutation comes
    # first, so disjoint_text_pools must stay the first call that draws from it.
    sentences, text_pool = disjoint_text_pools(rng)

    # Short prompts ("yes", "one") leave too little after trimming; keep recordings of >= 1 s.
    real = [f for f in real_speech_files() if real_duration(f) >= MIN_SOURCE_SECONDS]
    if len(real) < 40:
        fail("too few real recordings: install asterisk-core-sounds-en-g722 and pocketsphinx-testdata")
    real = [real[i] for i in rng.permutation(len(real))]
    n_known = max(5, int(round(PER_KNOWN_CLASS * scale)))
    n_unknown = max(2, int(round(PER_UNKNOWN_GENERATOR * scale)))
    # Disjoint real-speech pools: class 0, WORLD sources, unknown sources, evaluation babble.
    need = {"real": n_known, "world": n_known, "unknown": 2 * n_unknown, "babble": 24}
    total_need = sum(need.values())
    pools, start = {}, 0
    for name, k in need.items():
        size = max(1, int(len(real) * k / total_need)) if total_need > len(real) else k
        pools[name] = real[start:start + size]
        start += size

    variants = espeak_variants()
    tasks: list[Task] = []

    def add(split, label, generator, draw, **kw):
        tasks.append(Task(index=len(tasks), split=split, label=label, generator=generator,
                          seed=int(draw.integers(2 ** 31)), **kw))

    text_cursor = {s: 0 for s in SPLITS}

    def next_text(split):
        pool = text_pool[split]
        i = pool[text_cursor[split] % len(pool)]
        text_cursor[split] += 1
        return sentences[i], f"s{i:05d}"

    source_cursor = {k: 0 for k in pools}

    def next_source(pool):
        files = pools[pool]
        f = files[source_cursor[pool] % len(files)]
        source_cursor[pool] += 1
        return f

    def add_known(split, label, gen, draw, source_of):
        add(split, label, gen, draw, **known_task_fields(gen, draw, lambda: next_text(split), source_of, variants))

    for label, gen in KNOWN_GENERATORS.items():
        for split, count in split_counts(n_known).items():
            for _ in range(count):
                add_known(split, label, gen, rng, next_source)
    for gen in UNKNOWN_GENERATORS:
        for _ in range(n_unknown):
            add("test", 7, gen, rng, source=next_source("unknown"))

    for t in tasks:
        draw_rate_and_condition(t, rng)
    assign_ids(tasks, rng)

    if test_scale > scale:
        # A larger test set on the same train/dev: the extra test tasks draw from their own generator,
        # after everything above, so train, dev and the regular test files stay byte-identical.
        # Real and WORLD sources of the extra tasks cycle through those of the regular test tasks
        # (never a training recording); texts continue through the test sentences.
        extra_rng = np.random.default_rng([seed, 11])
        test_sources = {g: [t.source for t in tasks if t.split == "test" and t.generator == g] for g in ("real", "world")}
        cursor = {g: 0 for g in test_sources}

        def test_source(gen):
            if gen == "unknown":
                return next_source(gen)
            cursor[gen] += 1
            return test_sources[gen][(cursor[gen] - 1) % len(test_sources[gen])]

        first_extra = len(tasks)
        n_known_test = max(5, int(round(PER_KNOWN_CLASS * test_scale)))
        extra = split_counts(n_known_test)["test"] - split_counts(n_known)["test"]
        for label, gen in KNOWN_GENERATORS.items():
            for _ in range(extra):
                add_known("test", label, gen, extra_rng, test_source)
        for gen in UNKNOWN_GENERATORS:
            for _ in range(max(2, int(round(PER_UNKNOWN_GENERATOR * test_scale))) - n_unknown):
                add("test", 7, gen, extra_rng, source=test_source("unknown"))
        for t in tasks[first_extra:]:
            draw_rate_and_condition(t, extra_rng)
        last = max(int(t.utt_id[len(ID_PREFIX["test"]):]) for t in tasks[:first_extra] if t.split == "test")
        assign_ids(tasks[first_extra:], extra_rng, first_number=last + 1)
    return tasks, pools["babble"]


def draw_rate_and_condition(t: Task, rng: np.random.Generator) -> None:
    # Output rate: the real data mixes 16/24/44.1 kHz; classes 0 and 5 keep another rate at random
    # so the loader's resampling is exercised.
    if t.label in (0, 5) and rng.random() < 0.35:
        t.out_sr = int(rng.choice([24000, 44100]))
    if t.split == "test":
        noisy, coded = rng.random() < 0.5, rng.random() < 1 / 3
        parts = []
        if noisy:
            parts.append(f"noise:{rng.choice(['music', 'effects', 'babble'])}:{rng.uniform(5, 20):.1f}")
        if coded:
            parts.append(f"codec:{rng.choice(['mp3', 'aac', 'opus', 'gsm', 'g722', 'amr-nb'])}")
        t.condition = "+".join(parts) if parts else "clean"


def assign_ids(tasks: list[Task], rng: np.random.Generator, first_number: int = 0) -> None:
    """Ids shuffled across classes; test ids have gaps, as in the real test set."""
    for split in SPLITS:
        members = [t for t in tasks if t.split == split]
        if not members:
            continue
        perm = rng.permutation(len(members))
        if split == "test":
            numbers = np.sort(rng.choice(int(len(members) * 1.25) + 1, size=len(members), replace=False))
        else:
            numbers = np.arange(len(members))
        for t, slot in zip(members, perm):
            t.utt_id = f"{ID_PREFIX[split]}{first_number + int(numbers[slot]):08d}"


# --------------------------------------------------------------------------- rendering

def post_process(task: Task, x: np.ndarray, bank: Path) -> np.ndarray:
    rng = np.random.default_rng([task.seed, 1])
    x = trim_edge_silence(np.asarray(x, np.float32), SR, top_db=50.0)
    x = crop_seconds(x, MAX_SECONDS, rng)
    if len(x) < int(0.5 * SR):
        raise KitError(f"{task.generator} produced only {len(x) / SR:.2f} s for task {task.index}")
    for part in task.condition.split("+"):
        if part.startswith("noise:"):
            _, kind, snr = part.split(":")
            x = mix_at_snr(x, eval_noise(bank, kind, len(x), rng), float(snr))
        elif part.startswith("codec:"):
            x = codec_roundtrip(x, SR, part.split(":", 1)[1], rng)
    level = rng.uniform(-28.0, -20.0)
    x = x * 10 ** ((level - rms_dbfs(x)) / 20)
    peak = float(np.abs(x).max())
    if peak > 0.99:
        x = x * (0.99 / peak)
    return resample(x.astype(np.float32), SR, task.out_sr)


def finish(task: Task, x: np.ndarray, out: Path, bank: Path) -> None:
    write_wav(out / SPLIT_DIR[task.split] / "wav" / f"{task.utt_id}.wav", post_process(task, x, bank), task.out_sr)


def render(task: Task, out: Path, bank: Path, engine=None) -> None:
    with scratch_dir("kit_demo_task") as tmp:
        gen = engine if task.generator == "piper" else GENERATORS[task.generator]
        finish(task, gen(task, tmp), out, bank)


def _render_job(job) -> int:
    kind, tasks, out, bank, seed = job
    if kind == "piper":
        engine = PiperEngine(seed)
        for t in tasks:
            render(t, out, bank, engine)
    elif kind == "festival":
        with scratch_dir("kit_demo_task") as tmp:
            for t, x in zip(tasks, festival_waves(tasks, tmp)):
                finish(t, x, out, bank)
    else:
        for t in tasks:
            render(t, out, bank)
    return len(tasks)


def corpus_options(scale: float, seed: int, test_scale: float | None) -> dict:
    """The stamp's options; a test set scaled like the rest keeps the stamp of earlier versions."""
    options = {"scale": scale, "seed": seed, "version": 1}
    if test_scale is not None and test_scale != scale:
        options["test_scale"] = test_scale
    return options


def render_tasks(tasks: list[Task], stage: Path, bank: Path, seed: int, nj: int,
                 desc: str = "demo corpus") -> None:
    """Render every task into stage/<split folder>/wav on `nj` worker processes; `desc` names the
    progress bar."""
    piper = [t for t in tasks if t.generator == "piper"]
    jobs = [("piper", piper, stage, bank, seed)] if piper else []
    # Festival's texts in batches, one festival process each; every other task alone
    rest = []
    for gen in ("festival_hts", "festival_diphone"):
        said = [t for t in tasks if t.generator == gen]
        rest += [("festival", said[i:i + FESTIVAL_BATCH]) for i in range(0, len(said), FESTIVAL_BATCH)]
    rest += [("plain", [t]) for t in tasks if t.generator not in ("piper", "festival_hts", "festival_diphone")]
    # Heavy generators first so the pool does not end on a long tail.
    weight = {"world": 0, "griffin_lim": 1, "lpc_vocoder": 2, "channel_vocoder": 2, "pitch_shift": 2,
              "festival_hts": 3}
    rest.sort(key=lambda job: (weight.get(job[1][0].generator, 9), job[1][0].index))
    jobs += [(kind, batch, stage, bank, seed) for kind, batch in rest]
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, nj)) as pool, tqdm(total=len(tasks), desc=desc, unit="utt", mininterval=1.0) as bar:
        for done in pool.imap_unordered(_render_job, jobs):
            bar.update(done)


META_HEADER = "utt_id\tsplit\tlabel\tgenerator\tvoice\ttext_id\tcondition\tsample_rate\tsource\n"


def write_key_and_meta(stage: Path, test: list[Task], rows: list[Task]) -> None:
    """keys/test_label.txt for the `test` tasks and meta.tsv (one row per task of `rows`), in the
    given order."""
    (stage / "keys").mkdir()
    (stage / "keys" / "test_label.txt").write_text("".join(f"{t.utt_id}.wav {t.label}\n" for t in test))
    (stage / "meta.tsv").write_text(META_HEADER + "".join(
        f"{t.utt_id}\t{t.split}\t{t.label}\t{t.generator}\t{t.voice}\t{t.text_id}\t{t.condition}\t"
        f"{t.out_sr}\t{t.source}\n" for t in rows))


def require_tools() -> None:
    """A one-line error naming the missing programs and the Debian packages that bring them."""
    missing = have_tools(*TOOLS)
    if missing:
        fail(f"missing programs {missing}; install: apt-get install -y {' '.join(DEBIAN_PACKAGES)}")


def build(out: Path, scale: float, seed: int, nj: int, test_scale: float | None = None) -> dict:
    require_tools()
    timings = {}
    t0 = time.time()
    tasks, babble_sources = plan_tasks(scale, seed, test_scale)
    with atomic_dir(out) as stage, scratch_dir("kit_demo_work") as work:
        work = Path(work)
        for split in SPLITS:
            (stage / SPLIT_DIR[split] / "wav").mkdir(parents=True)
        bank = build_eval_bank(work, babble_sources)
        musan_counts = build_musan_bank(stage / "musan_demo", np.random.default_rng([seed, 7]), work)
        timings["banks_s"] = round(time.time() - t0, 1)

        t1 = time.time()
        render_tasks(tasks, stage, bank, seed, nj)
        timings["render_s"] = round(time.time() - t1, 1)

        by_split = {s: sorted((t for t in tasks if t.split == s), key=lambda t: t.utt_id) for s in SPLITS}
        for split in ("train", "dev"):
            (stage / SPLIT_DIR[split] / "label.txt").write_text(
                "".join(f"{t.utt_id}.wav {t.label}\n" for t in by_split[split]))
        write_key_and_meta(stage, by_split["test"], [t for s in SPLITS for t in by_split[s]])
        write_stamp(stage, corpus_options(scale, seed, test_scale))
    timings["total_s"] = round(time.time() - t0, 1)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"utterances": {s: len(by_split[s]) for s in SPLITS}, "musan_demo": musan_counts,
            "bytes": size, **timings}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/demo", help="corpus folder (replaced only when complete)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every class count")
    ap.add_argument("--test_scale", type=float, default=None,
                    help="size multiplier for the test split alone (>= --scale; default: --scale): a larger "
                         "test set for ranking methods, with train and dev unchanged")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--force", action="store_true", help="rebuild even if the corpus is current")
    args = ap.parse_args()
    if args.scale <= 0:
        fail(f"--scale must be positive, got {args.scale}")
    if args.test_scale is not None and args.test_scale < args.scale:
        fail(f"--test_scale {args.test_scale} is below --scale {args.scale}; it can only add test utterances")
    out = Path(args.out)
    if not args.force and stage_is_current(out, corpus_options(args.scale, args.seed, args.test_scale)):
        print(f"demo corpus {out} is current (scale {args.scale}, seed {args.seed}); nothing to do")
        remove_staging_of(out)
        return
    if out.exists() and not (out / ".options.json").exists():
        fail(f"{out} exists and is not a demo corpus built by this kit; refusing to overwrite it")
    info = build(out, args.scale, args.seed, args.nj, args.test_scale)
    print(f"demo corpus written to {out}: {info['utterances']} utterances, musan_demo {info['musan_demo']}, "
          f"{info['bytes'] / 1e6:.1f} MB; banks {info['banks_s']} s, rendering {info['render_s']} s, "
          f"total {info['total_s']} s")


if __name__ == "__main__":
    run_cli(main)
