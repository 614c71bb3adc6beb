"""Benchmark: what augmentation costs per training sample, each setting as a ratio, in one run.

    python -m data_prep.bench_augment [--data exp/data --musan DIR] [--samples 300] [--seconds 4]

Times the loader's per-sample path (read from the prepared cache, crop, augment; as
systems/common/engine.py `TrainCrops` does) for: no augmentation; MUSAN only (the paper configs'
noise 0.3 / music 0.2 / babble 0.2 at 15–30 dB); MUSAN + codec p = 0.3 from the prepared codec
cache; MUSAN + codec p = 0.3 coded on the fly. Without --data it builds a synthetic prepared
split (speech-like tones, 2–6 s) with a 3-variant codec cache and a synthetic MUSAN bank in a
temporary folder first (not timed). `run_benchmark()` is the function `eval.bench` can call.
"""
from __future__ import annotations

import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from core.errors import ArgumentParser, fail, run_cli
from core.prepared_split import CodecVariants, PreparedSplit, PreparedSplitWriter
from core.provenance import commit_id

from .augment import CODECS, AugmentConfig, MusanAugmenter, fit_length
from .codec_cache import build_codec_cache

SR = 16000


def speechlike(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 250)
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    x += 0.01 * rng.standard_normal(n)
    return (0.05 * x / np.sqrt(np.mean(x ** 2) + 1e-12)).astype(np.float32)


def synthetic_setup(root: Path, utterances: int = 40, nj: int = 2, k: int = 3) -> tuple[Path, Path]:
    """A prepared `train` split of speech-like signals with its codec cache, and a MUSAN-layout
    bank (60 s noise, music and speech files); returns (data folder, bank folder)."""
    import soundfile as sf

    from core.stamps import write_stamp

    rng = np.random.default_rng(0)
    train = root / "data" / "train"
    train.mkdir(parents=True)
    with PreparedSplitWriter(train) as split:
        for i in range(utterances):
            x = speechlike(int(rng.uniform(2, 6) * SR), rng)
            split.add(f"utt{i:05d}", f"utt{i:05d}.wav", i % 7, SR, len(x) / SR, x)
    write_stamp(train, {"synthetic": utterances})
    build_codec_cache(train, k, CODECS, seed=0, nj=nj)
    bank = root / "musan"
    for kind, count in (("noise", 4), ("music", 4), ("speech", 12)):
        (bank / kind).mkdir(parents=True)
        for j in range(count):
            x = speechlike(60 * SR, rng) if kind != "noise" else 0.05 * rng.standard_normal(60 * SR)
            sf.write(bank / kind / f"{kind}{j}.wav", x, SR, subtype="PCM_16")
    return root / "data", bank


def _one_sample(split: PreparedSplit, augmenter: MusanAugmenter | None, n: int, j: int) -> np.ndarray:
    i = j % len(split)
    rng = np.random.default_rng([0, 1, j])
    if augmenter is None:
        return fit_length(split.audio(i), n, rng)
    audio, coded = augmenter.source(split, i, rng)
    return augmenter(fit_length(audio, n, rng), rng, coded=coded)[0]


def _time_settings(split: PreparedSplit, settings: dict, n: int, samples: int, blocks: int = 5) -> dict:
    """Median over `blocks` rounds of each setting's mean seconds per sample; the settings take
    turns within a round, so that load from other processes hits them alike."""
    per_block = max(1, samples // blocks)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for name, aug in settings.items():  # warm-up: imports, file headers, first encoder set-up
        for j in range(3):
            _one_sample(split, aug, n, j)
    for b in range(blocks):
        for name, aug in settings.items():
            t0 = time.perf_counter()
            for j in range(b * per_block, (b + 1) * per_block):
                _one_sample(split, aug, n, j)
            times[name].append((time.perf_counter() - t0) / per_block)
    return {name: float(np.median(v)) for name, v in times.items()}


def run_benchmark(data: str | Path | None = None, musan: str | Path | None = None, samples: int = 300,
                  seconds: float = 4.0, nj: int = 2) -> dict:
    """ms per training sample for the four settings, with machine and commit. With `data` (a
    prepared-data folder whose train/ has a codec cache) and `musan`, measures those."""
    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        if data is None:
            data, musan = synthetic_setup(Path(tmp), nj=nj)
        elif musan is None:
            fail("bench_augment: --data needs --musan")
        split = PreparedSplit(Path(data) / "train")
        base = dict(musan=str(musan), p_noise=0.3, p_music=0.2, p_babble=0.2, snr_db=(15, 30))
        cache = CodecVariants(split)  # a missing or damaged cache: one-line error naming the file
        codec_cfg = AugmentConfig(**base, p_codec=0.3, codecs=cache.codecs, codec_variants=cache.k)
        settings = {
            "none": None,
            "musan": MusanAugmenter(AugmentConfig(**base)),
            "musan+codec_cache": MusanAugmenter(codec_cfg, codec_cache=cache),
            "musan+codec_on_the_fly": MusanAugmenter(codec_cfg, quiet=True),
        }
        n = int(seconds * SR)
        ms = {name: 1000 * v for name, v in _time_settings(split, settings, n, samples).items()}
    return {"ms_per_sample": ms, "samples": samples, "seconds": seconds, "cpu_count": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "commit": commit_id(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_lines(result: dict) -> list[str]:
    ms = result["ms_per_sample"]
    none = ms["none"]
    lines = [f"augment benchmark: {result['samples']} samples of {result['seconds']:g} s, "
             f"{result['cpu_count']} CPUs ({result['machine']}), commit {result['commit']}"]
    for name, v in ms.items():
        lines.append(f"  {name:24s} {v:8.2f} ms/sample  (+{v - none:6.2f} ms over none; "
                     f"x{v / ms['musan']:5.2f} of musan)")
    cached, fly = ms["musan+codec_cache"] - none, ms["musan+codec_on_the_fly"] - none
    lines.append(f"  augmentation with codec p=0.3 adds {cached:.2f} ms/sample from the cache (target <= 5 ms), "
                 f"{fly:.2f} ms on the fly: on the fly / cache = {fly / max(cached, 1e-6):.1f}")
    lines.append(f"  peak RSS {result['peak_rss_mb']:.0f} MB")
    return lines


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="prepared-data folder (its train/ with codec_variants/); default: synthetic")
    ap.add_argument("--musan", help="MUSAN-layout bank (with --data)")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=4.0, help="crop length")
    ap.add_argument("--nj", type=int, default=2, help="processes for building the synthetic codec cache")
    args = ap.parse_args()
    print("\n".join(format_lines(run_benchmark(args.data, args.musan, args.samples, args.seconds, args.nj))))


if __name__ == "__main__":
    run_cli(main)
