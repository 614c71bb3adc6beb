"""The training augmentation's transmission channel (band-pass, EQ, clipping) applied per batch on
the training device.

On a GPU, loader workers that also filter every crop cannot feed a small network: the channel's
IIR filters are most of a worker's cost (EQ 3.5 ms, band-pass 1.2 ms a 4 s crop, README), against
LFCC-ResNet18's 0.11 ms a sample on an H200. With `augment.effects_on` resolving to `device`, a
worker reads the crop (or its cached codec variant), reverberates it and adds the noise (those need
the room responses and the noise bank), and draws the channel's parameters with `__call__`'s draws
(`MusanAugmenter.plan`); this module then applies them to the batch:

- band-pass and EQ: the product of their second-order sections' frequency responses on an FFT grid
  of at least twice the crop, which is sosfilt's output up to the filters' tail beyond the crop
  (negligible: these filters decay within tens of ms). audiomentations starts sosfilt in the
  steady state of the first sample x0; by linearity that is H(1)·x0 plus the zero-state response
  to x − x0, and chained sections compose the same way;
- clipping: the rows clipped at their percentiles int(p / 2) and 100 − int(p / 2), with NumPy's
  linear interpolation, as ClippingDistortion.

Which rows need what is read from the plan on the host, so the device never waits for a host sync
(`nonzero` on a device tensor would stall the queue of kernels every batch). tests/
test_device_effects.py checks the result against audiomentations and scipy on the same draws.
"""
from __future__ import annotations

import numpy as np
import torch

from data_prep.augment import IDENTITY_SECTION


def fft_length(n: int) -> int:
    """A power of two holding the crop twice: room for the filters' tails."""
    return 1 << int(np.ceil(np.log2(2 * n)))


def sos_response(sos: torch.Tensor, nfft: int) -> torch.Tensor:
    """Frequency responses (rows, nfft // 2 + 1) of cascades of second-order sections (rows, k, 6)
    [b0, b1, b2, a0, a1, a2], on rfft's grid, in complex128."""
    w = torch.arange(nfft // 2 + 1, device=sos.device, dtype=torch.float64) * (2 * np.pi / nfft)
    z1 = torch.polar(torch.ones_like(w), -w)  # z^-1 on the unit circle
    z2 = z1 * z1
    s = sos.to(torch.float64)[..., None]  # (rows, k, 6, 1)
    num = s[:, :, 0] + s[:, :, 1] * z1 + s[:, :, 2] * z2
    den = s[:, :, 3] + s[:, :, 4] * z1 + s[:, :, 5] * z2
    return torch.prod(num / den, dim=1)


def filter_rows(x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
    """Each row of x (rows, n) through its cascade of sections (rows, k, 6), as sosfilt started
    at the first sample's steady state."""
    n = x.shape[1]
    nfft = fft_length(n)
    x64 = x.to(torch.float64)
    x0 = x64[:, :1]
    response = sos_response(sos, nfft)
    zero_state = torch.fft.irfft(torch.fft.rfft(x64 - x0, nfft) * response, nfft)[:, :n]
    return (zero_state + response[:, :1].real * x0).float()


def clip_rows(x: torch.Tensor, percentile: torch.Tensor) -> torch.Tensor:
    """Each row clipped to its percentiles int(p / 2) and 100 − int(p / 2) (np.percentile, linear)."""
    lower = torch.floor(percentile.to(device=x.device, dtype=torch.float64) / 2)
    ordered = torch.sort(x, dim=1).values.to(torch.float64)
    last = x.shape[1] - 1

    def at(q: torch.Tensor) -> torch.Tensor:
        position = q / 100 * last
        below = torch.floor(position).long().clamp(0, last)
        above = (below + 1).clamp(max=last)
        frac = position - below
        lo, hi = ordered.gather(1, below[:, None])[:, 0], ordered.gather(1, above[:, None])[:, 0]
        return lo + (hi - lo) * frac

    low, high = at(lower).float(), at(100 - lower).float()
    return torch.minimum(torch.maximum(x, low[:, None]), high[:, None])


@torch.no_grad()
def apply_channel(wave: torch.Tensor, plan: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch `wave` (batch, n), on any device, through the collated channel plans of
    `MusanAugmenter.plan` (host tensors: which rows need what is decided there, without a sync)."""
    sos, clip = plan["sos"].cpu(), plan["clip_percentile"].cpu()
    filtered = torch.nonzero((sos != sos.new_tensor(IDENTITY_SECTION)).any(dim=2).any(dim=1)).flatten()
    clipped = torch.nonzero(clip >= 2).flatten()  # int(p / 2) = 0 clips nothing
    if not len(filtered) and not len(clipped):
        return wave
    with torch.autocast(device_type=wave.device.type, enabled=False):
        y = wave.float().clone()
        if len(filtered):
            rows = filtered.to(y.device, non_blocking=True)
            y[rows] = filter_rows(y[rows], sos[filtered].to(y.device, non_blocking=True))
        if len(clipped):
            rows = clipped.to(y.device, non_blocking=True)
            y[rows] = clip_rows(y[rows], clip[clipped].to(y.device, non_blocking=True))
        return y
