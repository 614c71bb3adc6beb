"""LFCC against a literal numpy re-derivation of the presets as documented, and against torchaudio.

The asvspoof2021 preset is also checked against the ASVspoof 2021 baseline's own output in
test_lfcc_reference.py; the re-derivation here only guards the documented recipe.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.fft
import soundfile as sf
import torch
import torchaudio

from systems.common.lfcc import LFCC, PRESETS, LFCCConfig, linear_filterbank

from .conftest import run_module


def numpy_lfcc(x: np.ndarray, n_bins: int, f_max: float, energy_c0: bool, pad_mode: str = "reflect",
               stretched_axis: bool = False) -> np.ndarray:
    """Frame by frame, as the docstring reads; returns (frames, 60).

    pad_mode: how the signal ends are padded for the centred frames ("reflect" or "constant" = zeros).
    stretched_axis: the filters see bin k at f_max·k/(n_bins−1) (the 2021 baseline's axis) instead of k·sr/nfft.
    """
    sr, flen, hop, nfft, nfilt = 16000, 320, 160, 1024, 20
    x = x.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    padded = np.pad(y, nfft // 2, mode=pad_mode)
    n = np.arange(flen)
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * n / flen)  # periodic
    window = np.zeros(nfft)
    window[(nfft - flen) // 2:(nfft - flen) // 2 + flen] = hamming
    n_frames = 1 + len(y) // hop
    eps = np.finfo(np.float32).eps
    edges = [f_max * i / (nfilt + 1) for i in range(nfilt + 2)]
    out = []
    for t in range(n_frames):
        frame = padded[t * hop:t * hop + nfft] * window
        power = np.abs(np.fft.rfft(frame)) ** 2
        power = power[:n_bins]
        energies = []
        for m in range(nfilt):
            total = 0.0
            for k in range(n_bins):
                f = f_max * k / (n_bins - 1) if stretched_axis else k * sr / nfft
                if edges[m] <= f <= edges[m + 1]:
                    w = (f - edges[m]) / (edges[m + 1] - edges[m])
                elif edges[m + 1] < f <= edges[m + 2]:
                    w = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
                else:
                    w = 0.0
                total += w * power[k]
            energies.append(total)
        ceps = scipy.fft.dct(np.log10(np.array(energies) + eps), type=2, norm="ortho")
        if energy_c0:
            ceps[0] = np.log10(power.sum() / nfft + eps)
        out.append(ceps)
    c = np.array(out)  # (frames, 20)

    def d(a):
        p = np.concatenate([a[:1], a, a[-1:]])
        return p[2:] - p[:-2]

    return np.concatenate([c, d(c), d(d(c))], axis=1)


@pytest.fixture(scope="module")
def speechy():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t)) +
            0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("preset, n_bins, f_max, energy, pad_mode, stretched", [
    ("asvspoof2021", 256, 4000.0, True, "constant", True),
    ("res2net", 513, 8000.0, False, "reflect", False)])
def test_matches_numpy_rederivation(speechy, preset, n_bins, f_max, energy, pad_mode, stretched):
    ours = LFCC(preset)(torch.from_numpy(speechy)[None])[0].T.numpy()
    ref = numpy_lfcc(speechy, n_bins, f_max, energy, pad_mode, stretched)
    assert ours.shape == ref.shape == (1 + len(speechy) // 160, 60)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n_bins, f_max", [(513, 8000.0), (257, 4000.0)])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_statics_match_torchaudio_lfcc(speechy, n_bins, f_max, pad_mode):
    """Plain statics (true bin frequencies, no energy c0, no deltas) against torchaudio.transforms.LFCC.

    torchaudio takes the natural log (+1e-6) where we take log10 (+float32 eps), so ours is scaled by ln 10; the
    signal is loud enough that the two floors do not matter. Pre-emphasis is applied to torchaudio's input.
    """
    cfg = LFCCConfig(n_bins=n_bins, f_max=f_max, with_deltas=False, pad_mode=pad_mode)
    x = torch.from_numpy(speechy)[None]
    ours = LFCC(cfg)(x)[0].double() * math.log(10.0)  # (20, frames)
    emphasised = torch.cat([x[:, :1], x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
    ta = torchaudio.transforms.LFCC(
        sample_rate=16000, n_filter=20, f_min=0.0, f_max=f_max, n_lfcc=20, dct_type=2, norm="ortho", log_lf=True,
        speckwargs={"n_fft": 1024, "win_length": 320, "hop_length": 160, "window_fn": torch.hamming_window,
                    "power": 2.0, "center": True, "pad_mode": pad_mode})
    ref = ta(emphasised)[0].double()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-3


def test_stretched_axis_is_the_fft_axis_over_the_full_band():
    """Over all 513 bins up to sr/2 the baseline's stretched axis is the true one (only the 256-bin cut differs)."""
    full = PRESETS["res2net"]
    np.testing.assert_allclose(linear_filterbank(dataclasses.replace(full, filter_grid="stretched")),
                               linear_filterbank(full), atol=1e-12)
    half = PRESETS["asvspoof2021"]
    assert np.abs(linear_filterbank(half) - linear_filterbank(dataclasses.replace(half, filter_grid="fft"))).max() > 1e-3


@pytest.mark.parametrize("preset", ["res2net", "asvspoof2021"])
def test_batched_equals_single(speechy, preset):
    lfcc = LFCC(preset)
    batch = torch.stack([torch.from_numpy(speechy), torch.from_numpy(speechy[::-1].copy())])
    out = lfcc(batch)
    np.testing.assert_allclose(out[1].numpy(), lfcc(batch[1:2])[0].numpy(), atol=1e-5)


def test_cli_writes_frames_by_60(speechy, tmp_path):
    sf.write(tmp_path / "a.wav", speechy, 16000, subtype="FLOAT")
    run_module("systems.common.lfcc", "lfcc", "--preset", "asvspoof2021", str(tmp_path / "a.wav"),
               str(tmp_path / "a.npy"))
    feats = np.load(tmp_path / "a.npy")
    assert feats.shape == (51, 60) and feats.dtype == np.float32
    with torch.no_grad():
        direct = LFCC("asvspoof2021")(torch.from_numpy(speechy)[None])[0].T.numpy()
    np.testing.assert_allclose(feats, direct, atol=1e-6)
    sf.write(tmp_path / "b.wav", speechy, 24000, subtype="FLOAT")
    proc = run_module("systems.common.lfcc", "lfcc", str(tmp_path / "b.wav"), str(tmp_path / "b.npy"), check=False)
    assert proc.returncode == 2 and "expects 16000" in proc.stderr
