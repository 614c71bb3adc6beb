"""MUSAN-style augmentation reaches the SNR it draws; codec round trips keep length."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.errors import KitError
from data_prep.augment import AugmentConfig, MusanAugmenter, codec_roundtrip, mix_at_snr, power


def speech_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.1 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture
def musan_folder(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    for kind, count in (("noise", 3), ("music", 2), ("speech", 8)):
        (tmp_path / kind).mkdir()
        for i in range(count):
            n = int(16000 * rng.uniform(0.7, 3.0))  # some shorter than the utterance: tiling path
            sf.write(tmp_path / kind / f"{kind}{i}.wav", speech_like(n, 10 + i) * (i + 1), 16000, subtype="FLOAT")
    return tmp_path


def achieved_snr(clean: np.ndarray, mixed: np.ndarray) -> float:
    return 10 * np.log10(power(clean) / power(mixed - clean))


def test_mix_at_snr_is_exact():
    s, n = speech_like(16000, 0), np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert abs(achieved_snr(s, mix_at_snr(s, n, 12.5)) - 12.5) < 1e-3


@pytest.mark.parametrize("condition", ["noise", "music", "babble"])
def test_each_condition_within_half_a_db(musan_folder, condition):
    aug = MusanAugmenter(AugmentConfig(musan=str(musan_folder), snr_db=(20.0, 20.0)))
    clean = speech_like(2 * 16000, 5)
    for seed in range(5):
        mixed = aug.add(clean.copy(), condition, np.random.default_rng(seed))
        assert abs(achieved_snr(clean, mixed) - 20.0) < 0.5


def test_snr_drawn_in_range_and_conditions_mixed(musan_folder):
    aug = MusanAugmenter(AugmentConfig(musan=str(musan_folder), p_noise=0.3, p_music=0.3, p_babble=0.3))
    clean = speech_like(16000, 2)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(40):
        mixed, cond = aug(clean.copy(), rng)
        seen.add(cond)
        if cond != "clean":
            assert 15.0 - 0.5 <= achieved_snr(clean, mixed) <= 30.0 + 0.5
    assert seen == {"clean", "noise", "music", "babble"}


def test_bad_config_and_folder_are_refused(tmp_path):
    with pytest.raises(KitError, match="must lie in"):
        AugmentConfig(p_noise=0.8, p_music=0.5)
    with pytest.raises(KitError, match="no audio under"):
        MusanAugmenter(AugmentConfig(musan=str(tmp_path)))


@pytest.mark.parametrize("codec", ["mp3", "aac", "opus", "gsm", "g722", "amr-nb"])
def test_codec_roundtrip(codec):
    x = speech_like(16000, 3)
    y = codec_roundtrip(x, 16000, codec, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.allclose(x, y)
    assert np.corrcoef(np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y)))[0, 1] > 0.5
    # the same draw gives the same bytes (sox dithers from the clock unless told to repeat)
    np.testing.assert_array_equal(y, codec_roundtrip(x, 16000, codec, np.random.default_rng(0)))
