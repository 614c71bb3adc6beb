"""The held-out test set: disjoint from the demo in texts, recordings and generators; its two new
signal-processing generators do what they say; the build writes a set the recipe can score."""
from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from core.stamps import write_stamp
from data_prep.demo_corpus import KNOWN_GENERATORS, plan_tasks
from data_prep.demo_synth import SR, decode_real, espeak_variants, real_speech_files
from data_prep.demo_text import load_sentences
from data_prep.heldout_corpus import HELDOUT_UNKNOWN_GENERATORS, plan_heldout, recording_pool

ROOT = Path(__file__).resolve().parents[1]
DEMO = {"scale": 1.0, "seed": 0, "test_scale": 4.2}  # the corpus of the README's quality figures


@pytest.fixture(scope="module")
def planned():
    return plan_heldout(DEMO, 12, 2026)


def test_plan_holds_nothing_the_demo_trains_on(planned):
    tasks, babble, _ = planned
    demo_tasks, demo_babble = plan_tasks(DEMO["scale"], DEMO["seed"], DEMO["test_scale"])
    assert babble == demo_babble  # the demo test's evaluation-only noise bank
    training = {t.source for t in demo_tasks if t.split != "test"} | set(demo_babble)
    sources = [t.source for t in tasks if t.source != "-"]
    assert sources and not training.intersection(sources)
    # the whole pool, not only the sources drawn: with enough tasks it cycles into the demo test's
    # recordings, which include silence prompts (a default demo's Griffin-Lim sources)
    pool, _ = recording_pool(demo_tasks, demo_babble, np.random.default_rng(0))
    assert set(sources) <= set(pool) and not training.intersection(pool)
    assert any("/silence/" in t.source for t in demo_tasks if t.split == "test")
    assert not any("/silence/" in s for s in pool)
    texts = [t.text for t in tasks if t.text]
    assert texts and not set(load_sentences()).intersection(texts)
    assert not {t.text for t in demo_tasks}.intersection(texts)


def test_plan_has_every_class_and_only_new_unknown_generators(planned):
    tasks, _, _ = planned
    counts = collections.Counter((t.label, t.generator) for t in tasks)
    expected = {(label, gen): 12 for label, gen in KNOWN_GENERATORS.items()}
    expected.update({(7, gen): 12 for gen in HELDOUT_UNKNOWN_GENERATORS})
    assert counts == expected
    assert len({t.utt_id for t in tasks}) == len(tasks)
    assert all(t.utt_id.startswith("ADD2023_T3_E_") and t.split == "test" for t in tasks)
    klatt = [t.voice.split("+")[1] for t in tasks if t.generator == "espeak_klatt"]
    demo_variants = set(espeak_variants())
    assert not demo_variants.intersection(klatt)
    assert set(klatt) <= set(espeak_variants(klatt=True))
    assert all(2.0 <= abs(t.params["semitones"]) <= 5.0 for t in tasks if t.generator == "pitch_shift")


def f0_median(x: np.ndarray) -> float:
    import pyworld

    f0, t = pyworld.dio(x.astype(np.float64), SR)
    f0 = pyworld.stonemask(x.astype(np.float64), f0, t, SR)
    return float(np.median(f0[f0 > 0]))


def speech_file() -> str:
    return next(f for f in real_speech_files() if f.endswith("vm-then-pound.g722"))


@pytest.mark.parametrize("semitones", [-4.0, 3.0])
def test_pitch_shift_moves_f0_by_the_semitones(semitones):
    from data_prep.demo_synth import gen_pitch_shift

    source = speech_file()
    y = gen_pitch_shift(SimpleNamespace(source=source, seed=1, params={"semitones": semitones}), None)
    ratio = f0_median(y) / f0_median(decode_real(source))
    assert ratio == pytest.approx(2 ** (semitones / 12), rel=0.04)


def test_channel_vocoder_keeps_the_band_envelopes_on_a_new_source():
    import librosa

    from data_prep.demo_synth import gen_channel_vocoder

    source = speech_file()
    x = decode_real(source)
    y = gen_channel_vocoder(SimpleNamespace(source=source, seed=3, params={"bands": 20}), None)
    assert len(y) == len(x) and np.isfinite(y).all()
    mel = {k: np.log(librosa.feature.melspectrogram(y=v, sr=SR, n_mels=20) + 1e-8) for k, v in (("x", x), ("y", y))}
    assert np.corrcoef(mel["x"].ravel(), mel["y"].ravel())[0, 1] > 0.95
    # voiced frames: a pulse train at the speech's own F0
    assert f0_median(y) == pytest.approx(f0_median(x), rel=0.05)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep.heldout_corpus", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_build_writes_a_scorable_set_and_refuses_a_folder_without_a_stamp(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    bad = run("--demo", str(demo), "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert str(demo) in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    write_stamp(demo, {"scale": 0.05, "seed": 3, "version": 1})
    out = tmp_path / "heldout"
    done = run("--demo", str(demo), "--out", str(out), "--per_class", "1", "--nj", "2")
    assert done.returncode == 0, done.stderr
    key = [line.split() for line in (out / "keys/test_label.txt").read_text().splitlines()]
    wavs = sorted(p.name for p in (out / "ADD2023_Track3_test/wav").iterdir())
    assert sorted(name for name, _ in key) == wavs and len(wavs) == 10
    assert sorted(int(label) for _, label in key) == [0, 1, 2, 3, 4, 5, 6, 7, 7, 7]
    meta = (out / "meta.tsv").read_text().splitlines()
    assert meta[0].split("\t")[3] == "generator" and len(meta) == 11
    assert {row.split("\t")[3] for row in meta[1:] if row.split("\t")[2] == "7"} == set(HELDOUT_UNKNOWN_GENERATORS)
    for name in wavs:
        x, sr = sf.read(out / "ADD2023_Track3_test/wav" / name)
        assert len(x) >= 0.5 * sr and np.isfinite(x).all() and np.abs(x).max() > 0.01
    again = run("--demo", str(demo), "--out", str(out), "--per_class", "1")
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize("options, says", [
    ({"scale": "abc", "seed": 0}, "scale 'abc' is not a number"),
    ({"scale": [1], "seed": 0}, "scale [1] is not a number"),
    ({"scale": 1.0, "seed": "x"}, "seed 'x' is not an integer"),
    ({"scale": 1.0, "seed": 0.5}, "seed 0.5 is not an integer"),
    ({"scale": 1.0, "seed": True}, "seed True is not an integer"),
    ({"scale": 1.0, "seed": 0, "test_scale": "big"}, "test_scale 'big' is not a number"),
    ({"scale": float("inf"), "seed": 0}, "scale inf is not a number"),
])
def test_a_mistyped_demo_stamp_is_a_one_line_error(tmp_path, options, says):
    demo = tmp_path / "demo"
    demo.mkdir()
    write_stamp(demo, {**options, "version": 1})
    bad = run("--demo", str(demo), "--out", str(tmp_path / "x"), "--per_class", "1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and str(demo) in bad.stderr and says in bad.stderr
    assert not (tmp_path / "x").exists()


def test_a_missing_demo_folder_is_named_as_missing(tmp_path):
    bad = run("--demo", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
