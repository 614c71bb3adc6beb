"""The content stream's pseudo-labels (seed 002 §III-D.1): a compression label (N1 = 10: aac, opus,
mp3 at 16/32/64 kbit/s, or none) and a speed label (N2 = 16 factors 0.5-2.0) per training crop.

Codec round trips cost ~20-40 ms per 2 s of audio, too slow per sample in a CPU training loop, so
they are done once: `build_codec_cache` stores `variants` (K) compressed copies of every training
utterance, each with its own codec setting drawn per (seed, utterance) without repetition, as float16
in one memory-mapped array (K, total samples), written one utterance at a time (memory stays at one
utterance). Disk: 2·K bytes per training sample (demo, K = 2: about 0.1 GB). The cache is rebuilt
only when the prepared split, K, the seed or the settings change.

At load time `PseudoLabelCrops` draws, per (seed, epoch, item): with probability `transform_prob`
a compression label (none with probability 1/10, else one of the utterance's K cached copies, so
that over the corpus the ten labels are equally likely) and a speed label (uniform over the 16
factors); otherwise the crop is left as it is, labelled (none, 1.0). Speed is changed on the fly by
polyphase resampling with a Kaiser-windowed sinc filter (scipy.signal.resample_poly; the paper's
"Sinc interpolation with a Kaiser window"), which is cheap. The crop is cut from the (compressed)
utterance at ceil(n · factor) samples so that it is n samples long after the speed change; MUSAN
augmentation, when configured, comes last, as in the engine's own crops.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly
from torch.utils.data import Dataset
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of
from core.errors import fail
from core.prepared_split import PreparedSplit
from core.stamps import current_or_restamped, file_signature, write_stamp
from data_prep.codecs import codec_round_trip
from systems.common.sampling import item_key
from systems.common.windows import random_crop, repeat_pad

SAMPLE_RATE = 16000
# seed 002 §IV-D: three codecs × three bit rates, plus "not compressed" (label 0)
COMPRESSIONS: tuple[tuple[str, int] | None, ...] = (None, *((codec, kbps) for codec in ("aac", "opus", "mp3")
                                                             for kbps in (16, 32, 64)))
# seed 002 §IV-D: 16 speed settings in 0.5-2.0; steps of 0.1 make every factor the ratio of small
# integers (factor = tenths / 10), so resampling is exact polyphase filtering
SPEED_TENTHS: tuple[int, ...] = tuple(range(5, 21))
SPEED_FACTORS: tuple[float, ...] = tuple(t / 10 for t in SPEED_TENTHS)
NUM_COMPRESSIONS, NUM_SPEEDS = len(COMPRESSIONS), len(SPEED_FACTORS)


def pack(compression: int, speed: int) -> int:
    """One integer per item for the engine's third batch field (its `domains` slot)."""
    return compression * NUM_SPEEDS + speed


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return packed // NUM_SPEEDS, packed % NUM_SPEEDS


def change_speed(x: np.ndarray, speed: int) -> np.ndarray:
    """`x` played SPEED_FACTORS[speed] times faster (len(x) / factor samples, pitch shifted with it)."""
    tenths = SPEED_TENTHS[speed]
    g = math.gcd(10, tenths)
    if tenths == 10:
        return x.astype(np.float32, copy=True)
    return resample_poly(x, 10 // g, tenths // g).astype(np.float32)


def codec_settings(seed: int, utterance: int, variants: int) -> np.ndarray:
    """The compression labels (1..9) of an utterance's cached copies, distinct, drawn per (seed, utterance)."""
    rng = np.random.default_rng([seed, utterance, 7919])
    return rng.choice(np.arange(1, NUM_COMPRESSIONS), size=variants, replace=False)


def build_codec_cache(split: PreparedSplit, cache_dir: Path, variants: int, seed: int) -> Path:
    if not 1 <= variants <= NUM_COMPRESSIONS - 1:
        fail(f"model.codec_variants {variants}: must be 1..{NUM_COMPRESSIONS - 1} (the codec settings)")
    cache_dir = Path(cache_dir)
    read = {"manifest": "manifest.tsv", "offsets": "offsets.npy", "audio": "audio.f32"}
    settings = {"variants": variants, "seed": seed, "sample_rate": SAMPLE_RATE, "version": 1,
                "compressions": [list(c) if c else None for c in COMPRESSIONS]}
    # the split's files named from the system's folder: a copy of the experiment (cp -a) finds its
    # cache current; a stamp of the earlier form (absolute paths) counts while it names these files
    options = {**{k: file_signature(split.folder / name, cache_dir.parent) for k, name in read.items()}, **settings}
    earlier = {**{k: file_signature(split.folder / name) for k, name in read.items()}, **settings}
    if current_or_restamped(cache_dir, options, earlier):
        remove_staging_of(cache_dir)
        return cache_dir
    n, total = len(split), int(split.offsets[-1])
    with atomic_dir(cache_dir) as tmp:
        audio = np.lib.format.open_memmap(tmp / "audio.npy", mode="w+", dtype=np.float16, shape=(variants, total))
        settings = np.zeros((variants, n), np.int64)
        for i in tqdm(range(n), desc=f"codec cache ({variants} copies)", unit="utt"):
            lo, hi = int(split.offsets[i]), int(split.offsets[i + 1])
            x = split.audio(i)
            settings[:, i] = codec_settings(seed, i, variants)
            for v, label in enumerate(settings[:, i]):
                codec, kbps = COMPRESSIONS[label]
                audio[v, lo:hi] = codec_round_trip(x, SAMPLE_RATE, codec, kbps).astype(np.float16)
        audio.flush()
        del audio
        np.save(tmp / "settings.npy", settings)
        write_stamp(tmp, options)
    return cache_dir


class PseudoLabelCrops(Dataset):
    """(wave (n,) float32, class label, pack(compression, speed)) of the training utterances; takes
    the split, crop length, augmenter and seed of the engine's `TrainCrops` it replaces."""

    def __init__(self, crops, folder: Path, transform_prob: float):
        self.split, self.n, self.augmenter, self.seed = crops.split, crops.n, crops.augmenter, crops.seed
        self.audio = np.load(Path(folder) / "audio.npy", mmap_mode="r")
        self.settings = np.load(Path(folder) / "settings.npy")
        if self.settings.shape[1] != len(self.split):
            fail(f"{folder}: codec cache has {self.settings.shape[1]} utterances, the split {len(self.split)}; "
                 "delete it to rebuild")
        self.transform_prob = transform_prob
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        epoch, i = item_key(key, self.epoch)  # (epoch, index) from the engine's sampler
        rng = np.random.default_rng([self.seed, epoch, i])
        compression, speed = 0, SPEED_FACTORS.index(1.0)
        x = None
        if rng.random() < self.transform_prob:
            # label 0 (none) as often as each codec setting: 1 in NUM_COMPRESSIONS
            if rng.random() >= 1 / NUM_COMPRESSIONS:
                v = int(rng.integers(self.audio.shape[0]))
                compression = int(self.settings[v, i])
                lo, hi = int(self.split.offsets[i]), int(self.split.offsets[i + 1])
                x = np.asarray(self.audio[v, lo:hi], dtype=np.float32)
            speed = int(rng.integers(NUM_SPEEDS))
        if x is None:
            x = self.split.audio(i)
        # the crop that lasts n samples after the speed change (+ 1 for the rounding of the output length)
        need = math.ceil(self.n * SPEED_FACTORS[speed]) + 1
        x = repeat_pad(change_speed(random_crop(x, need, rng), speed), self.n)
        if self.augmenter is not None:
            x, _ = self.augmenter(x, rng)
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.split.labels[i]),
                pack(compression, speed))
