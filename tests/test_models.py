"""The systems' architectures: parameter counts of the references, shapes, forward/backward at the
real-data input size (batch 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from systems.lfcc_resnet18.model import LFCCResNet18
from systems.rawnet2.model import FixedSincConv, RawNet2, ResidualBlock, mel_band_edges
from systems.se_res2net50.model import SERes2Net50


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_backward(model, samples: int):
    model.train()
    wave = torch.randn(2, samples)
    logits, emb = model(wave)
    assert logits.shape == (2, 7) and emb.shape == (2, 256)
    F.cross_entropy(logits, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_rawnet2_reference_parameter_count():
    assert n_params(RawNet2(embedding_dim=1024)) == 17_626_535
    # ours replaces the 1024→1024 FC and 1024→7 head by 1024→256 and 256→7
    ours = 17_626_535 - (1024 * 1024 + 1024) - (1024 * 7 + 7) + (1024 * 256 + 256) + (256 * 7 + 7)
    assert n_params(RawNet2()) == ours == 16_833_959


def test_rawnet2_forward_backward_real_size():
    model = RawNet2()
    forward_backward(model, 64600)
    assert model.input_samples == 64600


def test_sinc_bank_is_mel_spaced_band_pass_and_fft_conv_is_exact():
    edges = mel_band_edges(20, 16000)
    assert edges[0] == pytest.approx(0.0) and edges[-1] == pytest.approx(8000.0)
    mel = 2595 * np.log10(1 + edges / 700)
    assert np.allclose(np.diff(mel), np.diff(mel)[0])
    sinc = FixedSincConv()
    assert sinc.filters.shape == (20, 1, 1025)
    response = np.abs(np.fft.rfft(sinc.filters[:, 0].numpy(), 16000))  # 1 Hz bins
    for i in range(20):
        assert edges[i] - 50 <= np.argmax(response[i]) <= edges[i + 1] + 50
    x = torch.randn(2, 1, 5000)
    np.testing.assert_allclose(sinc(x).numpy(), F.conv1d(x, sinc.filters).numpy(), atol=1e-5)
    assert not any(p.requires_grad for p in sinc.parameters())


def test_residual_block_uses_the_bn_activation_path():
    """The 2021 reference feeds the raw input to conv1 (a bug); ours must depend on the leading BN."""
    torch.manual_seed(0)
    block = ResidualBlock(20, 20).eval()
    x = torch.randn(2, 20, 90)
    before = block(x)
    with torch.no_grad():
        block.pre[0].bias.add_(1.0)
    assert not torch.allclose(before, block(x))


def test_se_res2net50_count_and_stage_shapes():
    model = SERes2Net50()
    assert n_params(model) == 924_387
    maps = model.trunk(torch.randn(2, model.input_samples))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 60, 400), (32, 60, 400), (64, 30, 200), (128, 15, 100),
                                                 (256, 8, 50)]


def test_se_res2net50_forward_backward_real_size():
    model = SERes2Net50()
    assert model.input_samples == 63840  # 400 LFCC frames at hop 160
    forward_backward(model, model.input_samples)


def test_lfcc_resnet18_forward_backward_real_size():
    forward_backward(LFCCResNet18(), 63840)


def test_lfcc_segment_systems_take_400_frames():
    model = SERes2Net50()
    assert model.input_samples == 63840  # 400 LFCC frames at hop 160, centred STFT
    assert model.features(torch.zeros(1, model.input_samples)).shape == (1, 1, 60, 400)
