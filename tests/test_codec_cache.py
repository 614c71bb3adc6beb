"""The codec-variant cache (data_prep/codec_cache.py) and the augmented dev (data_prep/dev_augment.py):
reproducible, reused, rebuilt on change; p_codec draws its share; dev_clean is the clean dev."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from core.errors import KitError
from core.prepared_split import CODEC_FOLDER as FOLDER
from core.prepared_split import CodecVariants, PreparedSplit
from data_prep.audio_io import LoadOptions
from data_prep.augment import AugmentConfig, MusanAugmenter, power
from data_prep.codec_cache import build_codec_cache
from data_prep.codecs import codec_round_trip
from data_prep.dev_augment import augment_split
from data_prep.prepare import SplitSource, prepare_split

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
CODECS = ("mp3", "g722", "amr-nb")


def voiced(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 220)
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * x + 0.005 * rng.standard_normal(n)).astype(np.float32)


def write_split(folder: Path, prefix: str, count: int, rng: np.random.Generator) -> None:
    (folder / "wav").mkdir(parents=True)
    lines = []
    for i in range(count):
        sf.write(folder / "wav" / f"{prefix}{i:04d}.wav", voiced(int(rng.uniform(0.6, 1.6) * SR), rng), SR)
        lines.append(f"{prefix}{i:04d}.wav {i % 7}")
    (folder / "label.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train (10) and dev (6) utterances of 0.6–1.6 s, and a small MUSAN-layout bank."""
    root = tmp_path_factory.mktemp("codec_corpus")
    rng = np.random.default_rng(0)
    write_split(root / "train", "T", 10, rng)
    write_split(root / "dev", "D", 6, rng)
    for kind, count in (("noise", 2), ("music", 2), ("speech", 4)):
        (root / "musan" / kind).mkdir(parents=True)
        for i in range(count):
            x = voiced(3 * SR, rng) if kind != "noise" else 0.1 * rng.standard_normal(3 * SR)
            sf.write(root / "musan" / kind / f"{kind}{i}.wav", x, SR)
    return root


def prepared_train(corpus: Path, out: Path) -> Path:
    prepare_split(SplitSource("train", corpus / "train" / "wav", corpus / "train" / "label.txt"), out,
                  LoadOptions(), nj=1)
    return out / "train"


def test_cache_is_reproducible_reused_and_rebuilt(corpus, tmp_path):
    a, b = prepared_train(corpus, tmp_path / "a"), prepared_train(corpus, tmp_path / "b")
    assert not build_codec_cache(a, 2, CODECS, seed=0, nj=2)["skipped"]
    assert not build_codec_cache(b, 2, CODECS, seed=0, nj=1)["skipped"]
    # same seed, other process count: the same bytes
    assert (a / FOLDER / "audio.f32").read_bytes() == (b / FOLDER / "audio.f32").read_bytes()
    stamp = (a / FOLDER / ".options.json").stat().st_mtime_ns
    assert build_codec_cache(a, 2, CODECS, seed=0)["skipped"]
    assert (a / FOLDER / ".options.json").stat().st_mtime_ns == stamp
    # each variant is the round trip its table names, of the utterance's prepared audio
    split = PreparedSplit(a)
    cache = CodecVariants(split)
    table = pd.read_csv(a / FOLDER / "variants.tsv", sep="\t")
    assert cache.k == 2 and len(table) == 2 * len(split)
    assert all(len(set(g["codec"])) == 2 for _, g in table.groupby("utt_id"))  # distinct codecs per utterance
    for i in (0, 7):
        for k in range(2):
            row = table.iloc[2 * i + k]
            assert row["utt_id"] == split.ids[i] and cache.codec_of(i, k) == row["codec"]
            np.testing.assert_array_equal(cache.audio(i, k),
                                          codec_round_trip(split.audio(i), SR, row["codec"], row["kbps"]))
    # another seed or K rebuilds; so does re-prepared audio (the split's stamp changes)
    assert not build_codec_cache(b, 2, CODECS, seed=1)["skipped"]
    assert (a / FOLDER / "audio.f32").read_bytes() != (b / FOLDER / "audio.f32").read_bytes()
    assert not build_codec_cache(a, 3, CODECS, seed=0)["skipped"]
    assert CodecVariants(PreparedSplit(a)).k == 3
    prepare_split(SplitSource("train", corpus / "train" / "wav", corpus / "train" / "label.txt"), tmp_path / "a",
                  LoadOptions(target_dbfs=-20.0), nj=1)
    assert CodecVariants.open_matching(PreparedSplit(a), 3, CODECS) is None  # the old cache went with the old audio
    assert not build_codec_cache(a, 3, CODECS, seed=0)["skipped"]
    assert CodecVariants.open_matching(PreparedSplit(a), 3, CODECS) is not None
    assert CodecVariants.open_matching(PreparedSplit(a), 2, CODECS) is None  # other K: not this cache
    (a / FOLDER / "audio.f32").write_bytes(b"\0" * 8)  # damaged: a one-line error naming the file
    with pytest.raises(KitError, match=r"codec_variants/audio.f32: 8 bytes, expected"):
        CodecVariants(PreparedSplit(a))


def test_p_codec_draws_its_share_from_the_cache(corpus, tmp_path):
    train = prepared_train(corpus, tmp_path)
    build_codec_cache(train, 2, CODECS, seed=0, nj=2)
    split = PreparedSplit(train)
    cache = CodecVariants(split)
    aug = MusanAugmenter(AugmentConfig(p_codec=0.3, codecs=CODECS, codec_variants=2), codec_cache=cache)
    trials, coded = 3000, 0
    for j in range(trials):
        i = j % len(split)
        audio, name = aug.source(split, i, np.random.default_rng([5, j]))
        if name:
            coded += 1
            assert any(np.array_equal(audio, cache.audio(i, k)) for k in range(2))
            assert name in CODECS
        else:
            np.testing.assert_array_equal(audio, split.audio(i))
    # binomial(3000, 0.3): sd 0.0084; 4 sd
    assert abs(coded / trials - 0.3) < 4 * np.sqrt(0.3 * 0.7 / trials)
    y, condition = aug(split.audio(0), np.random.default_rng(0), coded="amr-nb")
    assert condition == "codec"
    y, condition = aug(split.audio(0), np.random.default_rng(0), coded="")
    assert condition == "clean"


def test_engine_uses_a_matching_cache_only(corpus, tmp_path, capsys):
    from systems.common.config import load_config
    from systems.common.engine import TrainCrops, build_augmenter

    train = prepared_train(corpus, tmp_path)
    build_codec_cache(train, 2, CODECS, seed=0, nj=2)
    split = PreparedSplit(train)
    cfg = load_config(ROOT / "systems" / "lfcc_resnet18" / "conf" / "demo.yaml",
                      {"augment.codecs": list(CODECS), "augment.codec_variants": 2})
    aug = build_augmenter(cfg, split)
    assert aug.codec_cache is not None and aug.codec_cache.k == 2
    crops = TrainCrops(split, 8000, aug, seed=1)
    assert crops[3][0].shape == (8000,)
    other = load_config(ROOT / "systems" / "lfcc_resnet18" / "conf" / "demo.yaml")  # K = 3, six codecs
    assert build_augmenter(other, split).codec_cache is None
    assert "coding on the fly" in capsys.readouterr().out


def achieved_snr(clean: np.ndarray, mixed: np.ndarray) -> float:
    return 10 * np.log10(power(clean) / power(mixed - clean))


def test_augmented_dev_is_reproducible_and_in_range(corpus, tmp_path):
    dev = SplitSource("dev", corpus / "dev" / "wav", corpus / "dev" / "label.txt")
    prepare_split(dev, tmp_path, LoadOptions(), nj=1, folder="dev_clean")
    info = augment_split(tmp_path / "dev_clean", tmp_path / "dev", corpus / "musan", (5, 20), 0.9, 0.5, seed=4, nj=2)
    again = augment_split(tmp_path / "dev_clean", tmp_path / "dev2", corpus / "musan", (5, 20), 0.9, 0.5, seed=4, nj=1)
    assert not info["skipped"] and not again["skipped"]
    assert (tmp_path / "dev" / "audio.f32").read_bytes() == (tmp_path / "dev2" / "audio.f32").read_bytes()
    assert augment_split(tmp_path / "dev_clean", tmp_path / "dev", corpus / "musan", (5, 20), 0.9, 0.5,
                         seed=4)["skipped"]
    clean, noisy = PreparedSplit(tmp_path / "dev_clean"), PreparedSplit(tmp_path / "dev")
    assert noisy.ids == clean.ids and np.array_equal(noisy.labels, clean.labels)
    conditions = pd.read_csv(tmp_path / "dev" / "conditions.tsv", sep="\t")["condition"].tolist()
    assert len(set(conditions)) > 2
    for i, cond in enumerate(conditions):
        x, y = clean.audio(i), noisy.audio(i)
        if cond == "clean":
            np.testing.assert_array_equal(x, y)
        elif "codec" not in cond:  # noise alone: the drawn SNR lies in 5–20 dB
            assert 5 - 0.5 <= achieved_snr(x, y) <= 20 + 0.5
        else:
            assert not np.array_equal(x, y)
    assert not augment_split(tmp_path / "dev_clean", tmp_path / "dev", corpus / "musan", (5, 20), 0.9, 0.5,
                             seed=5)["skipped"]


def test_prepare_cli_writes_dev_clean_dev_and_cache(corpus, tmp_path):
    cmd = [sys.executable, "-m", "data_prep.prepare", "--data_root", str(corpus), "--out", str(tmp_path / "data"),
           "--nj", "2", "--codec_variants", "1", "--codecs", "g722", "--augment_dev", str(corpus / "musan")]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    # dev_clean is exactly what preparing the dev alone writes
    prepare_split(SplitSource("dev", corpus / "dev" / "wav", corpus / "dev" / "label.txt"), tmp_path / "plain",
                  LoadOptions(), nj=1)
    for name in ("audio.f32", "offsets.npy", "manifest.tsv"):
        assert (tmp_path / "data" / "dev_clean" / name).read_bytes() == (tmp_path / "plain" / "dev" / name).read_bytes()
    augmented = (tmp_path / "data" / "dev" / "audio.f32").read_bytes()
    assert augmented != (tmp_path / "plain" / "dev" / "audio.f32").read_bytes()
    assert CodecVariants(PreparedSplit(tmp_path / "data" / "train")).codecs == ("g722",)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0 and second.stdout.count("up to date, skipped") == 4, second.stdout
