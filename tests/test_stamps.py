"""Stage stamps: a stage is current only with the same options and every output it listed still
there at its size; a copied folder stays current; stamps written before outputs were listed still
read. The fusion stage re-runs when one of its outputs is gone, and when its code changed."""
from __future__ import annotations

import json
import shutil
import sys

from core import stamps
from core.stamps import (
    STAMP_NAME,
    current_or_restamped,
    options_digest,
    output_files,
    source_digest,
    stage_is_current,
    write_stamp,
)
from fusion import run as fusion_run

from .test_submit_choice import write_noisy_exports

OPTIONS = {"k": 3, "codecs": ["mp3"]}


def stage(tmp_path):
    out = tmp_path / "stage"
    out.mkdir()
    (out / "a.npy").write_bytes(b"x" * 100)
    (out / "b.txt").write_text("hello\n")
    write_stamp(out, OPTIONS, outputs=output_files(out))
    return out


def test_current_until_an_output_is_lost_or_cut(tmp_path):
    out = stage(tmp_path)
    assert output_files(out) == ["a.npy", "b.txt"]  # the stamp is not an output
    assert stage_is_current(out, OPTIONS) and not stage_is_current(out, {**OPTIONS, "k": 4})
    (out / "a.npy").write_bytes(b"x" * 99)
    assert not stage_is_current(out, OPTIONS)
    (out / "a.npy").write_bytes(b"x" * 100)
    assert stage_is_current(out, OPTIONS)
    (out / "b.txt").unlink()
    assert not stage_is_current(out, OPTIONS)


def test_a_copied_folder_stays_current(tmp_path):
    out = stage(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, copy_function=shutil.copyfile)  # new modification times
    assert stage_is_current(copy, OPTIONS)


def test_a_stamp_in_an_earlier_form_counts_and_is_rewritten(tmp_path):
    out = stage(tmp_path)  # stamped with OPTIONS: here the earlier form
    now = {**OPTIONS, "path": "relative"}
    assert not stage_is_current(out, now)
    assert current_or_restamped(out, now, OPTIONS, restamp=False) and not stage_is_current(out, now)
    assert not current_or_restamped(out, now, {**OPTIONS, "k": 4})
    assert current_or_restamped(out, now, OPTIONS)
    assert stage_is_current(out, now) and not stage_is_current(out, OPTIONS)
    (out / "a.npy").write_bytes(b"x" * 99)  # the outputs the stamp listed still count
    assert not current_or_restamped(out, now, OPTIONS)


def test_a_stamp_without_outputs_checks_the_options_alone(tmp_path):
    (tmp_path / STAMP_NAME).write_text(json.dumps({"digest": options_digest(OPTIONS), "options": OPTIONS}))
    assert stage_is_current(tmp_path, OPTIONS)


def test_fusion_reruns_when_its_summary_is_gone(tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a",), 0)

    def fuse() -> str:
        monkeypatch.setattr(sys, "argv", ["fusion.run", "--exp", str(exp), "--systems", "a"])
        fusion_run.main()
        return capsys.readouterr().out

    assert "submission method" in fuse()
    assert "up to date, skipped" in fuse()
    (exp / "fusion" / "summary.json").unlink()
    again = fuse()
    assert "up to date, skipped" not in again and "submission method" in again
    assert (exp / "fusion" / "summary.json").is_file()
    # a method's predictions, in its own folder, count as outputs too: lost or truncated, re-fused
    method = json.loads((exp / "fusion" / "summary.json").read_text())["submit_method"]
    pred = exp / "fusion" / method.replace(":", "__") / "test_pred.txt"
    whole = pred.read_text()
    pred.write_text(whole[: len(whole) // 2])
    assert "submission method" in fuse() and pred.read_text() == whole
    pred.unlink()
    assert "submission method" in fuse() and pred.read_text() == whole
    # a folder a killed fusion left is removed even when the fusion is current
    (exp / ".fusion.partial").mkdir()
    assert "up to date, skipped" in fuse() and not (exp / ".fusion.partial").exists()


def test_source_digest_follows_python_source_only(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(stamps, "KIT_ROOT", tmp_path)
    first = source_digest("pkg")
    (pkg / "notes.md").write_text("not code\n")
    (pkg / "sub" / "c.pyc").write_bytes(b"\0")
    assert source_digest("pkg") == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    changed = source_digest("pkg")
    assert changed != first
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same bytes, another module
    assert source_digest("pkg") not in (first, changed)


def test_fusion_reruns_when_fused_by_other_code(tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a",), 0)
    monkeypatch.setattr(sys, "argv", ["fusion.run", "--exp", str(exp), "--systems", "a"])
    fusion_run.main()
    stamp = json.loads((exp / "fusion" / STAMP_NAME).read_text())
    assert stamp["options"]["code"] == source_digest("fusion", "core")
    # the folder as another version of the kit would have left it: same options, other code
    stamp["options"]["code"] = "0" * 64
    stamp["digest"] = options_digest(stamp["options"])
    (exp / "fusion" / STAMP_NAME).write_text(json.dumps(stamp))
    capsys.readouterr()
    fusion_run.main()
    again = capsys.readouterr().out
    assert "up to date, skipped" not in again and "submission method" in again
    fusion_run.main()
    assert "up to date, skipped" in capsys.readouterr().out


def test_prepare_reruns_after_a_rename_or_a_replacement_that_keeps_its_time(tmp_path):
    """The prepare stamp's file count and newest time miss both; the listing digest sees them. A
    stamp written before the digest existed is still current (an upgrade redoes nothing)."""
    import os

    import numpy as np
    import soundfile as sf

    from .conftest import run_module

    wavs = tmp_path / "new_test"
    wavs.mkdir()
    for i, f in enumerate((220, 330, 440)):
        sf.write(wavs / f"u{i}.wav", 0.3 * np.sin(2 * np.pi * f * np.arange(16000) / 16000), 16000, subtype="PCM_16")
    out = tmp_path / "data"

    def prepare():
        return run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(wavs), "--out", str(out)).stdout

    prepare()
    assert "up to date" in prepare()
    (wavs / "u2.wav").rename(wavs / "u9.wav")
    assert "up to date" not in prepare()
    from core.prepared_split import PreparedSplit

    assert PreparedSplit(out / "test").ids == ["u0", "u1", "u9"]
    # `cp -p` (or rsync -a, tar x) of another recording onto u0: same count, same newest time
    newest = max(p.stat().st_mtime_ns for p in wavs.iterdir())
    sf.write(wavs / "u0.wav", 0.3 * np.sin(2 * np.pi * 550 * np.arange(24000) / 16000), 16000, subtype="PCM_16")
    os.utime(wavs / "u0.wav", ns=(newest, newest - 1))
    assert "up to date" not in prepare()
    # a stamp from before the digest: judged by its options alone, as it was
    stamp = json.loads((out / "test" / STAMP_NAME).read_text())
    del stamp["inputs"]
    (out / "test" / STAMP_NAME).write_text(json.dumps(stamp))
    (wavs / "u1.wav").rename(wavs / "u8.wav")
    assert "up to date" in prepare()


def test_augmented_dev_is_redone_after_a_noise_file_is_renamed(tiny_prepared, tiny_corpus, tmp_path):
    from data_prep.dev_augment import augment_split

    bank = tmp_path / "musan"
    shutil.copytree(tiny_corpus / "musan_demo", bank)
    clean = tiny_prepared / ("dev_clean" if (tiny_prepared / "dev_clean").is_dir() else "dev")
    target = tmp_path / "dev"
    assert not augment_split(clean, target, bank)["skipped"]
    assert augment_split(clean, target, bank)["skipped"]
    noise = sorted((bank / "noise").rglob("*.wav"))[0]
    noise.rename(noise.with_name("zz-" + noise.name))
    assert not augment_split(clean, target, bank)["skipped"]


def test_augmented_dev_is_redone_after_its_clean_split_is_prepared_from_other_audio(tiny_prepared, tiny_corpus,
                                                                                    tmp_path):
    """A dev file replaced with its time kept changes the clean split's listing, not its options:
    the augmented copy follows the listing too."""
    from data_prep.dev_augment import augment_split

    source = tiny_prepared / ("dev_clean" if (tiny_prepared / "dev_clean").is_dir() else "dev")
    clean = tmp_path / "dev_clean"
    shutil.copytree(source, clean)
    target = tmp_path / "dev"
    bank = tiny_corpus / "musan_demo"
    assert not augment_split(clean, target, bank)["skipped"]
    assert augment_split(clean, target, bank)["skipped"]
    stamp = json.loads((clean / STAMP_NAME).read_text())
    assert stamp.get("inputs")
    stamp["inputs"] = "0" * 64  # as the prepare stage leaves it after such a replacement
    (clean / STAMP_NAME).write_text(json.dumps(stamp))
    assert not augment_split(clean, target, bank)["skipped"]
    assert augment_split(clean, target, bank)["skipped"]


def test_folder_listing_of_a_single_file_follows_that_file(tmp_path):
    """A pretrained checkpoint may be one file: its listing is that file's, not an empty folder's,
    and it changes when the file is replaced in place (a new modification time)."""
    import os

    from core.stamps import folder_listing

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"one")
    (tmp_path / "empty").mkdir()
    before = folder_listing(weights)
    assert before != folder_listing(tmp_path / "empty")
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert folder_listing(weights) != before


def test_a_current_prepare_sweeps_what_a_killed_rebuild_left(tiny_corpus, tiny_prepared, tmp_path):
    """A rebuild killed mid-way leaves its staging folder (`.<name>.partial`, or `.<name>.old`
    while swapping) beside a split that is still current; the next run skips the split and would
    never build it again to remove them, so it removes them then (the audio cache of a real test
    split is gigabytes)."""
    import shutil

    from core.prepared_split import CODEC_FOLDER

    from .conftest import run_module

    data = tmp_path / "data"
    shutil.copytree(tiny_prepared, data, symlinks=True)
    left = [data / ".train.partial", data / ".test.old", data / "train" / f".{CODEC_FOLDER}.partial"]
    for folder in left:
        folder.mkdir()
        (folder / "audio.f32").write_bytes(b"half")
    out = run_module("data_prep.prepare", "--data_root", str(tiny_corpus), "--out", str(data)).stdout
    assert all(f"[prepare] {split}: up to date, skipped" in out for split in ("train", "test")), out
    assert [folder for folder in left if folder.exists()] == []
