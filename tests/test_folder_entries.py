"""What a folder of audio holds, as the kit lists it: links to nothing, folders named like audio,
linked folders and names that are not UTF-8. The test stage, the submission and `predict` agree
on what is an utterance, and none is left out without a word."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from core.errors import KitError
from core.label_files import split_wavs
from submit.predict import list_inputs
from submit.write import checked_test_split

from .conftest import run_module


def write_tone(path):
    sf.write(path, (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000)


def test_a_link_to_nothing_is_a_test_file_and_a_folder_is_not(tmp_path):
    wav = tmp_path / "wav"
    wav.mkdir()
    for name in ("T_1.wav", "T_2.wav"):
        write_tone(wav / name)
    (wav / "T_3.wav").symlink_to(tmp_path / "nowhere.wav")
    (wav / "folder.wav").mkdir()
    assert [p.name for p in split_wavs(wav)] == ["T_1.wav", "T_2.wav", "T_3.wav"]

    out = tmp_path / "data"
    run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(wav), "--out", str(out))
    test = checked_test_split(out / "test")  # the submission's listing agrees with the prepared split
    assert test.ids == ["T_1", "T_2", "T_3"] and list(test.readable) == [True, True, False]
    assert "no such file" in (out / "test" / "manifest.tsv").read_text()


def test_a_name_that_is_not_utf8_is_one_line(tmp_path):
    wav = tmp_path / "wav"
    wav.mkdir()
    write_tone(wav / "T_1.wav")
    shutil.copyfile(os.fsencode(wav / "T_1.wav"), os.fsencode(wav) + b"/bad\xffname.wav")
    with pytest.raises(KitError, match="not UTF-8"):
        split_wavs(wav)
    proc = run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(wav), "--out", str(tmp_path / "d"),
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ") and "not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(KitError, match="not UTF-8"):
        list_inputs([str(wav)])


def test_predict_follows_linked_folders_and_keeps_links_to_nothing(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write_tone(real / "a.wav")
    top = tmp_path / "top"
    top.mkdir()
    write_tone(top / "b.flac")
    (top / "linked").symlink_to(real)
    (top / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    (top / "again").symlink_to(top)  # a link back up is walked once
    assert list_inputs([str(top)]) == [top / "b.flac", top / "broken.wav", top / "linked" / "a.wav"]
