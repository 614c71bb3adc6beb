"""Audio loading and data preparation on real-data-shaped folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.errors import KitError
from core.label_files import read_label_file
from core.prepared_split import PreparedSplit
from data_prep.audio_io import (
    AudioReadError,
    LoadOptions,
    normalise_level,
    read_audio,
    read_for_model,
    rms_dbfs,
    trim_edge_silence,
)
from data_prep.prepare import discover

from .conftest import run_module


def tone(sr: float, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [16000, 24000, 44100])
def test_any_rate_becomes_16k_with_the_same_tone(tmp_path, sr):
    path = tmp_path / "x.wav"
    sf.write(path, tone(sr), sr, subtype="PCM_16")
    x, orig, _ = read_for_model(path, LoadOptions(trim_silence=False, normalise="none"))
    assert orig == sr and abs(len(x) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 440) < 2


def test_stereo_is_averaged(tmp_path):
    left, right = tone(16000, freq=300), tone(16000, freq=500)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    x, _ = read_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6)


def test_corrupt_and_empty_files_raise_a_clear_error(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all" * 10)
    with pytest.raises(AudioReadError):
        read_audio(tmp_path / "bad.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioReadError, match="no samples"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioReadError, match="empty file"):
        read_audio(tmp_path / "zero.wav")


def test_trim_keeps_speech_and_never_empties():
    sr = 16000
    x = np.concatenate([np.zeros(sr), tone(sr, 0.5), np.zeros(sr // 2)]).astype(np.float32)
    y = trim_edge_silence(x, sr)
    assert 0.5 * sr <= len(y) <= 0.5 * sr + 2 * 320
    silent = np.zeros(sr, np.float32)
    assert len(trim_edge_silence(silent, sr)) == sr


def test_normalise_reaches_target_without_clipping():
    x = tone(16000) * 0.01
    y = normalise_level(x, "rms", -26.0)
    assert abs(rms_dbfs(y) + 26.0) < 1e-3
    loud = normalise_level(tone(16000), "rms", -1.0)
    assert np.abs(loud).max() <= 0.99 + 1e-6


def test_label_file_with_and_without_wav(tmp_path):
    f = tmp_path / "label.txt"
    f.write_text("ADD2023_T3_T_00000001.wav 3\nADD2023_T3_T_00000002 5\n\n")
    assert read_label_file(f) == {"ADD2023_T3_T_00000001": 3, "ADD2023_T3_T_00000002": 5}


@pytest.mark.parametrize("content, message", [
    ("a.wav 9\n", "outside"), ("a.wav x\n", "not an integer"), ("a.wav 1\na 2\n", "duplicate"),
    ("a.wav\n", "expected"), ("", "empty")])
def test_label_file_errors_name_file_and_line(tmp_path, content, message):
    f = tmp_path / "label.txt"
    f.write_text(content)
    with pytest.raises(KitError, match=message) as err:
        read_label_file(f)
    assert str(f) in str(err.value)


def make_official_layout(corpus: Path, dest: Path) -> Path:
    """The same audio, laid out as train/wav + train/label.txt with test labels beside it."""
    for split in ("train", "dev", "test"):
        shutil.copytree(corpus / f"ADD2023_Track3_{split}" / "wav", dest / split / "wav")
        if split != "test":
            shutil.copy(corpus / f"ADD2023_Track3_{split}" / "label.txt", dest / split / "label.txt")
    return dest


def manifest_rows(folder: Path) -> list[list[str]]:
    rows = [line.split("\t") for line in (folder / "manifest.tsv").read_text().splitlines()]
    return [r[:1] + r[2:] for r in rows]  # everything but the path


def test_other_layout_gives_the_same_manifests(tiny_corpus, tiny_prepared, tmp_path):
    root = make_official_layout(tiny_corpus, tmp_path / "add2023")
    found = discover(root)
    assert found["train"].wav_dir == root / "train" / "wav"
    assert found["test"].label_file is None
    out = tmp_path / "prep"
    run_module("data_prep.prepare", "--data_root", str(root), "--out", str(out))
    for split in ("train", "dev", "test"):
        assert manifest_rows(out / split) == manifest_rows(tiny_prepared / split)
        a, b = PreparedSplit(out / split), PreparedSplit(tiny_prepared / split)
        np.testing.assert_array_equal(a.audio(0), b.audio(0))


def test_a_root_without_test_audio_says_so(tmp_path, capsys):
    for split in ("train", "dev"):
        (tmp_path / split / "wav").mkdir(parents=True)
        (tmp_path / split / "label.txt").write_text("a.wav 0\n")
    found = discover(tmp_path)
    assert sorted(found) == ["dev", "train"]
    assert f"{tmp_path}: no test folder" in capsys.readouterr().out


def test_prepared_cache_matches_direct_loading(tiny_prepared):
    split = PreparedSplit(tiny_prepared / "dev")
    assert len(split) > 0 and split.readable.all()
    i = len(split) // 2
    direct, _, _ = read_for_model(split.paths[i])
    np.testing.assert_array_equal(split.audio(i), direct)


def test_bad_files_are_reported_not_dropped_silently(tiny_corpus, tmp_path):
    root = make_official_layout(tiny_corpus, tmp_path / "add2023")
    train_wavs = sorted((root / "train" / "wav").glob("*.wav"))
    train_wavs[0].write_bytes(b"RIFF garbage")
    test_wavs = sorted((root / "test" / "wav").glob("*.wav"))
    test_wavs[1].write_bytes(b"")
    sr = 24000
    sf.write(root / "test" / "wav" / "ADD2023_T3_E_99999999.wav",
             np.stack([tone(sr), tone(sr, freq=200)], axis=1), sr, subtype="PCM_16")
    out = tmp_path / "prep"
    proc = run_module("data_prep.prepare", "--data_root", str(root), "--out", str(out))
    assert f"unreadable: {train_wavs[0]}" in proc.stdout
    assert train_wavs[0].stem in (out / "train" / "report.txt").read_text()
    train = PreparedSplit(out / "train")
    assert train_wavs[0].stem not in train.ids
    test = PreparedSplit(out / "test")
    assert len(test) == len(test_wavs) + 1
    bad = test.ids.index(test_wavs[1].stem)
    assert not test.readable[bad] and test.num_samples(bad) == 0
    stereo = test.ids.index("ADD2023_T3_E_99999999")
    assert test.readable[stereo] and abs(test.num_samples(stereo) - 16000) <= 1


def weak_files(folder: Path) -> dict[str, bool]:
    """Files around the evidence limits (-84 dBFS peak, 0.1 s), and whether each must be flagged."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases = {
        "silent": (np.zeros(48000, np.float32), 16000, "PCM_16", True),
        # -120 dBFS noise in a float file: rms normalisation alone would lift it to speech level
        "floor_noise": ((1e-6 * rng.standard_normal(48000)).astype(np.float32), 16000, "FLOAT", True),
        # one step of 16-bit PCM: dither, not speech
        "dither": (rng.choice([-1, 0, 1], 48000).astype(np.float32) / 32768, 16000, "PCM_16", True),
        "one_sample": (np.array([0.5], np.float32), 16000, "PCM_16", True),
        "short": (tone(16000, seconds=0.09), 16000, "PCM_16", True),
        # 44.1 kHz: 0.1 s there is 1,600 samples at 16 kHz after resampling, so not flagged
        "long_enough": (tone(44100, seconds=0.1), 44100, "PCM_16", False),
        # three steps of 16-bit PCM peak: quiet, but a signal
        "quiet": ((3 / 32768) * np.sign(tone(16000, seconds=3.0)), 16000, "PCM_16", False),
        "speech_level": (tone(16000, seconds=3.0), 16000, "PCM_16", False),
    }
    for name, (x, sr, subtype, _) in cases.items():
        sf.write(folder / f"{name}.wav", x, sr, subtype=subtype)
    return {name: flagged for name, (*_, flagged) in cases.items()}


def test_files_with_little_or_no_signal_are_flagged(tmp_path):
    for name, flagged in weak_files(tmp_path).items():
        x, _, warning = read_for_model(tmp_path / f"{name}.wav")
        assert bool(warning) == flagged, (name, warning)
        assert len(x) > 0  # flagged, never dropped
    assert "no signal" in read_for_model(tmp_path / "silent.wav")[2]
    assert "under 0.1 s" in read_for_model(tmp_path / "one_sample.wav")[2]


def test_prepare_reports_weak_test_files_and_keeps_them(tmp_path):
    expected = weak_files(tmp_path / "wav")
    out = tmp_path / "o"
    proc = run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(tmp_path / "wav"), "--out", str(out))
    report = (out / "test" / "report.txt").read_text()
    for name, flagged in expected.items():
        assert (f"weak\t{name}\t" in report) == flagged, name
        assert (f"{name}.wav: " in proc.stdout) == flagged, name
    assert f"({sum(expected.values())} with little or no signal)" in report
    assert f"{sum(expected.values())} with little or no signal; report" in proc.stdout
    split = PreparedSplit(out / "test")
    assert sorted(split.ids) == sorted(expected) and split.readable.all()


def test_audio_that_is_not_read_is_reported(tmp_path):
    """A split is the .wav files directly in its folder (the submission lists their ids): a .flac
    beside them or a .wav in a subfolder is not read, and the prepare stage says so."""
    folder = tmp_path / "new_test"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        sf.write(folder / name, tone(16000), 16000, subtype="PCM_16")
    sf.write(folder / "d.flac", tone(16000), 16000, format="FLAC")
    (folder / "notes.txt").write_text("not audio")
    proc = run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(folder), "--out", str(tmp_path / "o"))
    assert "2 audio file(s) not read" in proc.stderr and str(folder) in proc.stderr
    assert PreparedSplit(tmp_path / "o" / "test").ids == ["a", "b"]


def test_missing_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "train" / "wav").mkdir(parents=True)
    proc = run_module("data_prep.prepare", "--data_root", str(tmp_path), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "error:" in proc.stderr
