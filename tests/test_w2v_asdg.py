"""W2V-ASDG's training pieces: gradient reversal, real-only discriminator, triplet loss, local attention."""
from __future__ import annotations

import pytest
import torch

from data_prep.augment import DOMAINS, domain_index
from systems.w2v_asdg.model import W2VASDG, GradientReversal, LocalTransformerBlock, batch_hard_triplet, grl_coefficient

from .conftest import TINY_SSL


def test_gradient_reversal_flips_and_scales_exactly():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64)
    y = GradientReversal.apply(x, 0.37)
    torch.testing.assert_close(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.37 * w)
    assert grl_coefficient(0.0) == 0.0 and grl_coefficient(1.0) == pytest.approx(0.99991, abs=1e-4)
    assert grl_coefficient(0.2) < grl_coefficient(0.5) < grl_coefficient(0.8)


def test_triplet_loss_zero_when_separated_positive_otherwise():
    labels = torch.tensor([0, 0, 0, 3, 3, 5, 5])
    centres = torch.eye(8)[[0, 0, 0, 3, 3, 5, 5]]
    assert batch_hard_triplet(centres + 1e-3 * torch.randn(7, 8), labels, 0.1).item() == 0.0
    mixed = torch.eye(8)[[0, 3, 5, 0, 3, 0, 5]]
    assert batch_hard_triplet(mixed, labels, 0.1).item() > 0.0
    assert batch_hard_triplet(torch.randn(3, 8), torch.tensor([1, 2, 3]), 0.1).item() == 0.0


def test_local_attention_ignores_far_tokens():
    torch.manual_seed(0)
    block = LocalTransformerBlock(dim=16, heads=4, window=2).eval()
    x = torch.randn(1, 12, 16)
    base = block(x)
    far = x.clone()
    far[0, 9] += 5.0 * torch.randn(16)  # 9 − 3 = 6 > window (random: LayerNorm removes a constant shift)
    torch.testing.assert_close(block(far)[0, 3], base[0, 3])
    near = x.clone()
    near[0, 5] += 5.0 * torch.randn(16)  # 5 − 3 = 2 ≤ window
    assert not torch.allclose(block(near)[0, 3], base[0, 3])


def test_discriminator_sees_only_real_and_frontend_stays_frozen():
    torch.manual_seed(0)
    model = W2VASDG(random_init=dict(TINY_SSL), input_samples=16000)
    model.train()
    seen = []
    model.discriminator.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    wave = torch.randn(5, 16000)
    labels = torch.tensor([0, 2, 0, 4, 6])
    domains = torch.tensor([domain_index(c) for c in ("clean", "noise", "music+codec", "babble", "codec")])
    loss, logits = model.training_loss(wave, labels, domains, progress=0.5)
    assert seen == [2] and logits.shape == (5, 7)
    loss.backward()
    assert all(p.grad is None for p in model.frontend.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters())
    seen.clear()
    model.training_loss(wave, torch.tensor([1, 2, 3, 4, 6]), domains, progress=0.5)
    assert seen == []
    assert DOMAINS[domains[2]] == "codec"


def test_feature_cache_holds_the_epochs_own_crops(tiny_prepared, tiny_corpus, tmp_path):
    import numpy as np

    from core.prepared_split import PreparedSplit
    from data_prep.augment import AugmentConfig, MusanAugmenter
    from systems.common.engine import TrainCrops
    from systems.w2v_asdg.cache import CachedFeatures

    torch.manual_seed(0)
    model = W2VASDG(random_init=dict(TINY_SSL), input_samples=16000, feature_cache_copies=2).eval()
    import shutil

    bank = tmp_path / "musan"
    shutil.copytree(tiny_corpus / "musan_demo", bank)
    augmenter = MusanAugmenter(AugmentConfig(musan=str(bank), p_codec=0.3))
    crops = TrainCrops(PreparedSplit(tiny_prepared / "train"), 16000, augmenter, seed=7)
    cached = model.wrap_training_data(crops, tmp_path / "cache", torch.device("cpu"))
    assert isinstance(cached, CachedFeatures) and len(cached) == len(crops)
    for epoch in (1, 2, 3):
        cached.epoch = crops.epoch = epoch
        crops.epoch = (epoch - 1) % 2 + 1
        wave, label, domain = crops[4]
        feats, clabel, cdomain = cached[4]
        assert (clabel, cdomain) == (label, domain)
        np.testing.assert_allclose(feats.numpy(), model.ssl_features(wave[None])[0].numpy(), atol=2e-2, rtol=1e-2)
    stamp = (tmp_path / "cache" / ".options.json").stat().st_mtime_ns
    model.wrap_training_data(crops, tmp_path / "cache", torch.device("cpu"))
    assert (tmp_path / "cache" / ".options.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # the stamp names the manifest from the system's folder: a copy of the experiment (its data and
    # the system, times kept) finds the cache current
    exp = tmp_path / "exp"
    shutil.copytree(tiny_prepared / "train", exp / "data" / "train")
    model.wrap_training_data(TrainCrops(PreparedSplit(exp / "data" / "train"), 16000, augmenter, seed=7),
                             exp / "sys" / "cache", torch.device("cpu"))
    shutil.copytree(exp, tmp_path / "copy")
    copied = tmp_path / "copy" / "sys" / "cache" / ".options.json"
    before = copied.stat().st_mtime_ns
    model.wrap_training_data(TrainCrops(PreparedSplit(tmp_path / "copy" / "data" / "train"), 16000, augmenter, seed=7),
                             tmp_path / "copy" / "sys" / "cache", torch.device("cpu"))
    assert copied.stat().st_mtime_ns == before
    # a renamed noise file changes what the copies drew: the cache is rebuilt, not reused
    noise = sorted((bank / "noise").rglob("*.wav"))[0]
    noise.rename(noise.with_name("zz-" + noise.name))
    renamed = TrainCrops(PreparedSplit(tiny_prepared / "train"), 16000,
                         MusanAugmenter(AugmentConfig(musan=str(bank), p_codec=0.3)), seed=7)
    model.wrap_training_data(renamed, tmp_path / "cache", torch.device("cpu"))
    assert (tmp_path / "cache" / ".options.json").stat().st_mtime_ns != stamp
    loss, logits = model.training_loss(feats[None], torch.tensor([label]), torch.tensor([domain]), 0.1)
    assert torch.isfinite(loss) and logits.shape == (1, 7)
