"""LFCC against a literal numpy re-derivation written from shared/spec/systems.md."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import soundfile as sf
import torch

from data_prep.features import LFCC

from .conftest import run_module


def numpy_lfcc(x: np.ndarray, n_bins: int, f_max: float, energy_c0: bool) -> np.ndarray:
    """Frame by frame, as the spec reads; returns (frames, 60)."""
    sr, flen, hop, nfft, nfilt = 16000, 320, 160, 1024, 20
    x = x.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    padded = np.pad(y, nfft // 2, mode="reflect")
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
                f = k * sr / nfft
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


@pytest.mark.parametrize("preset, n_bins, f_max, energy", [("asvspoof2021", 256, 4000.0, True),
                                                           ("res2net", 513, 8000.0, False)])
def test_matches_numpy_rederivation(speechy, preset, n_bins, f_max, energy):
    ours = LFCC(preset)(torch.from_numpy(speechy)[None])[0].T.numpy()
    ref = numpy_lfcc(speechy, n_bins, f_max, energy)
    assert ours.shape == ref.shape == (1 + len(speechy) // 160, 60)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_batched_equals_single(speechy):
    lfcc = LFCC("res2net")
    batch = torch.stack([torch.from_numpy(speechy), torch.from_numpy(speechy[::-1].copy())])
    out = lfcc(batch)
    np.testing.assert_allclose(out[1].numpy(), lfcc(batch[1:2])[0].numpy(), atol=1e-5)


def test_cli_writes_frames_by_60(speechy, tmp_path):
    sf.write(tmp_path / "a.wav", speechy, 16000, subtype="FLOAT")
    run_module("data_prep.features", "lfcc", "--preset", "asvspoof2021", str(tmp_path / "a.wav"),
               str(tmp_path / "a.npy"))
    feats = np.load(tmp_path / "a.npy")
    assert feats.shape == (51, 60) and feats.dtype == np.float32
    sf.write(tmp_path / "b.wav", speechy, 24000, subtype="FLOAT")
    proc = run_module("data_prep.features", "lfcc", str(tmp_path / "b.wav"), str(tmp_path / "b.npy"), check=False)
    assert proc.returncode == 2 and "expects 16000" in proc.stderr
