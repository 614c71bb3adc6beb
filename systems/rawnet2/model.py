"""RawNet2 (Tak et al., "End-to-end anti-spoofing with RawNet2", ICASSP 2021; the ASVspoof 2021
LA baseline), used as a 7-way recogniser in seed 004 §3.3.

Fixed sinc filterbank (20 band-pass filters of 1025 taps, band edges mel-spaced over 0–8 kHz,
Hamming-windowed) → |·| → MaxPool(3) → BN → SELU; six residual blocks (20→20 without a leading BN,
20→20, 20→128 with a 1×1 shortcut, 128→128 ×3), each followed by filter-wise feature-map scaling
(s = sigmoid(Linear(avgpool(x))), x·s + s); BN → SELU → 3-layer GRU (1024) → last step → FC to the
embedding → FC to 7 logits. Input 64,600 samples (about 4 s).

Two deliberate differences from the 2021 reference code: its residual block feeds the raw input,
not the BN → LeakyReLU output, to the first convolution (a bug; we follow the paper), and its FC
after the GRU is 1024-wide where ours is the 256-d embedding of the fusion contract
(`embedding_dim: 1024` rebuilds the reference width, 17,626,535 parameters for 7 classes).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, System, classifier_layer


def mel_band_edges(n_filters: int, sample_rate: int) -> np.ndarray:
    """n_filters + 1 edges evenly spaced on the mel scale (2595·log10(1 + f/700)) over 0..sr/2."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    return to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_filters + 1))


def sinc_bandpass_bank(n_filters: int, taps: int, sample_rate: int) -> np.ndarray:
    """(n_filters, taps) Hamming-windowed ideal band-pass filters between consecutive mel edges."""
    edges = mel_band_edges(n_filters, sample_rate)
    t = np.arange(-(taps - 1) / 2, (taps - 1) / 2 + 1)
    bank = np.zeros((n_filters, taps))
    for i in range(n_filters):
        lo, hi = edges[i], edges[i + 1]
        ideal = 2 * hi / sample_rate * np.sinc(2 * hi * t / sample_rate) - \
            2 * lo / sample_rate * np.sinc(2 * lo * t / sample_rate)
        bank[i] = np.hamming(taps) * ideal
    return bank


class FixedSincConv(nn.Module):
    def __init__(self, n_filters: int = 20, taps: int = 1025, sample_rate: int = 16000):
        super().__init__()
        taps += 1 - taps % 2  # odd length, as the reference makes 1024 → 1025
        bank = torch.tensor(sinc_bandpass_bank(n_filters, taps, sample_rate), dtype=torch.float32)
        self.register_buffer("filters", bank.unsqueeze(1), persistent=False)  # (20, 1, 1025), not trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """'valid' cross-correlation of (B, 1, T) with the bank → (B, n_filters, T − taps + 1).

        Done by FFT: the filters are fixed and the raw input needs no gradient, and 1025-tap
        direct convolution would dominate the whole network's cost on CPU."""
        taps = self.filters.shape[-1]
        n = x.shape[-1] + taps - 1
        n_fft = 1 << (n - 1).bit_length()
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.fft.rfft(x.float(), n_fft) * torch.fft.rfft(self.filters.flip(-1).transpose(0, 1), n_fft)
            y = torch.fft.irfft(spec, n_fft)[..., taps - 1: x.shape[-1]]
        return y


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, first: bool = False):
        super().__init__()
        self.pre = nn.Identity() if first else nn.Sequential(nn.BatchNorm1d(in_ch), nn.LeakyReLU(0.3))
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, padding=1)
        self.mid = nn.Sequential(nn.BatchNorm1d(out_ch), nn.LeakyReLU(0.3))
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.pool = nn.MaxPool1d(3)
        self.fms = nn.Linear(out_ch, out_ch)  # filter-wise feature map scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.mid(self.conv1(self.pre(x))))
        out = self.pool(out + self.shortcut(x))  # (B, C, T/3)
        scale = torch.sigmoid(self.fms(out.mean(dim=-1))).unsqueeze(-1)
        return out * scale + scale


class RawNet2(System):
    def __init__(self, num_classes: int = NUM_CLASSES, embedding_dim: int = EMBEDDING_DIM,
                 input_samples: int = 64600, sinc_filters: int = 20, sinc_taps: int = 1025,
                 channels: tuple[int, int] = (20, 128), gru_hidden: int = 1024, gru_layers: int = 3,
                 classifier: str = "linear", cosine_scale: float = 30.0):
        super().__init__()
        self.input_samples = input_samples
        c1, c2 = channels
        self.sinc = FixedSincConv(sinc_filters, sinc_taps)
        self.sinc_post = nn.Sequential(nn.BatchNorm1d(sinc_filters), nn.SELU(inplace=True))
        self.blocks = nn.Sequential(ResidualBlock(sinc_filters, c1, first=True), ResidualBlock(c1, c1),
                                    ResidualBlock(c1, c2), ResidualBlock(c2, c2), ResidualBlock(c2, c2),
                                    ResidualBlock(c2, c2))
        self.pre_gru = nn.Sequential(nn.BatchNorm1d(c2), nn.SELU(inplace=True))
        self.gru = nn.GRU(c2, gru_hidden, num_layers=gru_layers, batch_first=True)
        self.embed = nn.Linear(gru_hidden, embedding_dim)
        self.classifier = classifier_layer(classifier, embedding_dim, num_classes, cosine_scale)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.sinc(wave.unsqueeze(1))  # (B, 20, 63576)
        x = self.sinc_post(F.max_pool1d(x.abs(), 3))  # (B, 20, 21192)
        x = self.pre_gru(self.blocks(x))  # (B, 128, 29)
        self.gru.flatten_parameters()
        out, _ = self.gru(x.transpose(1, 2))  # (B, 29, 1024)
        emb = self.embed(out[:, -1])  # (B, 256)
        return self.classifier(emb), emb
