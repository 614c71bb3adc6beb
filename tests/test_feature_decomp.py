"""Feature-decomposition system (seed 002): shapes, the ResNet18 parameter count, where each loss
term's gradient goes, feature blending and shuffle, the pseudo-label codec cache and speed change,
and training through the engine (resume equals an uninterrupted run)."""
from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest
import torch

from core.prepared_split import PreparedSplit
from data_prep.codecs import codec_round_trip
from systems.common.config import load_config
from systems.common.engine import train
from systems.feature_decomp.model import (
    FeatureDecomposition,
    blend_features,
    cosine_contrastive,
    focal_loss,
    shuffle_pairs,
)
from systems.feature_decomp.pseudo_labels import (
    COMPRESSIONS,
    NUM_COMPRESSIONS,
    NUM_SPEEDS,
    SPEED_FACTORS,
    PseudoLabelCrops,
    build_codec_cache,
    change_speed,
    pack,
    unpack,
)

from .conftest import ROOT
from .test_engine import assert_same_weights, latest_weights

TINY_MODEL = dict(blocks=(1, 1, 1, 1), channels=(8, 16, 16, 32), input_samples=8000)


def tiny_model(**kw) -> FeatureDecomposition:
    torch.manual_seed(0)
    return FeatureDecomposition(**dict(TINY_MODEL, **kw))


def test_shapes():
    model = FeatureDecomposition()
    # seed 002 §III-A: window 512, hop 187 on a 3 s clip gives a 257 × 257 spectrogram
    assert model.spectrogram(torch.zeros(1, 48000)).shape == (1, 1, 257, 257)
    small = tiny_model().eval()
    with torch.no_grad():
        logits, emb = small(torch.randn(3, small.input_samples))
        hidden, synth, content = small.streams(torch.randn(3, small.input_samples))
    assert logits.shape == (3, 7) and emb.shape == (3, 256)
    assert synth.shape == content.shape == (3, 32) and hidden.shape[1] == 16


def conv(k, cin, cout):
    return k * k * cin * cout


def bn(c):
    return 2 * c


def basic_block(cin, cout, downsample):
    n = conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
    return n + (conv(1, cin, cout) + bn(cout) if downsample else 0)


def test_backbone_has_the_resnet18_parameter_count():
    """ResNet18 without its fc layer, counted from the architecture (He et al., 2016), plus the
    duplicated fourth block; torchvision's resnet18 has 11,689,512 parameters with a 3-channel
    input and a 1000-way fc (512·1000 + 1000), i.e. 11,170,240 with one input channel and no fc."""
    stem = conv(7, 1, 64) + bn(64)
    layers = [basic_block(64, 64, False) * 2,
              basic_block(64, 128, True) + basic_block(128, 128, False),
              basic_block(128, 256, True) + basic_block(256, 256, False),
              basic_block(256, 512, True) + basic_block(512, 512, False)]
    resnet18 = stem + sum(layers)
    assert resnet18 == 11_689_512 - (512 * 1000 + 1000) - conv(7, 2, 64)
    model = FeatureDecomposition()

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(model.main) + count(model.synth_block) == pytest.approx(resnet18, rel=0.01)
    assert count(model.content_block) == pytest.approx(layers[3], rel=0.01)
    backbone = count(model.main) + count(model.synth_block) + count(model.content_block)
    assert backbone == pytest.approx(resnet18 + layers[3], rel=0.01)


# which parts each term of eq. 14 must train, and which it must leave alone
PARTS = ("main", "synth_block", "content_block", "synth_classifier", "compression_head", "speed_head", "head")
REACHES = {
    "cls_s": {"main", "synth_block", "synth_classifier"},
    "con_s": {"main", "synth_block"},
    "cls_c": {"main", "content_block", "compression_head", "speed_head"},
    "adv": {"content_block"},  # seed 002 §III-D.2: other modules frozen for this term
    "cls": {"main", "synth_block", "content_block", "head"},
    "cls_aug": {"main", "synth_block", "content_block", "head"},
    "con_cls": {"main", "synth_block", "content_block"},
}


@pytest.mark.parametrize("term", sorted(REACHES))
def test_each_loss_term_reaches_only_its_parts(term):
    model = tiny_model(blend_noise=1.0).train()
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(8, model.input_samples, generator=g) * 0.1
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 6])
    pseudo = torch.tensor([pack(c, s) for c, s in [(0, 5), (3, 0), (9, 15), (1, 2), (4, 8), (2, 1), (7, 7), (5, 3)]])
    terms, _ = model.loss_terms(wave, labels, pseudo)
    assert set(terms) == set(REACHES)
    terms[term].backward()
    for part in PARTS:
        grads = [p.grad for p in getattr(model, part).parameters()]
        reached = any(gr is not None and gr.abs().sum() > 0 for gr in grads)
        assert reached == (part in REACHES[term]), f"{term} -> {part}: reached={reached}"


def test_adversarial_pass_leaves_running_statistics_to_the_main_pass():
    model = tiny_model().train()
    wave = torch.randn(4, model.input_samples) * 0.1
    labels, pseudo = torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.long)
    model.loss_terms(wave, labels, pseudo)
    after_terms = {k: v.clone() for k, v in model.content_block.state_dict().items()}
    reference = tiny_model().train()
    reference.streams(wave)  # one forward: one update of the running statistics
    for k, v in reference.content_block.state_dict().items():
        assert torch.equal(v, after_terms[k]), k


def test_training_loss_is_the_weighted_sum_of_eq_14():
    model = tiny_model(loss_weights=(1.0, 0.0, 0.0, 0.0), blend_noise=0.0)
    wave, labels = torch.randn(4, model.input_samples) * 0.1, torch.tensor([0, 1, 1, 2])
    torch.manual_seed(5)
    loss, logits = model.training_loss(wave, labels, torch.zeros(4, dtype=torch.long), 0.0)
    torch.manual_seed(5)
    terms, _ = model.loss_terms(wave, labels, torch.zeros(4, dtype=torch.long))
    assert logits.shape == (4, 7)
    assert loss.item() == pytest.approx((terms["cls"] + terms["cls_aug"]).item(), rel=1e-5)


def test_contrastive_and_focal_losses_hand_worked():
    # two samples, orthogonal features: same label → (1/4)·2·(1 − 0) = 0.5; different → max(0 − 0.4, 0) = 0
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(cosine_contrastive(z, torch.tensor([1, 1]), 0.4)) == pytest.approx(0.5)
    assert float(cosine_contrastive(z, torch.tensor([1, 2]), 0.4)) == pytest.approx(0.0)
    # parallel features, different labels: (1/4)·2·(1 − 0.4)
    z = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert float(cosine_contrastive(z, torch.tensor([0, 1]), 0.4)) == pytest.approx(0.3)
    # p_t = 3/4: −0.25 · (1/4)² · ln(3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert float(focal_loss(logits, torch.tensor([1]), 0.25, 2.0)) == pytest.approx(-0.25 / 16 * math.log(0.75))


def test_blending_keeps_per_class_statistics_within_bounds():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 5])
    # class c: features with means near 10·c and stds 1..3, so a cross-class partner would show
    z = torch.randn(10, 64, generator=g) * (1 + 2 * torch.rand(10, 1, generator=g)) + 10.0 * labels[:, None]
    mu, sd = z.mean(1), z.std(1)
    for _ in range(20):
        out = blend_features(z, labels, noise_level=0.0)
        for c in labels.unique():
            m = labels == c
            assert out[m].mean(1).min() >= mu[m].min() - 1e-4 and out[m].mean(1).max() <= mu[m].max() + 1e-4
            assert out[m].std(1).min() >= sd[m].min() - 1e-4 and out[m].std(1).max() <= sd[m].max() + 1e-4
            # r ≥ 0.5: a blended sample keeps at least half of its own mean
            own = mu[m]
            assert torch.all((out[m].mean(1) - own).abs() <= 0.5 * (mu[m].max() - mu[m].min()) + 1e-4)
        # a class of one: blended with itself, unchanged
        assert torch.allclose(out[9], z[9], atol=1e-4)
    # with noise (η = 10): multiplicative noise of mean 1 and additive noise of mean 0, so the
    # average over draws keeps each class's mean within its bounds (up to sampling error)
    torch.manual_seed(0)
    draws = torch.stack([blend_features(z, labels, noise_level=10.0) for _ in range(400)]).mean(0)
    for c in labels.unique():
        m = labels == c
        spread = 0.1 * z[m].abs().mean() + 0.5
        assert draws[m].mean(1).min() >= mu[m].min() - spread and draws[m].mean(1).max() <= mu[m].max() + spread
    noisy = blend_features(z, labels, noise_level=10.0)
    assert not torch.allclose(noisy, blend_features(z, labels, noise_level=0.0))


def test_shuffled_pair_takes_the_class_of_its_synthesizer_features():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 3])
    ids = torch.arange(9, dtype=torch.float32)[:, None]
    content, synth = ids.repeat(1, 3), 100 + ids.repeat(1, 2)  # every row identifiable by its values
    torch.manual_seed(3)
    pairs, pair_labels = shuffle_pairs(content, synth, labels)
    synth_of = (pairs[:, 3] - 100).long()
    content_of = pairs[:, 0].long()
    assert torch.equal(pair_labels, labels[synth_of])
    assert sorted(content_of.tolist()) == list(range(9)) and not torch.equal(content_of, torch.arange(9))


def test_speed_change_scales_length_and_frequency():
    sr, f0 = 16000, 500.0
    x = np.sin(2 * np.pi * f0 * np.arange(sr) / sr).astype(np.float32)
    assert len(SPEED_FACTORS) == 16 and min(SPEED_FACTORS) == 0.5 and max(SPEED_FACTORS) == 2.0
    for speed in (0, 5, 7, 15):
        factor = SPEED_FACTORS[speed]
        y = change_speed(x, speed)
        assert abs(len(y) - sr / factor) <= 1
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        peak_hz = np.argmax(spectrum) * sr / len(y)
        assert peak_hz == pytest.approx(f0 * factor, abs=2 * sr / len(y))


def test_pack_round_trips():
    c = torch.arange(NUM_COMPRESSIONS).repeat_interleave(NUM_SPEEDS)
    s = torch.arange(NUM_SPEEDS).repeat(NUM_COMPRESSIONS)
    packed = torch.tensor([pack(int(a), int(b)) for a, b in zip(c, s)])
    assert len(packed.unique()) == NUM_COMPRESSIONS * NUM_SPEEDS
    assert all(torch.equal(a, b) for a, b in zip(unpack(packed), (c, s)))


def test_codec_cache_is_reused_and_rebuilt_when_the_seed_changes(tiny_prepared, tmp_path):
    split = PreparedSplit(tiny_prepared / "train")
    cache = tmp_path / "cache"
    build_codec_cache(split, cache, 1, seed=0)
    stamp = (cache / "audio.npy").stat()
    settings = np.load(cache / "settings.npy")
    assert settings.shape == (1, len(split)) and settings.min() >= 1 and settings.max() <= 9
    # the stored copy is the codec round trip of its utterance (float16 storage)
    i = int(np.argmax(np.diff(split.offsets)))
    codec, kbps = COMPRESSIONS[settings[0, i]]
    stored = np.load(cache / "audio.npy", mmap_mode="r")[0, split.offsets[i]:split.offsets[i + 1]]
    np.testing.assert_allclose(stored, codec_round_trip(split.audio(i), 16000, codec, kbps), atol=2e-3)
    build_codec_cache(split, cache, 1, seed=0)
    assert (cache / "audio.npy").stat().st_ino == stamp.st_ino  # reused, not rewritten
    build_codec_cache(split, cache, 1, seed=1)
    assert (cache / "audio.npy").stat().st_ino != stamp.st_ino
    assert not np.array_equal(np.load(cache / "settings.npy"), settings)


def test_a_copied_experiment_keeps_its_codec_cache(tiny_prepared, tmp_path):
    """The cache names the split's files from the system's folder: a copy of the experiment (data
    and system, times kept) finds it current; a stamp of the earlier form, which named them by
    absolute path, counts while the files are the same and is rewritten in the new form."""
    import json
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(tiny_prepared / "train", exp / "data" / "train")
    build_codec_cache(PreparedSplit(exp / "data" / "train"), exp / "sys" / "feature_cache", 1, seed=0)
    copy = tmp_path / "copy"
    shutil.copytree(exp, copy)
    cache = copy / "sys" / "feature_cache"
    inode = (cache / "audio.npy").stat().st_ino
    build_codec_cache(PreparedSplit(copy / "data" / "train"), cache, 1, seed=0)
    assert (cache / "audio.npy").stat().st_ino == inode  # reused, not rebuilt

    stamp = cache / ".options.json"
    saved = json.loads(stamp.read_text())
    earlier = {k: dict(v, path=str((copy / "data" / "train" / Path(v["path"]).name).resolve()))
               if isinstance(v, dict) and "path" in v else v for k, v in saved["options"].items()}
    from core.stamps import options_digest

    stamp.write_text(json.dumps(dict(saved, options=earlier, digest=options_digest(earlier))))
    build_codec_cache(PreparedSplit(copy / "data" / "train"), cache, 1, seed=0)
    assert (cache / "audio.npy").stat().st_ino == inode
    assert json.loads(stamp.read_text())["options"] == saved["options"]  # restamped relative
    assert saved["options"]["manifest"]["path"] == "../data/train/manifest.tsv"


def test_pseudo_label_crops(tiny_prepared, tmp_path):
    class Crops:  # the engine's TrainCrops fields the wrapper takes over
        split, n, augmenter, seed = PreparedSplit(tiny_prepared / "train"), 8000, None, 0

    folder = build_codec_cache(Crops.split, tmp_path / "cache", 2, seed=0)
    data = PseudoLabelCrops(Crops, folder, transform_prob=1.0)
    data.epoch = 1
    items = [data[i] for i in range(len(data))]
    assert all(w.shape == (8000,) and lab == Crops.split.labels[i] for i, (w, lab, _) in enumerate(items))
    comp, speed = unpack(torch.tensor([p for _, _, p in items]))
    assert comp.max() < NUM_COMPRESSIONS and speed.max() < NUM_SPEEDS and len(speed.unique()) > 3
    assert torch.equal(data[3][0], items[3][0])  # seeded per (seed, epoch, item)
    plain = PseudoLabelCrops(Crops, folder, transform_prob=0.0)
    plain.epoch = 1
    assert {p for _, _, p in (plain[i] for i in range(len(plain)))} == {pack(0, SPEED_FACTORS.index(1.0))}


def test_trains_through_the_engine_and_resumes_with_identical_weights(tiny_prepared, tiny_corpus, tmp_path):
    overrides = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32], "model.input_samples": 16000,
                 "model.codec_variants": 1, "train.epochs": 2, "train.batch_size": 8, "train.num_workers": 0,
                 "augment.musan": str(tiny_corpus / "musan_demo")}
    cfg = load_config(ROOT / "systems/feature_decomp/conf/demo.yaml", overrides)
    whole = train(cfg, tiny_prepared, tmp_path / "whole", torch.device("cpu"))
    assert whole["epochs_run"] == 2 and (tmp_path / "whole/feature_cache/audio.npy").is_file()
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"), stop_after_epochs=1)
    assert latest_weights(tmp_path / "resumed")[0] == 1
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"))
    assert latest_weights(tmp_path / "resumed")[0] == 2
    assert_same_weights(latest_weights(tmp_path / "resumed")[1], latest_weights(tmp_path / "whole")[1])


def test_codec_augmentation_is_refused(tiny_prepared, tiny_corpus, tmp_path):
    from core.errors import KitError

    overrides = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32], "model.input_samples": 16000,
                 "train.epochs": 1, "train.num_workers": 0, "augment.musan": str(tiny_corpus / "musan_demo"),
                 "augment.p_codec": 0.5}
    cfg = load_config(ROOT / "systems/feature_decomp/conf/demo.yaml", overrides)
    with pytest.raises(KitError, match="p_codec must be 0"):
        train(cfg, tiny_prepared, tmp_path / "exp", torch.device("cpu"))
