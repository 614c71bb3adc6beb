"""The submission writer: one line per test file, validated, zipped."""
from __future__ import annotations

import shutil
import zipfile

import pytest

from core.errors import KitError
from submit.write import build_lines, write_submission

from .conftest import run_module


@pytest.fixture
def prepared_with_bad_file(tiny_corpus, tmp_path):
    """A copy of the tiny test split with one corrupt file, prepared."""
    test_dir = tmp_path / "data" / "test" / "wav"
    shutil.copytree(tiny_corpus / "ADD2023_Track3_test" / "wav", test_dir)
    bad = sorted(test_dir.glob("*.wav"))[2]
    bad.write_bytes(b"garbage")
    out = tmp_path / "prep"
    run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(test_dir), "--out", str(out))
    ids = sorted(p.stem for p in test_dir.glob("*.wav"))
    return out / "test", ids, bad.stem, test_dir


def write_preds(path, ids, label=3):
    path.write_text("".join(f"{u}.wav {label}\n" for u in ids))
    return path


def test_valid_submission_gives_unreadable_file_label_7(prepared_with_bad_file, tmp_path):
    test, ids, bad, _ = prepared_with_bad_file
    pred = write_preds(tmp_path / "pred.txt", [u for u in ids if u != bad])
    lines, unreadable = build_lines(pred, test)
    assert unreadable == [bad]
    assert lines == sorted(lines) and len(lines) == len(ids)
    assert f"{bad}.wav 7" in lines
    txt, zpath = write_submission(lines, "sys", tmp_path / "submission")
    assert txt.read_text().splitlines() == lines
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["sys.txt"] and zf.read("sys.txt").decode() == txt.read_text()


def test_a_line_names_its_file_as_the_folder_spells_it(prepared_with_bad_file, tmp_path):
    _, ids, bad, test_dir = prepared_with_bad_file
    upper = test_dir / f"{ids[0]}.WAV"
    (test_dir / f"{ids[0]}.wav").rename(upper)
    run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(test_dir), "--out", str(tmp_path / "again"))
    # predictions name it either way: the id is the name without its extension
    pred = write_preds(tmp_path / "pred.txt", [u for u in ids if u != bad])
    lines, _ = build_lines(pred, tmp_path / "again" / "test")
    assert f"{ids[0]}.WAV 3" in lines and f"{ids[0]}.wav 3" not in lines
    assert f"{ids[1]}.wav 3" in lines and len(lines) == len(ids)


@pytest.mark.parametrize("mutate, message", [
    (lambda ids: ids[1:], "no prediction"),
    (lambda ids: ids + ["ADD2023_T3_E_77777777"], "not in the test folder"),
    (lambda ids: ids + ids[:1], "duplicate"),
])
def test_refusals(prepared_with_bad_file, tmp_path, mutate, message):
    test, ids, bad, _ = prepared_with_bad_file
    good = [u for u in ids if u != bad]
    pred = write_preds(tmp_path / "pred.txt", mutate(good))
    with pytest.raises(KitError, match=message):
        build_lines(pred, test)


def test_label_out_of_range_refused(prepared_with_bad_file, tmp_path):
    test, ids, bad, _ = prepared_with_bad_file
    pred = write_preds(tmp_path / "pred.txt", [u for u in ids if u != bad], label=9)
    with pytest.raises(KitError, match="outside"):
        build_lines(pred, test)


def test_folder_changed_since_preparation_is_refused(prepared_with_bad_file, tmp_path):
    test, ids, bad, test_dir = prepared_with_bad_file
    shutil.copy(test_dir / f"{ids[0]}.wav", test_dir / "ADD2023_T3_E_55555555.wav")
    pred = write_preds(tmp_path / "pred.txt", [u for u in ids if u != bad])
    with pytest.raises(KitError, match="disagree"):
        build_lines(pred, test)


@pytest.mark.parametrize("killed_before", ["track3.txt", "track3.zip"])
def test_a_zip_beside_the_txt_always_holds_that_txt(tmp_path, monkeypatch, killed_before):
    """Two renames cannot be one: whichever of them a kill comes before, the folder must not hold
    a zip (what is uploaded) that disagrees with the .txt beside it; a re-run cleans up."""
    import core.atomic

    write_submission(["a.wav 1", "b.wav 2"], "track3", tmp_path)
    real_rename = core.atomic._rename

    def killed(src, dst):
        if dst.name == killed_before:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after it runs
        real_rename(src, dst)

    monkeypatch.setattr(core.atomic, "_rename", killed)
    with pytest.raises(KeyboardInterrupt):
        write_submission(["a.wav 7", "b.wav 7"], "track3", tmp_path)
    monkeypatch.setattr(core.atomic, "_rename", real_rename)
    txt, zpath = tmp_path / "track3.txt", tmp_path / "track3.zip"
    if zpath.exists():
        with zipfile.ZipFile(zpath) as zf:
            assert zf.read("track3.txt").decode() == txt.read_text()
    (tmp_path / ".track3.txt.left-by-a-kill.tmp").write_text("half")
    write_submission(["a.wav 7", "b.wav 7"], "track3", tmp_path)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.read("track3.txt").decode() == txt.read_text() == "a.wav 7\nb.wav 7\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track3.txt", "track3.zip"]


def test_submit_refuses_fusion_older_than_its_inputs(tiny_recipe, tmp_path):
    """`submit.write --fusion` on a copy of a finished experiment (cp -a keeps sizes and times, so
    the copy is current), then with the test split prepared again (a newer manifest), a member's
    scores written again (newer than the fusion's record) and its scored checkpoint replaced: each
    is refused, naming the file."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import ROOT

    work, _ = tiny_recipe
    exp = tmp_path / "exp"
    shutil.copytree(work / "exp", exp, symlinks=True, ignore=shutil.ignore_patterns("report"))

    def submit(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "submit.write", "--fusion", str(exp / "fusion"),
                               "--test_manifest", str(exp / "data" / "test"), "--name", "t",
                               "--out", str(tmp_path / "sub"), *extra], cwd=ROOT, capture_output=True, text=True)

    assert submit().returncode == 0
    # the fusion settings the recipe fused with pass; an edit of them since (the submit stage run
    # alone after changing fusion.yaml) is refused, naming the file and the changed setting
    config = tmp_path / "fusion.yaml"
    config.write_text((ROOT / "fusion" / "conf" / "fusion.yaml").read_text())
    assert submit("--config", str(config)).returncode == 0
    config.write_text(config.read_text().replace("submit_method: auto", "submit_method: score"))
    proc = submit("--config", str(config))
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and str(config) in err and "submit_method changed" in err, err
    scored = json.loads((exp / "rawnet2" / "scores" / "test" / ".options.json").read_text())
    recorded = Path(scored["options"]["checkpoint"]["path"])
    checkpoint = exp / "rawnet2" / "ckpt" / recorded.parent.name / recorded.name
    for path, message in ((exp / "data" / "test" / "manifest.tsv", "prepared again since"),
                          (exp / "rawnet2" / "scores" / "dev" / "logits.tsv", "changed since"),
                          (checkpoint, "not the checkpoint")):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        proc = submit()
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and str(path) in err and message in err, err
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert submit().returncode == 0
