"""The augmentation's channel applied per batch on the training device (augment.effects_on): the
same output as the loader path (audiomentations and scipy, the oracle) for the same draws; the
filters against scipy's sosfilt and the clipping against NumPy directly; the engine trains alike
either way; the excerpt reader's raw PCM path gives libsndfile's values."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import butter, sosfilt, sosfilt_zi

from core.errors import KitError
from eval.ddp_check import final_parameters, max_difference
from data_prep.augment import UNFILTERED, AugmentConfig, ExcerptReader, MusanAugmenter
from systems.common.config import load_config
from systems.common.device_effects import apply_channel, clip_rows, filter_rows
from systems.common.engine import effects_on_device, train
from systems.common.train_inputs import config_digest

from .conftest import ROOT, TINY_LFCC_RESNET18
from .test_augment import speech_like

SR = 16000
CONFIG = ROOT / "systems/lfcc_resnet18/conf/demo.yaml"


@pytest.fixture
def pcm_bank(tmp_path):
    """A MUSAN-layout bank of 16-bit PCM WAVs (MUSAN's own format), some shorter than a crop."""
    rng = np.random.default_rng(2)
    for kind, count in (("noise", 2), ("music", 2), ("speech", 6)):
        (tmp_path / kind).mkdir()
        for i in range(count):
            n = int(SR * rng.uniform(0.7, 3.0))
            sf.write(tmp_path / kind / f"{kind}{i}.wav", speech_like(n, 20 + i) * (i + 1), SR, subtype="PCM_16")
    return tmp_path


def batch_of(plans: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([torch.as_tensor(p[k]) for p in plans]) for k in plans[0]}


def test_channel_on_the_device_gives_the_loader_paths_output(pcm_bank):
    """Babble and reverberation in the worker, band-pass, EQ and clipping drawn by `plan` and
    applied to the batch, equal `MusanAugmenter.__call__` (audiomentations' filters) on the same
    rng, within float32 rounding; every effect occurs."""
    aug = MusanAugmenter(AugmentConfig(musan=str(pcm_bank), p_noise=0, p_music=0, p_babble=0.5, p_reverb=0.5,
                                       p_bandpass=0.5, p_eq=0.5, p_clipping=0.5))
    n, count = 24000, 32
    expected, crops, plans, conditions = [], [], [], []
    for s in range(count):
        x = speech_like(n, s) * (1 + s % 3)
        y, condition = aug(x, np.random.default_rng([4, s]), coded="")
        crop, plan, planned = aug.plan(x, np.random.default_rng([4, s]), coded="")
        assert planned == condition
        expected.append(y)
        crops.append(crop)
        plans.append(plan)
        conditions.append(condition)
    batch = batch_of(plans)
    got = apply_channel(torch.from_numpy(np.stack(crops)), batch).numpy()
    for y, g in zip(expected, got):
        assert np.max(np.abs(g - y)) <= 1e-5 * np.max(np.abs(y))
    assert (batch["clip_percentile"] >= 2).any()  # a percentile that clips (int(p / 2) > 0)
    sections = (batch["sos"] != torch.tensor([1.0, 0, 0, 1, 0, 0], dtype=batch["sos"].dtype)).any(2).sum(1)
    assert {int(k) for k in sections} >= {0, 7}  # rows without filters, with the EQ alone
    assert sections.max() > 7  # and with band-pass + EQ
    assert "reverb+babble+channel" in conditions
    # a batch without channel effects is handed back as it is
    plain = torch.from_numpy(np.stack(crops[:2]))
    assert apply_channel(plain, batch_of([{"sos": UNFILTERED, "clip_percentile": np.float32(-1)}] * 2)) is plain


def test_filter_is_sosfilt_from_the_first_samples_steady_state():
    """scipy's sosfilt started at sosfilt_zi · x[0], for the steepest, lowest band-pass the
    augmenter draws (the longest tail) and a section with gain at DC."""
    rng = np.random.default_rng(0)
    n = 16000
    x = (0.3 + 0.1 * rng.standard_normal((2, n))).astype(np.float32)  # an offset: the x[0] term matters
    band = butter(4, [40.0, 1200.0], btype="bandpass", fs=SR, output="sos")
    shelf = np.array([[1.2, -1.9, 0.75, 1.0, -1.8, 0.82]])  # poles at radius 0.91, H(1) = 2.5
    sos = np.tile(np.array([1.0, 0, 0, 1, 0, 0]), (2, 11, 1))
    sos[0, :4] = band
    sos[1, :1] = shelf
    got = filter_rows(torch.from_numpy(x), torch.from_numpy(sos)).numpy()
    for row, sections in ((0, band), (1, shelf)):
        zi = sosfilt_zi(sections) * x[row, 0]
        want, _ = sosfilt(sections, x[row].astype(np.float64), zi=zi)
        assert np.max(np.abs(got[row] - want)) <= 1e-5 * np.max(np.abs(want))


def test_clipping_against_numpy():
    x = (0.1 * np.random.default_rng(1).standard_normal((3, 12000))).astype(np.float32)
    clipped = clip_rows(torch.from_numpy(x), torch.tensor([10.0, 3.0, 1.0])).numpy()
    for row, p in enumerate((10, 3, 1)):  # lower percentiles 5, 1 and 0 (no clipping)
        lower = int(p / 2)
        lo, hi = np.percentile(x[row], [lower, 100 - lower])
        np.testing.assert_allclose(clipped[row], np.clip(x[row], np.float32(lo), np.float32(hi)), rtol=0, atol=1e-7)


def test_raw_pcm_excerpts_are_libsndfiles_values(tmp_path):
    """16-bit PCM WAVs (mono, stereo, with a chunk before the samples) are read at their offset
    without libsndfile: the same float32 values as soundfile; other formats still go through it."""
    rng = np.random.default_rng(3)
    reader = ExcerptReader(SR)
    mono = (0.4 * rng.standard_normal(5000)).clip(-1, 1)
    stereo = (0.4 * rng.standard_normal((5000, 2))).clip(-1, 1)
    cases = {"mono.wav": (mono, "PCM_16"), "stereo.wav": (stereo, "PCM_16"), "float.wav": (mono, "FLOAT"),
             "mono.flac": (mono, "PCM_16")}
    for name, (data, subtype) in cases.items():
        sf.write(tmp_path / name, data, SR, subtype=subtype)
    with sf.SoundFile(tmp_path / "tagged.wav", "w", SR, 1, "PCM_16") as f:  # a LIST chunk before `data`
        f.comment = "a LIST/INFO chunk"
        f.write(mono)
    for name in ("mono.wav", "stereo.wav", "tagged.wav", "float.wav", "mono.flac"):
        path = tmp_path / name
        raw = reader.info(path)[3] is not None
        assert raw == (name in ("mono.wav", "stereo.wav", "tagged.wav")), name
        for start, count in ((0, 5000), (1234, 800), (4990, 50)):
            want, _ = sf.read(path, start=start, frames=count, dtype="float32", always_2d=True)
            got = reader.frames(path, start, count)
            assert got.dtype == np.float32 and np.array_equal(got, want), (name, start, count)


def test_where_the_effects_run(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = load_config(CONFIG, {"augment.p_codec": 0.0, "augment.p_reverb": 0.2})
    aug = MusanAugmenter(cfg.augment)
    assert not effects_on_device(cfg, aug, cpu, reads_own_data=False)  # auto: the loader on CPU
    assert effects_on_device(cfg, aug, cuda, reads_own_data=False)  # auto: the device on CUDA
    assert not effects_on_device(cfg, aug, cuda, reads_own_data=True)
    assert not effects_on_device(cfg, None, cuda, reads_own_data=False)  # nothing to apply
    device = load_config(CONFIG, {"augment.p_codec": 0.0, "augment.effects_on": "device"})
    assert effects_on_device(device, aug, cpu, reads_own_data=False)
    with pytest.raises(KitError, match="trains on its own data"):
        effects_on_device(device, aug, cpu, reads_own_data=True)
    coded = load_config(CONFIG, {"augment.effects_on": "device"})  # p_codec 0.3 without a codec cache
    with pytest.raises(KitError, match="codec round trips run on the fly"):
        effects_on_device(coded, MusanAugmenter(coded.augment, quiet=True), cpu, reads_own_data=False)
    assert not effects_on_device(load_config(CONFIG), MusanAugmenter(coded.augment, quiet=True), cuda, False)
    with pytest.raises(KitError, match="effects_on 'gpu'"):
        load_config(CONFIG, {"augment.effects_on": "gpu"})
    # `auto` hashes as configs did before the option; a fixed placement is another config
    base = config_digest(load_config(CONFIG))
    assert config_digest(load_config(CONFIG, {"augment.effects_on": "auto"})) == base
    assert config_digest(load_config(CONFIG, {"augment.effects_on": "device"})) != base


def test_training_with_effects_on_the_device_matches_the_loader(tiny_prepared, tiny_corpus, tmp_path):
    """One epoch of the tiny LFCC-ResNet18 with babble, reverberation and channel effects, the
    channel applied by the loader workers and by the training device (here the CPU): the same log
    up to float32 rounding; without the channel the weights differ by far more (the check can fail)."""
    def run(name, overrides):
        cfg = load_config(CONFIG, {"augment.musan": str(tiny_corpus / "musan_demo"), **TINY_LFCC_RESNET18,
                                   "augment.p_noise": 0.0, "augment.p_music": 0.0, "augment.p_babble": 0.5,
                                   "augment.p_codec": 0.0, "augment.p_reverb": 0.5, "augment.p_bandpass": 0.3,
                                   "augment.p_eq": 0.3, "augment.p_clipping": 0.3, "train.epochs": 1,
                                   "train.batch_size": 8, "train.num_workers": 0, "train.optimizer": "sgd",
                                   "train.lr": 0.05, "train.channels_last": False, **overrides})
        train(cfg, tiny_prepared, tmp_path / name, torch.device("cpu"))
        row = next(csv.DictReader(open(tmp_path / name / "train_log.csv")))
        return float(row["train_loss"]), final_parameters(tmp_path / name)

    loader = run("loader", {"augment.effects_on": "loader"})
    device = run("device", {"augment.effects_on": "device"})
    plain = run("plain", {"augment.effects_on": "loader", "augment.p_bandpass": 0.0, "augment.p_eq": 0.0,
                          "augment.p_clipping": 0.0})
    # SGD, so that weights move with the gradients. Float32 rounding of the filters, amplified by
    # LFCC's logarithm in quiet bands and by training, moves the two runs apart by an amount that
    # depends on the NumPy / SciPy builds (loss 2.9e-4 relative and weights 1.1e-2 with NumPy 2.4.6
    # and SciPy 1.17.1; weights 9e-4 in an earlier environment), so both are judged against leaving
    # the channel out (loss 0.44 and weights 0.30 there), not against a fixed tolerance. The
    # contiguous layout: channels-last training (demo.yaml's) amplifies the same rounding about 4×
    # more (weights 0.044 against 0.30), and is checked on its own in test_channels_last_training.py
    assert abs(device[0] - loader[0]) < 0.1 * abs(plain[0] - loader[0])
    assert max_difference(device[1], loader[1]) < 0.1 * max_difference(plain[1], loader[1])


def test_band_pass_sections_from_zeros_and_poles_have_scipys_response():
    """The cheap pairing of butter's zeros and poles (zpk_sections) against butter's own sections:
    the same frequency response, for the orders and edges the band-pass draws (scipy the oracle)."""
    from scipy.signal import sosfreqz

    from data_prep.augment import zpk_sections

    for order, band in ((1, [100.0, 900.0]), (2, [40.0, 7999.2]), (3, [45.0, 3000.0]), (4, [300.0, 2500.0])):
        want = sosfreqz(butter(order, band, btype="bandpass", fs=SR, output="sos"), 4096)[1]
        got = sosfreqz(zpk_sections(*butter(order, band, btype="bandpass", fs=SR, output="zpk")), 4096)[1]
        assert np.max(np.abs(got - want)) < 1e-8
