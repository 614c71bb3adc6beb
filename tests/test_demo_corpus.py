"""The demo corpus generator: classes, disjoint text, separate key, determinism."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import soundfile as sf

from core.label_files import read_label_file
from data_prep.demo_synth import espeak_variants
from data_prep.demo_text import load_sentences

from .conftest import TINY_SCALE, run_module


def read_meta(corpus: Path) -> list[dict]:
    with open(corpus / "meta.tsv") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_classes_and_splits(tiny_corpus):
    meta = read_meta(tiny_corpus)
    by_split = {s: {int(r["label"]) for r in meta if r["split"] == s} for s in ("train", "dev", "test")}
    assert by_split["train"] == set(range(7))
    assert by_split["dev"] == set(range(7))
    assert by_split["test"] == set(range(8))
    unknown_gens = {r["generator"] for r in meta if r["label"] == "7"}
    assert unknown_gens == {"griffin_lim", "lpc_vocoder"}
    # train/dev are clean; some test utterances carry noise or codec conditions
    assert {r["condition"] for r in meta if r["split"] != "test"} == {"clean"}
    assert any(r["condition"] != "clean" for r in meta if r["split"] == "test")


def test_label_files_match_folders_and_key_is_apart(tiny_corpus):
    for split, prefix in (("train", "ADD2023_T3_T_"), ("dev", "ADD2023_T3_D_")):
        labels = read_label_file(tiny_corpus / f"ADD2023_Track3_{split}" / "label.txt")
        files = {p.stem for p in (tiny_corpus / f"ADD2023_Track3_{split}" / "wav").glob("*.wav")}
        assert set(labels) == files
        assert all(u.startswith(prefix) for u in files)
    test_dir = tiny_corpus / "ADD2023_Track3_test"
    assert sorted(p.name for p in test_dir.iterdir()) == ["wav"]
    key = read_label_file(tiny_corpus / "keys" / "test_label.txt")
    assert set(key) == {p.stem for p in (test_dir / "wav").glob("*.wav")}


def test_text_disjoint_between_splits(tiny_corpus):
    meta = read_meta(tiny_corpus)
    texts = {s: {r["text_id"] for r in meta if r["split"] == s and r["text_id"] != "-"} for s in ("train", "dev", "test")}
    assert texts["train"] and texts["dev"] and texts["test"]
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


def test_real_and_world_sources_disjoint(tiny_corpus):
    meta = read_meta(tiny_corpus)
    real = {r["source"] for r in meta if r["generator"] == "real"}
    world = {r["source"] for r in meta if r["generator"] == "world"}
    unknown = {r["source"] for r in meta if r["label"] == "7"}
    assert real and world and not real & world and not real & unknown


def test_ids_do_not_reveal_class(tiny_corpus):
    labels = read_label_file(tiny_corpus / "ADD2023_Track3_train" / "label.txt")
    ordered = [labels[u] for u in sorted(labels)]
    assert ordered != sorted(ordered)


def test_audio_is_pcm16_at_mixed_rates_and_at_most_6s(tiny_corpus):
    rates = set()
    for wav in tiny_corpus.rglob("ADD2023_T3_*.wav"):
        info = sf.info(str(wav))
        assert info.subtype == "PCM_16" and info.channels == 1
        assert info.frames / info.samplerate <= 6.0 + 1e-3
        rates.add(info.samplerate)
    assert 16000 in rates


def test_musan_demo_layout(tiny_corpus):
    for kind in ("noise", "music", "speech"):
        assert list((tiny_corpus / "musan_demo" / kind).glob("*.wav")), kind


def test_sentences_and_variants():
    sentences = load_sentences()
    assert len(sentences) > 2000
    assert all(7 <= len(s.split()) <= 11 for s in sentences)
    variants = espeak_variants()
    assert "klatt" not in variants and "adam" not in variants and "m1" in variants


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".options.json"}


def test_rebuild_is_byte_identical(tiny_corpus, tmp_path):
    again = tmp_path / "demo"
    run_module("data_prep.demo_corpus", "--out", str(again), "--scale", TINY_SCALE, "--seed", "3")
    assert digest_tree(again) == digest_tree(tiny_corpus)


def test_second_run_is_a_noop_and_foreign_folder_is_refused(tiny_corpus, tmp_path):
    proc = run_module("data_prep.demo_corpus", "--out", str(tiny_corpus), "--scale", TINY_SCALE, "--seed", "3")
    assert "nothing to do" in proc.stdout
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("user data")
    proc = run_module("data_prep.demo_corpus", "--out", str(foreign), "--scale", TINY_SCALE, check=False)
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert (foreign / "precious.txt").read_text() == "user data"


def test_larger_test_split_leaves_train_and_dev_as_they_are():
    """`--test_scale`: extra test utterances only; the regular plan is unchanged, ids stay unique and
    the extra real / WORLD test audio never comes from a training or dev recording."""
    import dataclasses

    from data_prep.demo_corpus import PER_KNOWN_CLASS, PER_UNKNOWN_GENERATOR, plan_tasks, split_counts

    scale, test_scale = 0.1, 0.3
    base, _ = plan_tasks(scale, 5)
    big, _ = plan_tasks(scale, 5, test_scale)
    assert [dataclasses.astuple(t) for t in big[:len(base)]] == [dataclasses.astuple(t) for t in base]
    extra = big[len(base):]
    assert extra and {t.split for t in extra} == {"test"}
    ids = [t.utt_id for t in big]
    assert len(set(ids)) == len(ids)
    tests = [t for t in big if t.split == "test"]
    per_class = split_counts(int(round(PER_KNOWN_CLASS * test_scale)))["test"]
    for label in range(7):
        assert sum(t.label == label for t in tests) == per_class
    assert sum(t.label == 7 for t in tests) == 2 * int(round(PER_UNKNOWN_GENERATOR * test_scale))
    seen = {t.source for t in big if t.split in ("train", "dev") and t.source != "-"}
    assert not seen & {t.source for t in extra if t.generator in ("real", "world")}
    assert plan_tasks(scale, 5, scale)[0] == base  # test_scale == scale is the regular corpus


def festival_tasks():
    from data_prep.demo_corpus import plan_tasks

    tasks, _ = plan_tasks(1.0, 0)
    picked = []
    for gen in ("festival_diphone", "festival_hts"):
        said = [t for t in tasks if t.generator == gen]
        voices = sorted({t.voice for t in said})
        picked += [next(t for t in said if t.voice == v) for v in voices] + said[:2]
    return picked


def test_festival_batch_gives_text2wave_s_waves(tmp_path):
    """One festival process for many texts gives, text by text, the samples of one text2wave call
    each (the oracle: the program the corpus was made with), voices switching between texts."""
    import numpy as np

    from data_prep.demo_synth import festival_waves, gen_festival

    tasks = festival_tasks()
    assert len({t.voice for t in tasks}) >= 3
    (tmp_path / "batch").mkdir()
    batch = festival_waves(tasks, tmp_path / "batch")
    assert len(batch) == len(tasks)
    for i, task in enumerate(tasks):
        (tmp_path / str(i)).mkdir()
        alone = gen_festival(task, tmp_path / str(i))
        assert alone.size > 8000 and np.array_equal(batch[i], alone), (task.voice, task.text)


def test_festival_batch_failure_names_the_text(tmp_path):
    """A batch festival cannot finish is said again text by text: the error is text2wave's, one line."""
    import dataclasses

    import pytest

    from core.errors import KitError
    from data_prep.demo_synth import festival_waves

    good = festival_tasks()[0]
    bad = dataclasses.replace(good, voice="no_such_voice")
    with pytest.raises(KitError, match="festival text2wave failed: SIOD ERROR: unbound variable : voice_no_such_voice") as err:
        festival_waves([good, bad], tmp_path)
    assert "\n" not in str(err.value)
