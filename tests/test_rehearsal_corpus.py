"""The rehearsal corpus: sizes, class shares, clip lengths, audio cut from the right source,
determinism, resumption, what prepare makes of it, and one-line errors."""
from __future__ import annotations

import csv
import filecmp
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.label_files import read_label_file
from core.prepared_split import PreparedSplit

from .conftest import run_module

SIZES = {"train": 28, "dev": 14, "test": 33}
# the tiny demo's shortest dev source of a class is under 1 s
SECONDS = (0.3, 0.8)


def build(source: Path, out: Path, *extra: str, check: bool = True):
    return run_module("data_prep.rehearsal_corpus", "--source", str(source), "--out", str(out),
                      *[a for s, n in SIZES.items() for a in (f"--{s}", str(n))],
                      "--seconds", f"{SECONDS[0]}-{SECONDS[1]}", *extra, check=check)


@pytest.fixture(scope="module")
def rehearsal(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal") / "corpus"
    build(tiny_corpus, out, "--nj", "2")
    return out


def labels_of(corpus: Path) -> dict[str, dict[str, int]]:
    return {"train": read_label_file(corpus / "ADD2023_Track3_train" / "label.txt"),
            "dev": read_label_file(corpus / "ADD2023_Track3_dev" / "label.txt"),
            "test": read_label_file(corpus / "keys" / "test_label.txt")}


def test_sizes_classes_and_layout(rehearsal, tiny_corpus):
    labels = labels_of(rehearsal)
    for split, n in SIZES.items():
        folder = rehearsal / f"ADD2023_Track3_{split}"
        assert {p.stem for p in (folder / "wav").glob("*.wav")} == set(labels[split])
        assert len(labels[split]) == n
    assert sorted(p.name for p in (rehearsal / "ADD2023_Track3_test").iterdir()) == ["wav"]
    # train and dev: 7 classes, equal as in the demo; test: the source key's shares (1 : 4 unknown)
    assert Counter(labels["train"].values()) == {c: 4 for c in range(7)}
    assert Counter(labels["dev"].values()) == {c: 2 for c in range(7)}
    source_key = Counter(read_label_file(tiny_corpus / "keys" / "test_label.txt").values())
    assert source_key == {**{c: 1 for c in range(7)}, 7: 4}
    assert Counter(labels["test"].values()) == {**{c: 3 for c in range(7)}, 7: 12}
    assert all(u.startswith("ADD2023_T3_E_") for u in labels["test"])


def test_clips_are_excerpts_of_a_source_of_their_class(rehearsal, tiny_corpus):
    with open(rehearsal / "meta.tsv") as fh:
        meta = list(csv.DictReader(fh, delimiter="\t"))
    source_meta = {r["utt_id"]: r for r in csv.DictReader(open(tiny_corpus / "meta.tsv"), delimiter="\t")}
    assert len(meta) == sum(SIZES.values())
    for row in meta:
        split, src = row["split"], source_meta[row["source"]]
        assert src["split"] == split and src["label"] == row["label"]
        assert row["condition"] == src["condition"]
        clip, sr = sf.read(rehearsal / f"ADD2023_Track3_{split}" / "wav" / f"{row['utt_id']}.wav", dtype="int16")
        whole, source_sr = sf.read(tiny_corpus / f"ADD2023_Track3_{split}" / "wav" / f"{row['source']}.wav",
                                   dtype="int16")
        assert sr == source_sr == int(row["sample_rate"])
        assert SECONDS[0] - 1 / sr <= len(clip) / sr <= SECONDS[1] + 1 / sr
        start = int(round(float(row["source_start_s"]) * sr))
        # the start is stored to 0.1 ms: the clip is the source's samples at that offset, give or take
        assert any(np.array_equal(clip, whole[s:s + len(clip)]) for s in range(max(0, start - 2), start + 3))


def test_same_seed_same_bytes_whatever_nj_and_resumes(rehearsal, tiny_corpus, tmp_path):
    again = tmp_path / "again"
    build(tiny_corpus, again, "--nj", "1")
    cmp = filecmp.dircmp(rehearsal, again)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for split in ("train", "dev", "test"):
        wav = f"ADD2023_Track3_{split}/wav"
        names = sorted(p.name for p in (rehearsal / wav).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(rehearsal / wav, again / wav, names, shallow=False)
        assert not mismatch and not errors

    # an interrupted build: its stamped work folder with some clips and a half-written temporary
    resumed = tmp_path / "resumed"
    work = tmp_path / ".resumed.building"
    (work / "ADD2023_Track3_train" / "wav").mkdir(parents=True)
    shutil.copy(rehearsal / ".options.json", work / ".options.json")
    kept = sorted((rehearsal / "ADD2023_Track3_train" / "wav").iterdir())[:10]
    for p in kept:
        shutil.copy(p, work / "ADD2023_Track3_train" / "wav" / p.name)
    (work / "ADD2023_Track3_train" / "wav" / f".{kept[0].name}.abc.tmp").write_bytes(b"RIFF")
    out = build(tiny_corpus, resumed).stdout
    assert f"10 of {sum(SIZES.values())} clips already written" in out
    assert not work.exists()
    for split in ("train", "dev", "test"):
        wav = f"ADD2023_Track3_{split}/wav"
        names = sorted(p.name for p in (rehearsal / wav).iterdir())
        assert sorted(p.name for p in (resumed / wav).iterdir()) == names
        _, mismatch, _ = filecmp.cmpfiles(rehearsal / wav, resumed / wav, names, shallow=False)
        assert not mismatch

    other = tmp_path / "other_seed"
    build(tiny_corpus, other, "--seed", "1")
    assert labels_of(other)["train"] != labels_of(rehearsal)["train"] or \
        (other / "meta.tsv").read_text() != (rehearsal / "meta.tsv").read_text()
    assert "nothing to do" in build(tiny_corpus, other, "--seed", "1").stdout


def test_prepare_reads_it(rehearsal, tmp_path):
    run_module("data_prep.prepare", "--data_root", str(rehearsal), "--out", str(tmp_path), "--codec_variants", "0")
    labels = labels_of(rehearsal)
    for split, n in SIZES.items():
        prepared = PreparedSplit(tmp_path / split)
        assert len(prepared.ids) == n and prepared.readable.all()
        if split != "test":
            assert dict(zip(prepared.ids, prepared.labels.tolist())) == labels[split]


@pytest.mark.parametrize("args, message", [
    (("--source", "/nonexistent/demo"), "--source /nonexistent/demo: not a folder"),
    (("--train", "3"), "--train 3: too small to hold each of the source's 7 train classes once"),
    (("--dev", "0"), "--dev 0: must be a positive number"),
    (("--seconds", "2-1"), "need 0 < LO <= HI"),
    (("--seconds", "abc"), "expected LO-HI"),
    (("--seconds", "0.3-9"), "lower the upper bound"),
])
def test_bad_input_is_one_line(tiny_corpus, tmp_path, args, message):
    cmd = ["data_prep.rehearsal_corpus", "--source", str(tiny_corpus), "--out", str(tmp_path / "c"),
           "--seconds", "0.3-0.8", *args]
    proc = run_module(*cmd, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.building").exists()


def test_refuses_to_overwrite_other_folders(tiny_corpus, tmp_path):
    (tmp_path / "mine").mkdir()
    proc = build(tiny_corpus, tmp_path / "mine", check=False)
    assert proc.returncode == 2 and "is not a rehearsal corpus" in proc.stderr
    proc = build(tiny_corpus, tiny_corpus / "inside", check=False)
    assert proc.returncode == 2 and "must lie outside the source corpus" in proc.stderr
