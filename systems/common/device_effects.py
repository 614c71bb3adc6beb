"""The training augmentation's signal effects applied per batch on the training device.

On a GPU the loader's CPU workers cannot keep up with a small network when they also reverberate,
mix and filter every crop (1.6–2 ms a crop against LFCC-ResNet18's 0.11 ms a sample on an H200,
README). With `augment.effects_on` resolving to `device`, a worker only reads: the crop (or its
cached codec variant) and the noise excerpt, and draws the effects' parameters with the same rng
draws as the loader path (`MusanAugmenter.plan`). This module then applies them to the batch in
the loader path's order (reverberation, noise at the SNR, band-pass and EQ, clipping):

- reverberation: FFT convolution with the augmenter's room responses, cut to the crop and scaled
  back to the input's power, as `MusanAugmenter.reverberate` (scipy's oaconvolve);
- noise: the gain that puts the excerpt `snr_db` below the (reverberant) speech, as `mix_at_snr`;
- band-pass and EQ: the product of their sections' frequency responses on an FFT grid at least
  twice the crop, which is sosfilt's output up to the filters' tail beyond the crop (negligible:
  these filters decay within tens of ms). audiomentations starts sosfilt in the steady state of
  the first sample x0; by linearity that is H(1)·x0 plus the zero-state response to x − x0, and
  chained sections compose the same way;
- clipping: the batch rows clipped at their percentiles of `percentile_threshold / 2` and
  100 − that, with NumPy's linear interpolation, as ClippingDistortion.

tests/test_device_effects.py checks each against scipy, audiomentations and NumPy on the same
drawn parameters.
"""
from __future__ import annotations

import numpy as np
import torch


def fft_length(n: int, tail: int) -> int:
    """A power of two holding n samples plus a tail of at least max(tail, n)."""
    return 1 << int(np.ceil(np.log2(n + max(tail, n))))


def sos_response(sos: torch.Tensor, nfft: int) -> torch.Tensor:
    """Frequency responses (rows, nfft // 2 + 1) of cascades of second-order sections (rows, k, 6)
    [b0, b1, b2, a0, a1, a2], on rfft's grid, in complex128."""
    w = torch.arange(nfft // 2 + 1, device=sos.device, dtype=torch.float64) * (2 * np.pi / nfft)
    z1 = torch.exp(-1j * w.to(torch.complex128))  # z^-1 on the unit circle
    z2 = z1 * z1
    s = sos.to(torch.float64).to(torch.complex128)[..., None]  # (rows, k, 6, 1)
    num = s[:, :, 0] + s[:, :, 1] * z1 + s[:, :, 2] * z2
    den = s[:, :, 3] + s[:, :, 4] * z1 + s[:, :, 5] * z2
    return torch.prod(num / den, dim=1)


def mean_power(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x.to(torch.float64) ** 2, dim=1)


class DeviceEffects:
    """`effects(wave, plan) -> wave` for a batch of crops (batch, n) and the collated plans of
    `MusanAugmenter.plan`, on whatever device the tensors are."""

    def __init__(self, rirs: list[np.ndarray], n: int, device: torch.device | str):
        self.n = n
        longest = max((len(h) for h in rirs), default=1)
        self.nfft = fft_length(n, longest)
        bank = np.zeros((max(1, len(rirs)), longest), np.float32)
        for i, h in enumerate(rirs):
            bank[i, :len(h)] = h
        self.rir_spectra = torch.fft.rfft(torch.from_numpy(bank).to(device), self.nfft)

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            y = wave.float().clone()
            rows = torch.nonzero(plan["rir"] >= 0).flatten()
            if len(rows):
                y[rows] = self.reverberate(y[rows], plan["rir"][rows])
            rows = torch.nonzero(torch.isfinite(plan["snr_db"])).flatten()
            if len(rows):
                y[rows] = self.add_at_snr(y[rows], plan["additive"][rows].float(), plan["snr_db"][rows])
            identity = plan["sos"].new_tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
            rows = torch.nonzero((plan["sos"] != identity).any(dim=2).any(dim=1)).flatten()
            if len(rows):
                y[rows] = self.filter(y[rows], plan["sos"][rows])
            rows = torch.nonzero(plan["clip_percentile"] >= 0).flatten()
            if len(rows):
                y[rows] = self.clip(y[rows], plan["clip_percentile"][rows])
            return y

    def reverberate(self, x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        y = torch.fft.irfft(torch.fft.rfft(x, self.nfft) * self.rir_spectra[which], self.nfft)[:, :x.shape[1]]
        p_in, p_out = mean_power(x), mean_power(y)
        scale = torch.where(p_out > 0, torch.sqrt(p_in / p_out.clamp_min(1e-300)), torch.ones_like(p_out))
        return (y.to(torch.float64) * scale[:, None]).float()

    @staticmethod
    def add_at_snr(x: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        p_s, p_n = mean_power(x), mean_power(noise)
        audible = (p_s > 0) & (p_n > 0)
        gain = torch.sqrt(p_s / (p_n.clamp_min(1e-300) * 10 ** (snr_db.to(torch.float64) / 10)))
        gain = torch.where(audible, gain, torch.zeros_like(gain))
        return (x.to(torch.float64) + gain[:, None] * noise.to(torch.float64)).float()

    def filter(self, x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        x64 = x.to(torch.float64)
        x0 = x64[:, :1]
        response = sos_response(sos, self.nfft)
        zero_state = torch.fft.irfft(torch.fft.rfft(x64 - x0, self.nfft) * response, self.nfft)[:, :n]
        return (zero_state + response[:, :1].real * x0).float()

    @staticmethod
    def clip(x: torch.Tensor, percentile: torch.Tensor) -> torch.Tensor:
        lower = torch.floor(percentile.to(torch.float64) / 2)  # int(p / 2) of a non-negative p
        ordered = torch.sort(x, dim=1).values.to(torch.float64)

        def at(q: torch.Tensor) -> torch.Tensor:  # np.percentile's default (linear) of each row
            position = q / 100 * (x.shape[1] - 1)
            below = torch.floor(position).long().clamp(0, x.shape[1] - 1)
            above = (below + 1).clamp(max=x.shape[1] - 1)
            frac = position - below
            lo, hi = ordered.gather(1, below[:, None])[:, 0], ordered.gather(1, above[:, None])[:, 0]
            return lo + (hi - lo) * frac

        low, high = at(lower).float(), at(100 - lower).float()
        return torch.minimum(torch.maximum(x, low[:, None]), high[:, None])
