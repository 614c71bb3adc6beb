"""LFCC front-end in torch (batched, CPU or GPU).

    python -m data_prep.features lfcc --preset asvspoof2021 IN.wav OUT.npy

computes the LFCC of a file as read (no normalisation, no trimming; must be 16 kHz) and saves a
(frames, 60) float32 array.

Presets (shared/spec/systems.md):
  asvspoof2021  the ASVspoof 2021 LA baseline LFCC: 320-sample periodic Hamming window centred in a
                1024-point FFT, hop 160, centred STFT, pre-emphasis 0.97, power spectrum of the first
                256 bins (0–4 kHz), 20 linear triangular filters, log10(· + eps), orthonormal DCT-II,
                c0 replaced by the log frame energy, deltas x[t+1] − x[t−1] (edges replicated).
  res2net       our default (seed 000 §III-C: the fingerprint lives in high frequencies): the same
                over 0–8 kHz, 20 filters, 20 cepstra, no energy replacement, with deltas.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .common import fail, run_cli


@dataclass(frozen=True)
class LFCCConfig:
    sample_rate: int = 16000
    frame_length: int = 320
    hop_length: int = 160
    n_fft: int = 1024
    n_bins: int = 513
    f_max: float = 8000.0
    n_filters: int = 20
    n_ceps: int = 20
    pre_emphasis: float = 0.97
    energy_c0: bool = False
    with_deltas: bool = True


PRESETS = {
    "asvspoof2021": LFCCConfig(n_bins=256, f_max=4000.0, energy_c0=True),
    "res2net": LFCCConfig(),
}


def linear_filterbank(cfg: LFCCConfig) -> np.ndarray:
    """(n_bins, n_filters) triangular filters with edges evenly spaced over 0..f_max."""
    bin_freqs = np.arange(cfg.n_bins) * cfg.sample_rate / cfg.n_fft
    edges = np.linspace(0.0, cfg.f_max, cfg.n_filters + 2)
    fb = np.zeros((cfg.n_bins, cfg.n_filters))
    for m in range(cfg.n_filters):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (bin_freqs - lo) / (centre - lo)
        falling = (hi - bin_freqs) / (hi - centre)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    return fb


def dct_ortho_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) orthonormal DCT-II: y = x @ D equals scipy.fft.dct(x, type=2, norm='ortho')[:n_out]."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d


def delta(x: torch.Tensor) -> torch.Tensor:
    """x[t+1] − x[t−1] along the last axis with edge replication (the 2021 baseline has no /2)."""
    padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    return padded[..., 2:] - padded[..., :-2]


class LFCC(nn.Module):
    """(B, T) waveform → (B, 60, frames) LFCC (statics, deltas, delta-deltas)."""

    def __init__(self, preset: str | LFCCConfig = "res2net"):
        super().__init__()
        if isinstance(preset, str):
            if preset not in PRESETS:
                fail(f"unknown LFCC preset {preset!r}; valid: {sorted(PRESETS)}")
            preset = PRESETS[preset]
        self.cfg = cfg = preset
        self.register_buffer("window", torch.hamming_window(cfg.frame_length, periodic=True), persistent=False)
        self.register_buffer("fbank", torch.tensor(linear_filterbank(cfg), dtype=torch.float32), persistent=False)
        self.register_buffer("dct", torch.tensor(dct_ortho_matrix(cfg.n_filters, cfg.n_ceps), dtype=torch.float32),
                             persistent=False)
        self.eps = float(torch.finfo(torch.float32).eps)

    @property
    def out_dim(self) -> int:
        return self.cfg.n_ceps * (3 if self.cfg.with_deltas else 1)

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.cfg.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        wave = wave.float()
        emphasised = torch.cat([wave[:, :1], wave[:, 1:] - cfg.pre_emphasis * wave[:, :-1]], dim=1)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(emphasised, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.frame_length,
                              window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # (B, n_fft/2 + 1, frames)
        power = power[:, : cfg.n_bins, :].transpose(1, 2)  # (B, frames, n_bins)
        ceps = torch.log10(power @ self.fbank + self.eps) @ self.dct  # (B, frames, n_ceps)
        if cfg.energy_c0:
            energy = torch.log10(power.sum(dim=-1) / cfg.n_fft + self.eps)
            ceps = torch.cat([energy.unsqueeze(-1), ceps[..., 1:]], dim=-1)
        ceps = ceps.transpose(1, 2)  # (B, n_ceps, frames)
        if not cfg.with_deltas:
            return ceps
        d1 = delta(ceps)
        return torch.cat([ceps, d1, delta(d1)], dim=1)  # (B, 60, frames)


def lfcc_file(preset: str, wav_path: str, out_path: str) -> np.ndarray:
    from .audio_io import AudioReadError, read_audio

    try:
        x, sr = read_audio(wav_path)
    except AudioReadError as err:
        fail(f"{wav_path}: cannot read audio ({err})")
    extractor = LFCC(preset)
    if sr != extractor.cfg.sample_rate:
        fail(f"{wav_path}: sample rate {sr} Hz, the {preset} LFCC expects {extractor.cfg.sample_rate} Hz")
    with torch.no_grad():
        feats = extractor(torch.from_numpy(x)[None])[0].T.numpy().astype(np.float32)  # (frames, 60)
    np.save(out_path, feats)
    return feats


def main() -> None:
    ap = argparse.ArgumentParser(description="Compute a front-end feature for one file.")
    sub = ap.add_subparsers(dest="feature", required=True)
    lf = sub.add_parser("lfcc", help="LFCC, saved as a (frames, 60) .npy")
    lf.add_argument("--preset", default="res2net", choices=sorted(PRESETS))
    lf.add_argument("wav")
    lf.add_argument("out")
    args = ap.parse_args()
    feats = lfcc_file(args.preset, args.wav, args.out)
    print(f"{args.out}: {feats.shape[0]} frames x {feats.shape[1]} dims ({args.preset})")


if __name__ == "__main__":
    run_cli(main)
