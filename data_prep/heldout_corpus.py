"""A held-out test set for a demo experiment: other texts, other real recordings, other unseen generators.

    python -m data_prep.heldout_corpus --demo data/demo --out data/heldout [--per_class 60] [--seed 2026] [--nj 2]

The demo test's unknowns are always Griffin-Lim and the LPC vocoder, and its texts come from the
licence files that training's come from, so a figure read on it says nothing about how much of it
belongs to that test. This set changes what the figures are meant to generalise over and keeps
everything else as the demo test has it:
  texts         7–11-word pieces of the docstrings of the running Python's standard library, none
                of them a sentence of the demo's licence texts (classes 1–5)
  recordings    real recordings that no split of the demo uses, then the demo test's own; never
                a training or dev recording (classes 0 and 6, and the unknowns made from speech)
  unknowns (7)  espeak-ng's Klatt synthesiser (the variants the demo's class 1 leaves out),
                phase-vocoder pitch shifting of real speech by 2–5 semitones up or down, and a
                channel vocoder (16–32 mel bands of real speech on a pulse train at its F0)
  conditions    as the demo test draws them: half mixed with the evaluation-only noise bank at
                5–20 dB, a third through a codec round trip
`--per_class` utterances per known class and per unknown generator (60: 600 utterances). The demo
folder's stamp says which corpus it is (scale, seed, test scale); the set is planned against it.

Output: OUT/ADD2023_Track3_test/wav, OUT/keys/test_label.txt and OUT/meta.tsv (the demo's columns,
with the generator of every utterance). Score it with the recipe's new-test-set command (README,
"A held-out test set").
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import platform
import sysconfig
import time
from pathlib import Path

import numpy as np

from core.atomic import atomic_dir, remove_staging_of, scratch_dir
from core.errors import ArgumentParser, fail, run_cli
from core.stamps import STAMP_NAME, read_stamp, stage_is_current, write_stamp

from .demo_corpus import (
    KNOWN_GENERATORS,
    MIN_SOURCE_SECONDS,
    SPLIT_DIR,
    Task,
    assign_ids,
    draw_rate_and_condition,
    known_task_fields,
    plan_tasks,
    render_tasks,
    require_tools,
    write_key_and_meta,
)
from .demo_noise_banks import build_eval_bank
from .demo_synth import espeak_variants, real_duration, real_speech_files
from .demo_text import cut_sentences, load_sentences

HELDOUT_UNKNOWN_GENERATORS = ("espeak_klatt", "pitch_shift", "channel_vocoder")
# folders of the standard library whose docstrings are tests, tools or another language's text
SKIPPED_STDLIB_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
                       "__pycache__", "ensurepip", "pydoc_data"}
MIN_SENTENCES = 200


def docstring_texts() -> list[str]:
    """Every module, class and function docstring of the running Python's standard library, in
    file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_STDLIB_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    return texts


def heldout_sentences() -> list[str]:
    """Docstring sentences that are not sentences of the demo's texts."""
    licence = set(load_sentences())
    sentences = [s for s in cut_sentences(docstring_texts()) if s not in licence]
    if len(sentences) < MIN_SENTENCES:
        fail(f"only {len(sentences)} usable docstring sentences in {sysconfig.get_paths()['stdlib']}")
    return sentences


def demo_options(demo: Path) -> dict:
    """The scale, seed and test scale the demo corpus at `demo` was built with (its stamp)."""
    if not demo.is_dir():
        fail(f"--demo {demo}: {'not a folder' if demo.exists() else 'does not exist'}")
    options = read_stamp(demo)
    if options is None or not {"scale", "seed"} <= options.keys():
        fail(f"{demo}: no demo corpus stamp (.options.json with scale and seed); give the folder "
             f"run_track3.sh built (data/demo by default)")

    def checked(key: str, integer: bool = False):
        """The stamp's value, as stored, once it is a finite number (an integer where asked)."""
        value = options.get(key)
        # bool is an int to Python; a stamp never holds one for these
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (integer and value != int(value)):
            fail(f"{demo / STAMP_NAME}: {key} {value!r} is not {'an integer' if integer else 'a number'}; "
                 "rebuild the demo corpus (bash run_track3.sh --stop_stage 1)")
        return value

    # test_scale as stored: the held-out stamp holds it, and 4 would turn into 4.0
    return {"scale": float(checked("scale")), "seed": int(checked("seed", integer=True)),
            "test_scale": None if options.get("test_scale") is None else checked("test_scale")}


def is_speech(path: str) -> bool:
    """False for Asterisk's silence/N.g722 prompts: N seconds of its noise floor (about -80 dBFS),
    which the demo corpus itself draws among its real recordings."""
    return "silence" not in Path(path).parent.parts


def recording_pool(demo_tasks: list[Task], babble: list[str], rng: np.random.Generator) -> tuple[list[str], int]:
    """Real recordings for the held-out set: those no demo split uses (shuffled), then the demo
    test's own; none that a training or dev task or the evaluation babble uses. Also how many of
    them the demo never uses."""
    fitting = [f for f in real_speech_files() if is_speech(f) and real_duration(f) >= MIN_SOURCE_SECONDS]
    used = {t.source for t in demo_tasks} | set(babble)
    seen_in_training = {t.source for t in demo_tasks if t.split != "test"} | set(babble)
    unused = [f for f in fitting if f not in used]
    unused = [unused[i] for i in rng.permutation(len(unused))]
    test_only = sorted({t.source for t in demo_tasks if t.split == "test" and t.source != "-" and is_speech(t.source)}
                       - seen_in_training)
    pool = unused + test_only
    if not pool:
        fail("no real recording is left that the demo's training or dev splits do not use")
    return pool, len(unused)


def plan_heldout(options: dict, per_class: int, seed: int) -> tuple[list[Task], list[str], dict]:
    """The held-out tasks (split "test"), the demo's evaluation babble sources and a summary."""
    demo_tasks, babble = plan_tasks(options["scale"], options["seed"], options["test_scale"])
    rng = np.random.default_rng(seed)
    sentences = heldout_sentences()
    order = rng.permutation(len(sentences))
    pool, n_unused = recording_pool(demo_tasks, babble, rng)
    variants, klatt = espeak_variants(), espeak_variants(klatt=True)
    if not klatt:
        fail("espeak-ng has no Klatt variant on this machine (is espeak-ng-data complete?)")
    cursor = {"text": 0, "source": 0}

    def next_text():
        i = int(order[cursor["text"] % len(order)])
        cursor["text"] += 1
        return sentences[i], f"d{i:05d}"

    def next_source(_gen=None):
        f = pool[cursor["source"] % len(pool)]
        cursor["source"] += 1
        return f

    tasks: list[Task] = []

    def add(label, generator, fields):
        tasks.append(Task(index=len(tasks), split="test", label=label, generator=generator,
                          seed=int(rng.integers(2 ** 31)), **fields))

    for label, gen in KNOWN_GENERATORS.items():
        for _ in range(per_class):
            add(label, gen, known_task_fields(gen, rng, next_text, next_source, variants))
    for _ in range(per_class):  # class 1's accents, speeds and pitches, on the Klatt variants
        add(7, "espeak_klatt", known_task_fields("espeak", rng, next_text, next_source, klatt))
    for _ in range(per_class):
        semitones = float(rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 5.0))
        add(7, "pitch_shift", {"source": next_source(), "params": {"semitones": round(semitones, 2)}})
    for _ in range(per_class):
        add(7, "channel_vocoder", {"source": next_source(), "params": {"bands": int(rng.integers(16, 33))}})
    for t in tasks:
        draw_rate_and_condition(t, rng)
    assign_ids(tasks, rng)
    summary = {"sentences": len(sentences), "recordings": len(pool), "recordings_unused_by_demo": n_unused}
    return tasks, babble, summary


def heldout_options(options: dict, per_class: int, seed: int) -> dict:
    return {"demo": options, "per_class": per_class, "seed": seed, "python": platform.python_version(),
            "version": 2}  # 2: no silence prompt among the demo test's recordings


def build(options: dict, out: Path, per_class: int, seed: int, nj: int) -> dict:
    """Render the set planned against the demo corpus of `options` (demo_options) into `out`."""
    require_tools()
    t0 = time.time()
    tasks, babble, summary = plan_heldout(options, per_class, seed)
    with atomic_dir(out) as stage, scratch_dir("kit_heldout_work") as work:
        (stage / SPLIT_DIR["test"] / "wav").mkdir(parents=True)
        bank = build_eval_bank(Path(work), babble)
        render_tasks(tasks, stage, bank, seed, nj, desc="held-out set")
        ordered = sorted(tasks, key=lambda t: t.utt_id)
        write_key_and_meta(stage, ordered, ordered)
        write_stamp(stage, heldout_options(options, per_class, seed))
    return {"utterances": len(tasks), **summary, "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="data/demo", help="the demo corpus the set is held out from")
    ap.add_argument("--out", default="data/heldout", help="output folder (replaced only when complete)")
    ap.add_argument("--per_class", type=int, default=60, help="utterances per known class and per unknown generator")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--force", action="store_true", help="rebuild even if the set is current")
    args = ap.parse_args()
    if args.per_class < 1:
        fail(f"--per_class must be at least 1, got {args.per_class}")
    demo, out = Path(args.demo), Path(args.out)
    options = demo_options(demo)
    if not args.force and stage_is_current(out, heldout_options(options, args.per_class, args.seed)):
        print(f"held-out set {out} is current; nothing to do")
        remove_staging_of(out)
        return
    if out.exists() and not (out / ".options.json").exists():
        fail(f"{out} exists and is not a set built by this kit; refusing to overwrite it")
    info = build(options, out, args.per_class, args.seed, args.nj)
    print(f"held-out test set written to {out}: {info['utterances']} utterances ({info['sentences']} candidate "
          f"sentences, {info['recordings']} recordings of which {info['recordings_unused_by_demo']} unused by the "
          f"demo) in {info['seconds']} s\n"
          f"score it: bash run_track3.sh --exp EXP --test_dir {out}/{SPLIT_DIR['test']}/wav "
          f"--test_labels {out}/keys/test_label.txt --test_name heldout --conditions {out}/meta.tsv")


if __name__ == "__main__":
    run_cli(main)
