"""LFCC front-end in torch (batched, CPU or GPU).

    python -m systems.common.lfcc lfcc --preset asvspoof2021 IN.wav OUT.npy

computes the LFCC of a file as read (no normalisation, no trimming; must be 16 kHz) and saves a
(frames, 60) float32 array.

Presets (shared/spec/systems.md):
  asvspoof2021  the ASVspoof 2021 LA baseline front-end, i.e. sandbox/util_frontend.py LFCC as configured
                in project/baseline_LA/model.py of github.com/asvspoof-challenge/2021 (LA/Baseline-LFCC-LCNN):
                LFCC(320, 160, 1024, 16000, 20, with_energy=True, max_freq=0.5). Pre-emphasis 0.97 (first
                sample kept); 320-sample periodic Hamming window centred in a 1024-point FFT, hop 160; centred
                frames with ZERO padding at both ends (torch.stft pad_mode="constant"), so the first and last
                frames see half-empty windows; power spectrum of the first int(0.5 · 513) = 256 bins
                (0–3984.375 Hz); 20 triangular filters with edges evenly spaced over 0–4000 Hz but evaluated
                on the baseline's stretched axis linspace(0, 4000, 256), not on the bins' true frequencies;
                log10(· + float32 eps); orthonormal DCT-II; c0 replaced by log10(Σ power / 1024 + eps) over
                the same 256 bins; deltas x[t+1] − x[t−1] (edges replicated, no /2), delta-deltas likewise.
                Matches the baseline's own output to ~5e-6 (tests/fixtures/lfcc_reference/).
  res2net       our default (seed 000 §III-C: the fingerprint lives in high frequencies): the same chain over
                0–8 kHz (all 513 bins, where the two frequency axes coincide), 20 filters, 20 cepstra, no
                energy replacement, with deltas, and REFLECT padding at the ends. Frozen: trained models were
                fed exactly this, so new options default to its behaviour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.errors import ArgumentParser, fail, run_cli


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
    # how torch.stft pads the signal ends for the centred frames: "reflect" (ours) or "constant" (zeros, as the
    # 2021 baseline does, so the first and last frames see partly empty windows)
    pad_mode: str = "reflect"
    # where the filterbank thinks the kept bins lie: "fft" = their true frequencies k·sr/n_fft; "stretched" =
    # n_bins points evenly spaced over 0..f_max inclusive, the 2021 baseline's axis (see linear_filterbank)
    filter_grid: str = "fft"


PRESETS = {
    "asvspoof2021": LFCCConfig(n_bins=256, f_max=4000.0, energy_c0=True, pad_mode="constant",
                               filter_grid="stretched"),
    "res2net": LFCCConfig(),
}


def linear_filterbank(cfg: LFCCConfig) -> np.ndarray:
    """(n_bins, n_filters) triangular filters with edges evenly spaced over 0..f_max.

    With filter_grid="stretched" the filters are evaluated on linspace(0, f_max, n_bins) instead of the bins'
    true frequencies. The 2021 baseline builds its axis that way while keeping only int(0.5 · 513) = 256 bins,
    whose true top frequency is 3984.375 Hz, not 4000 Hz; every filter therefore sits about 0.4 % lower in true
    frequency than its nominal edges. Over the full band (n_bins = n_fft/2 + 1, f_max = sr/2) the two axes agree.
    """
    if cfg.filter_grid == "stretched":
        bin_freqs = np.linspace(0.0, cfg.f_max, cfg.n_bins)
    elif cfg.filter_grid == "fft":
        bin_freqs = np.arange(cfg.n_bins) * cfg.sample_rate / cfg.n_fft
    else:
        fail(f"unknown LFCC filter_grid {cfg.filter_grid!r}; valid: 'fft', 'stretched'")
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
                              window=self.window, center=True, pad_mode=cfg.pad_mode, return_complex=True)
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
    from data_prep.audio_io import AudioReadError, read_audio

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
    ap = ArgumentParser(description="Compute a front-end feature for one file.")
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
