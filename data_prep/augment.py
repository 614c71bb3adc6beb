"""MUSAN-style additive augmentation and codec round trips.

Seed 004 §3.1: training and dev data are mixed with MUSAN noise at an SNR drawn uniformly in
15–30 dB. As in the Kaldi/WeSpeaker MUSAN recipes, each utterance gets at most one of noise, music
or babble (3–7 speech files summed); the choice probabilities live in the system config.
Noise and music go through `audiomentations.AddBackgroundNoise`; babble needs several files summed
before scaling, which audiomentations does not do, so it uses `mix_at_snr` below.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import fail

from .audio_io import AudioReadError, ffmpeg_decode, read_audio, resample, write_wav

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga"}
CONDITIONS = ("clean", "noise", "music", "babble")
CODECS = ("mp3", "aac", "opus", "gsm", "g722", "amr-nb")
# augmentation conditions as domains (W2V-ASDG's discriminator); any codec round trip is "codec"
DOMAINS = ("clean", "noise", "music", "babble", "codec")


def domain_index(condition: str) -> int:
    return DOMAINS.index("codec" if "codec" in condition else condition)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def fit_length(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A length-n excerpt of `noise`: random offset when long enough, tiled when shorter."""
    if len(noise) >= n:
        start = int(rng.integers(0, len(noise) - n + 1))
        return noise[start:start + n]
    reps = int(np.ceil(n / len(noise)))
    return np.tile(noise, reps)[:n]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + g·noise with 10·log10(P_speech / P_(g·noise)) = snr_db; noise already length-matched."""
    p_s, p_n = power(speech), power(noise)
    if p_n <= 0.0 or p_s <= 0.0:
        return speech.astype(np.float32, copy=True)
    gain = np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def list_audio(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def musan_folders(root: str | Path) -> dict[str, list[Path]]:
    """Files of a MUSAN-layout folder (`noise/`, `music/`, `speech/`), real MUSAN or the demo bank."""
    root = Path(root)
    if not root.is_dir():
        fail(f"{root}: MUSAN folder does not exist")
    found = {kind: list_audio(root / kind) for kind in ("noise", "music", "speech")}
    missing = [k for k, v in found.items() if not v]
    if missing:
        fail(f"{root}: no audio under {', '.join(k + '/' for k in missing)} (expected musan/{{noise,music,speech}})")
    return found


@dataclass
class AugmentConfig:
    musan: str | None = None
    p_noise: float = 0.3
    p_music: float = 0.2
    p_babble: float = 0.2
    snr_db: tuple[float, float] = (15.0, 30.0)
    babble_speakers: tuple[int, int] = (3, 7)
    p_codec: float = 0.0
    codecs: tuple[str, ...] = ("mp3", "aac", "opus", "gsm", "amr-nb")

    def __post_init__(self):
        total = self.p_noise + self.p_music + self.p_babble
        if not 0.0 <= total <= 1.0:
            fail(f"augment: p_noise + p_music + p_babble = {total:g}, must lie in [0, 1]")
        unknown = set(self.codecs) - set(CODECS)
        if unknown:
            fail(f"augment: unknown codec(s) {sorted(unknown)}; valid: {list(CODECS)}")
        self.snr_db = tuple(float(v) for v in self.snr_db)
        self.babble_speakers = tuple(int(v) for v in self.babble_speakers)


class MusanAugmenter:
    """Callable `(audio, rng) -> (augmented audio, condition)` for 16 kHz float32 mono input."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000):
        from audiomentations import AddBackgroundNoise

        self.cfg = cfg
        self.sr = sample_rate
        self.files = musan_folders(cfg.musan) if cfg.musan else None
        self._speech_cache: dict[Path, np.ndarray] = {}
        if self.files:
            lo, hi = cfg.snr_db
            self.background = {
                kind: AddBackgroundNoise(self.files[kind], min_snr_db=lo, max_snr_db=hi,
                                         noise_rms="relative", p=1.0)
                for kind in ("noise", "music")
            }

    def choose_condition(self, rng: np.random.Generator) -> str:
        if not self.files:
            return "clean"
        u = rng.random()
        for cond, p in (("noise", self.cfg.p_noise), ("music", self.cfg.p_music),
                        ("babble", self.cfg.p_babble)):
            if u < p:
                return cond
            u -= p
        return "clean"

    def _speech(self, path: Path) -> np.ndarray:
        if path not in self._speech_cache:
            x, sr = read_audio(path)
            self._speech_cache[path] = resample(x, sr, self.sr)
        return self._speech_cache[path]

    def babble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.cfg.babble_speakers
        k = int(rng.integers(lo, hi + 1))
        picks = rng.choice(len(self.files["speech"]), size=k, replace=len(self.files["speech"]) < k)
        mix = np.zeros(n, dtype=np.float64)
        for i in picks:
            talker = fit_length(self._speech(self.files["speech"][i]), n, rng)
            p = power(talker)
            if p > 0:
                mix += talker / np.sqrt(p)  # equal loudness per talker
        return mix.astype(np.float32)

    def add(self, x: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
        if condition == "clean":
            return x
        if condition == "babble":
            snr = rng.uniform(*self.cfg.snr_db)
            return mix_at_snr(x, self.babble(len(x), rng), snr)
        # audiomentations draws from Python's `random`; seed it from our generator so that a
        # seeded run is reproducible.
        random.seed(int(rng.integers(2 ** 31)))
        return self.background[condition](samples=x.astype(np.float32), sample_rate=self.sr)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        condition = self.choose_condition(rng)
        y = self.add(x, condition, rng)
        if self.cfg.p_codec > 0 and rng.random() < self.cfg.p_codec:
            codec = str(rng.choice(self.cfg.codecs))
            y = codec_roundtrip(y, self.sr, codec, rng)
            condition = f"{condition}+codec" if condition != "clean" else "codec"
        return y, condition


def codec_roundtrip(x: np.ndarray, sr: int, codec: str, rng: np.random.Generator) -> np.ndarray:
    """Encode with a lossy speech/music codec and decode back to `sr` (ffmpeg; AMR-NB via sox).

    The output is cut or zero-padded to the input length so labels and windows stay aligned.
    """
    if codec not in CODECS:
        fail(f"unknown codec {codec!r}; valid: {list(CODECS)}")
    tmp = Path(tempfile.mkdtemp(prefix="codec_"))
    try:
        src = tmp / "in.wav"
        write_wav(src, x, sr)
        ff = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-y", "-i", str(src)]
        if codec == "mp3":
            enc, cmd = tmp / "c.mp3", ff + ["-c:a", "libmp3lame", "-b:a", f"{int(rng.choice([24, 32, 48, 64]))}k"]
        elif codec == "aac":
            enc, cmd = tmp / "c.m4a", ff + ["-c:a", "aac", "-b:a", f"{int(rng.choice([24, 32, 48]))}k"]
        elif codec == "opus":
            enc, cmd = tmp / "c.ogg", ff + ["-c:a", "libopus", "-b:a", f"{int(rng.choice([8, 12, 16, 24]))}k"]
        elif codec == "gsm":
            enc, cmd = tmp / "c.gsm", ff + ["-ar", "8000", "-ac", "1", "-c:a", "libgsm", "-f", "gsm"]
        elif codec == "g722":
            enc, cmd = tmp / "c.g722", ff + ["-ar", "16000", "-ac", "1", "-c:a", "g722", "-f", "g722"]
        else:  # amr-nb: ffmpeg has no AMR encoder here; sox does
            enc, cmd = tmp / "c.amr", None
        if cmd is None:
            proc = subprocess.run(["sox", "-R", str(src), "-r", "8000", "-c", "1", "-t", "amr-nb", str(enc)],
                                  capture_output=True)
        else:
            proc = subprocess.run(cmd + [str(enc)], capture_output=True)
        if proc.returncode != 0:
            fail(f"codec {codec}: encoder failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")
        try:
            y = ffmpeg_decode(enc, sr, input_format="g722" if codec == "g722" else None)
        except AudioReadError as err:
            fail(f"codec {codec}: decoding the round trip failed: {err}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(y) >= len(x):
        return y[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def have_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]
