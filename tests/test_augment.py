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


def test_float32_mixing_is_the_float64_mix():
    """add_at_snr (training) against mix_at_snr (float64 powers and sum, the demo corpus's): within
    float32 rounding, and silent noise or speech leaves the speech as it was."""
    from data_prep.augment import add_at_snr

    s, n = speech_like(4 * 16000, 1), np.random.default_rng(1).standard_normal(4 * 16000).astype(np.float32)
    for snr in (-5.0, 5.0, 30.0):
        got, want = add_at_snr(s, n, snr), mix_at_snr(s, n, snr)
        assert got.dtype == np.float32 and np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))
    assert np.array_equal(add_at_snr(s, np.zeros_like(n), 5.0), s)
    assert np.array_equal(add_at_snr(np.zeros_like(s), n, 5.0), np.zeros_like(s))


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


# ---------------------------------------------------------------- in-process codecs (data_prep/codecs.py)

from data_prep.codecs import CODEC_SPECS, codec_round_trip  # noqa: E402

SR = 16000
NARROW_BAND = ("amr-nb", "gsm")  # 8 kHz codecs: nothing above 4 kHz can pass


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def best_lag_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = 2000) -> float:
    """Pearson correlation of x and y after shifting y by the codec delay that scipy's
    cross-correlation finds (edges left out: encoders fade in and out)."""
    from scipy.signal import correlate, correlation_lags

    lags = correlation_lags(len(y), len(x))
    c = correlate(y, x)
    keep = (lags >= 0) & (lags <= max_lag)
    lag = int(lags[keep][np.argmax(c[keep])])
    a, b = x[2000:len(x) - 2000 - lag], y[2000 + lag:len(y) - 2000]
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("codec", list(CODEC_SPECS))
@pytest.mark.parametrize("signal", ["silent", "near_silent", "one_sample", "ten_ms", "dc"])
def test_every_codec_takes_degenerate_input(codec, signal):
    x = {"silent": np.zeros(SR, np.float32),
         "near_silent": np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 1e-6,
         "one_sample": np.array([0.1], np.float32),
         "ten_ms": tone(440, 0.01),
         "dc": np.full(SR // 2, 0.2, np.float32)}[signal]
    y = codec_round_trip(x, SR, codec)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    if signal == "silent":
        assert np.abs(y).max() < 1e-3  # a codec adds no sound of its own


@pytest.mark.parametrize("codec", list(CODEC_SPECS))
def test_codec_physics_tones(codec):
    """A 440 Hz tone survives every codec at its lowest bit rate; a 6 kHz tone is above the 4 kHz
    Nyquist limit of the 8 kHz codecs and must vanish there."""
    lowest = min(CODEC_SPECS[codec][3])
    y = codec_round_trip(tone(440), SR, codec, lowest)
    assert y.shape == (SR,) and np.isfinite(y).all()
    assert best_lag_correlation(tone(440), y) > 0.9
    high = codec_round_trip(tone(6000), SR, codec, max(CODEC_SPECS[codec][3]))
    ratio = power(high[2000:-2000]) / power(tone(6000))
    if codec in NARROW_BAND:
        assert ratio < 1e-3
    elif codec == "g722":  # wide band (50 Hz – 7 kHz)
        assert ratio > 0.5


def test_codec_round_trip_refuses_unknown_codec():
    with pytest.raises(KitError, match="unknown codec"):
        codec_round_trip(tone(440), SR, "speex")


def test_an_encoder_missing_from_pyav_is_one_line(monkeypatch):
    """A PyAV build whose FFmpeg lacks an encoder (PyAV 18.1.1 dropped AMR-NB's) is named, with
    the way to the pinned build, not raised from deep in a worker."""
    import data_prep.codecs as codecs

    monkeypatch.setitem(codecs.CODEC_SPECS, "amr-nb", ("libno_such_encoder", "amr", 8000, (12.2,)))
    with pytest.raises(KitError, match=r"encoder libno_such_encoder: not in PyAV [0-9.]+'s FFmpeg; install"):
        codec_round_trip(tone(440), SR, "amr-nb", 12.2)


# ---------------------------------------------------------------- reverberation and channel effects

def schroeder_rt60(h: np.ndarray, sr: int) -> float:
    """RT60 from the Schroeder backward-integrated energy decay curve, fitted between −5 and −25 dB
    (T20, ISO 3382) — a measurement independent of how the response was made."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    idx = np.flatnonzero((edc_db <= -5) & (edc_db >= -25))
    slope = np.polyfit(idx / sr, edc_db[idx], 1)[0]
    return -60.0 / slope


def test_synthetic_rooms_have_the_configured_rt60():
    from data_prep.augment import synthetic_rirs

    rirs = synthetic_rirs(5, (0.3, 0.9), SR, seed=0)
    for h, rt60 in zip(rirs, np.linspace(0.3, 0.9, 5)):
        assert abs(schroeder_rt60(h, SR) - rt60) / rt60 < 0.15
    assert all(np.array_equal(a, b) for a, b in zip(rirs, synthetic_rirs(5, (0.3, 0.9), SR, seed=0)))


def test_reverb_and_channel_keep_length_level_and_are_seeded():
    aug = MusanAugmenter(AugmentConfig(p_noise=0, p_music=0, p_babble=0, p_reverb=1.0, p_bandpass=1.0,
                                       p_eq=1.0, p_clipping=1.0))
    x = speech_like(2 * SR, 4)
    y, cond = aug(x.copy(), np.random.default_rng(3))
    assert cond == "reverb+channel" and y.shape == x.shape and np.isfinite(y).all()
    assert not np.allclose(x, y)
    y2, _ = aug(x.copy(), np.random.default_rng(3))
    np.testing.assert_array_equal(y, y2)
    # reverberation alone keeps the level that preparation normalised to
    rev = MusanAugmenter(AugmentConfig(p_noise=0, p_music=0, p_babble=0, p_reverb=1.0))
    r, cond = rev(x.copy(), np.random.default_rng(0))
    assert cond == "reverb" and abs(10 * np.log10(power(r) / power(x))) < 0.01


def test_condition_domains():
    from data_prep.augment import DOMAINS, domain_index

    assert [DOMAINS[domain_index(c)] for c in ("clean", "reverb", "reverb+noise+channel", "codec+babble",
                                                "music+codec", "channel")] == \
        ["clean", "clean", "noise", "codec", "codec", "clean"]


def test_config_is_strict_about_new_keys():
    with pytest.raises(KitError, match="p_reverb"):
        AugmentConfig(p_reverb=1.5)
    with pytest.raises(KitError, match="codec_variants"):
        AugmentConfig(codec_variants=0)
    with pytest.raises(KitError, match="rt60_s"):
        AugmentConfig(rt60_s=(0.0, 0.5))


# ---------------------------------------------------------------- bounded memory with a large bank

RSS_BOUND_MB = 100

_RSS_PROBE = r"""
import sys, numpy as np
from data_prep.augment import AugmentConfig, MusanAugmenter

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
aug = MusanAugmenter(AugmentConfig(musan=sys.argv[1], p_noise=0.3, p_music=0.3, p_babble=0.4, snr_db=(5, 20)))
x = (0.05 * np.random.default_rng(0).standard_normal(4 * 16000)).astype(np.float32)
for j in range(4):  # warm-up: imports and audiomentations' set-up (babble has none to warm)
    aug.add(x, ("noise", "music")[j % 2], np.random.default_rng(j))
base = vm("VmRSS")
seen = set()
for j in range(6, 206):
    seen.add(aug(x, np.random.default_rng(j))[1])
print(vm("VmHWM") - base, ",".join(sorted(seen)))
"""


def test_worker_memory_stays_bounded_with_a_large_bank(tmp_path):
    """A worker augmenting 200 samples of 4 s from a bank of ~580 MB of audio (as float32) grows
    by less than RSS_BOUND_MB = 100 MB: sources are read as excerpts, never cached whole (the old
    babble cache held every speech file: with real MUSAN ~13 GiB per worker)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    one = tmp_path / "one.wav"
    # 10 minutes of 16-bit noise at 16 kHz (19 MB); the bank's files are hard links to it, so the
    # test writes 19 MB, while a reader that caches whole files holds 38 MB of float32 per name
    sf.write(one, (0.1 * rng.standard_normal(600 * SR)).astype(np.float32), SR, subtype="PCM_16")
    for kind, count in (("noise", 2), ("music", 2), ("speech", 11)):
        (tmp_path / "bank" / kind).mkdir(parents=True)
        for i in range(count):
            os_link(one, tmp_path / "bank" / kind / f"{kind}{i}.wav")
    proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(tmp_path / "bank")], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth_mb, conditions = proc.stdout.split()
    assert conditions == "babble,music,noise"  # every kind of source was read
    assert float(growth_mb) < RSS_BOUND_MB


def os_link(src: Path, dst: Path) -> None:
    import os

    os.link(src, dst)


def test_reverberation_is_the_linear_convolution_cut_to_the_input():
    """The remembered-spectrum FFT against scipy's oaconvolve in float64 (the oracle), the level
    scaled back to the input's, for two crop lengths (two FFT sizes sharing the cache)."""
    from scipy.signal import oaconvolve

    aug = MusanAugmenter(AugmentConfig(p_noise=0, p_music=0, p_babble=0, p_reverb=1.0))
    for n, seed in ((2 * SR, 0), (3 * SR + 17, 1), (2 * SR, 2)):
        x = speech_like(n, seed)
        y = aug.reverberate(x, np.random.default_rng(seed))
        h = aug.rirs[int(np.random.default_rng(seed).integers(len(aug.rirs)))]
        want = oaconvolve(x.astype(np.float64), h.astype(np.float64))[:n]
        want *= np.sqrt(power(x) / power(want))
        assert y.shape == x.shape and np.max(np.abs(y - want)) <= 1e-5 * np.max(np.abs(want))
