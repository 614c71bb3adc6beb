"""Training augmentation: MUSAN noise/music/babble, codec round trips, reverberation and channel effects.

Seed 004 §3.1: training and dev data are mixed with MUSAN noise at an SNR drawn uniformly in
15–30 dB. As in the Kaldi/WeSpeaker MUSAN recipes, each utterance gets at most one of noise, music
or babble (3–7 speech files summed); the choice probabilities live in the system config.
Noise and music go through `audiomentations.AddBackgroundNoise` (it reads only the excerpt it
needs, through librosa's offset/duration); babble needs several files summed before scaling, which
audiomentations does not do, so it reads excerpts itself (`read_excerpt`) and uses `add_at_snr`.
Nothing keeps a source file in memory: a worker's memory does not grow with the MUSAN folder.

Order of the effects on one training sample (`MusanAugmenter.__call__`):
  codec variant from the prepared cache (data_prep/codec_cache.py) instead of the clean audio
  -> reverberation -> noise / music / babble -> band-pass, EQ, clipping (the transmission channel)
  -> codec round trip on the fly (only when no cache is given)
With augment.effects_on resolving to `device` (training on CUDA), `MusanAugmenter.plan` stops
before the channel and returns its drawn filters and clipping for the training device to apply to
the batch (systems/common/device_effects.py).
The ADD test conditions, like the demo's test set, code the *noisy* signal (noise, then codec). The
cache codes the clean utterance once per variant, so its samples get noise after the codec; that
is the price of ≤ 5 ms per sample instead of 20–90 ms per round trip. The on-the-fly path and the
augmented dev copy (data_prep/dev_augment.py) keep the test's order.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import scratch_dir
from core.errors import fail

from .audio_io import AudioReadError, ffmpeg_decode, pcm16_wav_samples_at, resample, write_wav
from .codecs import CODEC_SPECS, codec_round_trip

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga"}
CONDITIONS = ("clean", "noise", "music", "babble")
CODECS = ("mp3", "aac", "opus", "gsm", "g722", "amr-nb")
# augmentation conditions as domains (W2V-ASDG's discriminator); any codec round trip is "codec"
DOMAINS = ("clean", "noise", "music", "babble", "codec")
EFFECTS_ON = ("auto", "loader", "device")


def domain_index(condition: str) -> int:
    """The domain of a condition string such as "reverb+babble+codec": codec when coded, else
    its MUSAN kind, else clean (reverberation and channel effects are not domains of their own)."""
    parts = condition.split("+")
    for domain in ("codec", "noise", "music", "babble"):
        if domain in parts:
            return DOMAINS.index(domain)
    return DOMAINS.index("clean")


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


def add_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`mix_at_snr` in float32 throughout (BLAS dots for the powers, no float64 copies): a fifth of
    its cost on a 4 s crop, within float32 rounding of it. The training augmentation's mixer; the
    demo corpus keeps `mix_at_snr`, so that its bytes do not change."""
    speech = np.asarray(speech, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32)
    p_s, p_n = float(np.dot(speech, speech)), float(np.dot(noise, noise))  # sums: the lengths are equal
    if p_n <= 0.0 or p_s <= 0.0:
        return speech.copy()
    return speech + np.float32(np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))) * noise


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
    # codec: with probability p_codec a sample is one of the `codec_variants` cached round trips of
    # its utterance (each a random codec of `codecs` at a random bit rate of CODEC_SPECS)
    p_codec: float = 0.0
    codecs: tuple[str, ...] = CODECS
    codec_variants: int = 3
    # reverberation: a synthetic exponential-decay room response with RT60 uniform in rt60_s
    p_reverb: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)
    # channel (RawBoost-style): band-pass, 7-band parametric EQ (±6 dB), clipping of the top 0–10 % peaks
    p_bandpass: float = 0.0
    p_eq: float = 0.0
    p_clipping: float = 0.0
    # where the channel effects (band-pass, EQ, clipping: most of a worker's cost) run: `loader`
    # (CPU workers, as above), `device` (per batch on the training device, systems/common/
    # device_effects.py), `auto` (device when training on CUDA and the system reads the engine's crops)
    effects_on: str = "auto"

    def __post_init__(self):
        total = self.p_noise + self.p_music + self.p_babble
        if not 0.0 <= total <= 1.0:
            fail(f"augment: p_noise + p_music + p_babble = {total:g}, must lie in [0, 1]")
        for name in ("p_codec", "p_reverb", "p_bandpass", "p_eq", "p_clipping"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                fail(f"augment: {name} = {getattr(self, name)}, must lie in [0, 1]")
        if self.effects_on not in EFFECTS_ON:
            fail(f"augment: effects_on {self.effects_on!r}; valid: {', '.join(EFFECTS_ON)}")
        self.codecs = tuple(str(c) for c in self.codecs)
        unknown = set(self.codecs) - set(CODECS)
        if unknown or not self.codecs:
            fail(f"augment: unknown codec(s) {sorted(unknown)}; valid: {list(CODECS)}")
        if int(self.codec_variants) < 1:
            fail(f"augment: codec_variants = {self.codec_variants}, must be at least 1")
        self.codec_variants = int(self.codec_variants)
        self.snr_db = tuple(float(v) for v in self.snr_db)
        self.babble_speakers = tuple(int(v) for v in self.babble_speakers)
        for name, low in (("snr_db", -math.inf), ("babble_speakers", 1)):
            pair = getattr(self, name)
            if len(pair) != 2 or not (low <= pair[0] <= pair[1] < math.inf):
                fail(f"augment: {name} {list(pair)}: a range [low, high], low <= high"
                     + (f", low >= {low:g}" if low > -math.inf else ""))
        self.rt60_s = tuple(float(v) for v in self.rt60_s)
        if not 0.0 < self.rt60_s[0] <= self.rt60_s[1] <= 3.0:
            fail(f"augment: rt60_s = {list(self.rt60_s)}, must be 0 < low <= high <= 3 seconds")


def seed_globals(rng: np.random.Generator) -> None:
    """audiomentations draws from Python's `random` and NumPy's global generator; seed both from
    ours so that a seeded sample is reproducible."""
    seed = int(rng.integers(2 ** 31))
    random.seed(seed)
    np.random.seed(seed)


class ExcerptReader:
    """Length-n excerpts of audio files at the model rate. Only the excerpt is read (and resampled),
    so memory stays O(n), whatever the file length. 16-bit PCM WAV (MUSAN's format) is read as raw
    frames at their offset, a quarter of libsndfile's cost for the same float32 values; other
    formats go through soundfile's start/frames. Remembers each file's frames, rate, channels and
    sample offset only: a few bytes per file."""

    OPEN_FILES = 32  # descriptors kept open for raw reads, least recently used closed first

    def __init__(self, sample_rate: int):
        self.sr = sample_rate
        self._info: dict[Path, tuple[int, int, int, int | None]] = {}
        self._open: dict[Path, int] = {}  # insertion order is use order

    def _descriptor(self, path: Path) -> int:
        fd = self._open.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            if len(self._open) >= self.OPEN_FILES:
                os.close(self._open.pop(next(iter(self._open))))
        self._open[path] = fd
        return fd

    def __del__(self):
        for fd in getattr(self, "_open", {}).values():
            os.close(fd)

    def __getstate__(self):  # descriptors do not cross into DataLoader workers
        return {**self.__dict__, "_open": {}}

    def info(self, path: Path) -> tuple[int, int, int, int | None]:
        """(frames, rate, channels, byte offset of 16-bit PCM samples or None)."""
        if path not in self._info:
            import soundfile as sf

            try:
                i = sf.info(str(path))
            except Exception as err:  # a damaged bank file must name itself
                fail(f"{path}: cannot read augmentation audio: {' '.join(str(err).split())}")
            samples_at = pcm16_wav_samples_at(path) if i.format == "WAV" and i.subtype == "PCM_16" else None
            self._info[path] = (int(i.frames), int(i.samplerate), int(i.channels), samples_at)
        return self._info[path]

    def frames(self, path: Path, start: int, count: int) -> np.ndarray:
        """Frames [start, start + count) as float32, shape (count', channels)."""
        _, _, channels, samples_at = self.info(path)
        if samples_at is None:
            import soundfile as sf

            x, _ = sf.read(str(path), start=start, frames=count, dtype="float32", always_2d=True)
            return x
        raw = os.pread(self._descriptor(path), 2 * channels * count, samples_at + 2 * channels * start)
        ints = np.frombuffer(raw, dtype="<i2", count=len(raw) // (2 * channels) * channels)
        # libsndfile's int16 -> float32 scaling, 1 / 32768: a power of two, so the values are the same bits
        return np.multiply(ints, np.float32(1.0 / 32768.0), dtype=np.float32).reshape(-1, channels)

    def __call__(self, path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
        frames, sr, _, _ = self.info(path)
        need = int(np.ceil(n * sr / self.sr)) + 1
        start = int(rng.integers(0, frames - need + 1)) if frames > need else 0
        x = self.frames(path, start, min(need, frames))
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)
        x = resample(x, sr, self.sr) if len(x) else np.zeros(1, np.float32)
        return fit_length(x, n, rng)


def synthetic_rirs(count: int, rt60_s: tuple[float, float], sr: int, seed: int = 0) -> list[np.ndarray]:
    """`count` room impulse responses: a direct path, then Gaussian noise decaying by 60 dB over
    RT60 (Polack's statistical model of late reverberation), RT60 spread evenly over `rt60_s`.
    Deterministic, so every worker and run sees the same rooms."""
    rng = np.random.default_rng(seed)
    rirs = []
    for rt60 in np.linspace(rt60_s[0], rt60_s[1], count):
        n = max(2, int(rt60 * sr))
        t = np.arange(n) / sr
        h = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60)  # amplitude -60 dB at rt60
        h[0] = 0.0
        onset = int(0.0025 * sr)  # the first reflections arrive a few ms after the direct sound
        h[:onset] = 0.0
        h *= 0.5 / np.sqrt(np.sum(h ** 2) + 1e-12)  # direct-to-reverberant energy ratio 6 dB
        h[0] = 1.0
        rirs.append(h.astype(np.float32))
    return rirs


# the channel's linear filters as second-order sections, for a channel applied elsewhere than in
# the loader (augment.effects_on): a band-pass of order <= 4 (BandPassFilter's 24 dB/octave) and
# the EQ's seven bands; unused rows are the identity section
CHANNEL_SECTIONS = 11
IDENTITY_SECTION = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
UNFILTERED = np.tile(np.asarray(IDENTITY_SECTION), (CHANNEL_SECTIONS, 1))


def zpk_sections(zeros: np.ndarray, poles: np.ndarray, gain: float) -> np.ndarray:
    """Second-order sections of a real filter with 2m zeros and 2m poles: conjugate roots paired,
    real ones two by two, the gain on the first. Every such pairing has the same frequency
    response, which is all the device path evaluates; scipy's zpk2sos chooses the pairing that
    keeps time-domain filtering well conditioned, at 8x the cost of the design itself."""
    def quadratics(roots: np.ndarray) -> list[list[float]]:
        complex_ = roots[np.abs(roots.imag) > 1e-9]
        real = np.sort(roots[np.abs(roots.imag) <= 1e-9].real)
        upper = complex_[complex_.imag > 0]
        if len(real) % 2 or 2 * len(upper) != len(complex_):
            fail("augment: a filter whose roots do not pair into real second-order sections")
        return ([[1.0, -2.0 * r.real, abs(r) ** 2] for r in upper]
                + [[1.0, -(a + b), a * b] for a, b in zip(real[::2], real[1::2])])

    num, den = quadratics(np.asarray(zeros)), quadratics(np.asarray(poles))
    if len(num) != len(den):
        fail("augment: a filter with unequal numbers of zeros and poles")
    sections = np.array([b + a for b, a in zip(num, den)])
    sections[0, :3] *= gain
    return sections


def channel_sos(transform, sample_rate: int) -> np.ndarray:
    """The second-order sections audiomentations' `apply` filters with, for a band-pass filter or
    seven-band EQ whose parameters `randomize_parameters` has drawn (the same Nyquist clamps)."""
    from audiomentations import BandPassFilter, SevenBandParametricEQ
    from scipy.signal import butter

    nyquist = sample_rate // 2
    if isinstance(transform, BandPassFilter):
        if transform.zero_phase:
            fail("augment: a zero-phase band-pass filter has no causal sections")
        q = transform.parameters
        low, high = q["center_freq"] - q["bandwidth"] / 2, q["center_freq"] + q["bandwidth"] / 2
        return zpk_sections(*butter(q["rolloff"] // 6, [low, min(high, nyquist * 0.9999)], btype="bandpass",
                                    fs=sample_rate, output="zpk"))
    if isinstance(transform, SevenBandParametricEQ):
        bands = [transform.low_shelf_filter, *transform.peaking_filters, transform.high_shelf_filter]
        sections = []
        for band in bands:
            q = band.parameters
            centre = min(q["center_freq"], nyquist * 0.9999)
            sections.append(band._get_biquad_coefficients_from_input_parameters(
                centre, q["gain_db"], q["q_factor"], sample_rate))
        return np.concatenate(sections)
    fail(f"augment: {type(transform).__name__} is not a linear channel filter")


class MusanAugmenter:
    """Callable `(audio, rng, coded=None) -> (augmented audio, condition)` for 16 kHz float32 mono.

    `codec_cache` (data_prep.codec_cache.CodecVariants of the training split) makes codec
    augmentation a read: `source(split, i, rng)` returns utterance i, or with probability p_codec
    one of its cached codec variants, and its codec name for `__call__(..., coded=name)`. Without a
    cache, `__call__` codes on the fly (20–90 ms per round trip; a warning says so).
    """

    N_RIRS = 16
    RIR_SPECTRA = 2 * N_RIRS

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000, codec_cache=None, quiet: bool = False):
        self.cfg = cfg
        self.sr = sample_rate
        self.files = musan_folders(cfg.musan) if cfg.musan else None
        self.codec_cache = codec_cache
        self.read_excerpt = ExcerptReader(sample_rate)
        if self.files:
            from audiomentations import AddBackgroundNoise

            lo, hi = cfg.snr_db
            self.background = {
                kind: AddBackgroundNoise(self.files[kind], min_snr_db=lo, max_snr_db=hi,
                                         noise_rms="relative", p=1.0)
                for kind in ("noise", "music")
            }
        self.rirs = synthetic_rirs(self.N_RIRS, cfg.rt60_s, sample_rate) if cfg.p_reverb > 0 else []
        self._rir_spectra: dict[tuple[int, int], np.ndarray] = {}  # insertion order is use order
        self.channel = []
        if cfg.p_bandpass or cfg.p_eq or cfg.p_clipping:
            from audiomentations import BandPassFilter, ClippingDistortion, SevenBandParametricEQ

            # band edges of telephone to wide-band channels; a 6 dB EQ span and 0–10 % clipped
            # samples are RawBoost's milder settings (Tak et al., ICASSP 2022, §3)
            self.channel = [(cfg.p_bandpass, BandPassFilter(min_center_freq=800.0, max_center_freq=2000.0,
                                                            min_bandwidth_fraction=1.0, max_bandwidth_fraction=1.9,
                                                            p=1.0)),
                            (cfg.p_eq, SevenBandParametricEQ(min_gain_db=-6.0, max_gain_db=6.0, p=1.0)),
                            (cfg.p_clipping, ClippingDistortion(min_percentile_threshold=0,
                                                                max_percentile_threshold=10, p=1.0))]
        if cfg.p_codec > 0 and codec_cache is None and not quiet:
            print(f"[augment] warning: p_codec {cfg.p_codec:g} without a codec cache: coding on the fly, 20–90 ms "
                  "per coded sample; `python -m data_prep.prepare` with --codec_variants builds the cache")

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

    def source(self, split, i: int, rng: np.random.Generator) -> tuple[np.ndarray, str | None]:
        """Utterance i of `split`, or (with probability p_codec, when a cache exists) one of its
        codec variants; with the codec's name, "" for the clean audio, or None when there is no
        cache (then `__call__` decides on the codec itself)."""
        if self.codec_cache is None:
            return split.audio(i), None
        if self.cfg.p_codec > 0 and rng.random() < self.cfg.p_codec:
            k = int(rng.integers(self.codec_cache.k))
            return self.codec_cache.audio(i, k), self.codec_cache.codec_of(i, k)
        return split.audio(i), ""

    def babble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.cfg.babble_speakers
        k = int(rng.integers(lo, hi + 1))
        picks = rng.choice(len(self.files["speech"]), size=k, replace=len(self.files["speech"]) < k)
        mix = np.zeros(n, dtype=np.float32)
        for i in picks:
            talker = self.read_excerpt(self.files["speech"][i], n, rng)
            # float32 throughout: 3–7 talkers at unit power lose nothing audible, and a float64 copy
            # of each was a third of a babble sample's cost
            p = float(np.dot(talker, talker)) / n
            if p > 0:
                mix += talker * np.float32(1.0 / np.sqrt(p))  # equal loudness per talker
        return mix

    def add(self, x: np.ndarray, condition: str, rng: np.random.Generator, kit_reader: bool = False) -> np.ndarray:
        """x with the condition's noise. `kit_reader`: noise and music excerpts through
        `read_excerpt` and `add_at_snr`, as babble, instead of audiomentations' AddBackgroundNoise
        (the same distributions at a fraction of the cost; `plan`)."""
        if condition == "clean":
            return x
        if condition == "babble" or kit_reader:
            snr = rng.uniform(*self.cfg.snr_db)
            if condition == "babble":
                return add_at_snr(x, self.babble(len(x), rng), snr)
            bank = self.files[condition]
            return add_at_snr(x, self.read_excerpt(bank[int(rng.integers(len(bank)))], len(x), rng), snr)
        seed_globals(rng)
        return self.background[condition](samples=x.astype(np.float32), sample_rate=self.sr)

    def room_and_noise(self, x: np.ndarray, rng: np.random.Generator, coded: str | None,
                       kit_reader: bool = False) -> tuple[np.ndarray, list[str]]:
        """The first effects of a sample, reverberation then noise, and their condition tags."""
        tags = ["codec"] if coded else []
        y = x
        if self.rirs and rng.random() < self.cfg.p_reverb:
            y = self.reverberate(y, rng)
            tags.append("reverb")
        condition = self.choose_condition(rng)
        y = self.add(y, condition, rng, kit_reader)
        if condition != "clean":
            tags.append(condition)
        return y, tags

    def rir_spectrum(self, i: int, nfft: int) -> np.ndarray:
        """rfft of room response i at FFT length nfft, remembered for the RIR_SPECTRA most recent
        (i, nfft): training crops have one length, so a worker holds at most N_RIRS spectra
        (16 × 0.3 MB for 4 s crops); whole dev utterances (dev_augment) vary and cycle through."""
        from scipy import fft

        key = (i, nfft)
        spectrum = self._rir_spectra.pop(key, None)
        if spectrum is None:
            spectrum = fft.rfft(self.rirs[i], nfft)
            if len(self._rir_spectra) >= self.RIR_SPECTRA:
                self._rir_spectra.pop(next(iter(self._rir_spectra)))
        self._rir_spectra[key] = spectrum
        return spectrum

    def reverberate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy import fft

        i = int(rng.integers(len(self.rirs)))
        # one FFT pair with the response's spectrum remembered: a third of oaconvolve's time
        nfft = fft.next_fast_len(len(x) + len(self.rirs[i]) - 1, real=True)
        y = fft.irfft(fft.rfft(x, nfft) * self.rir_spectrum(i, nfft), nfft)[: len(x)]
        p_in, p_out = power(x), power(y)
        # keep the level the preparation stage normalised to
        return (y * np.sqrt(p_in / p_out) if p_out > 0 else y).astype(np.float32)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, coded: str | None = None) -> tuple[np.ndarray, str]:
        """`coded`: the codec `source` applied ("" for none); None when the caller did not use
        `source`, in which case the codec (if drawn) is applied here, on the fly, after the noise."""
        y, tags = self.room_and_noise(x, rng, coded)
        for transform in self.drawn_channel(y, rng, tags):
            y = transform.apply(np.asarray(y, dtype=np.float32), self.sr) if len(y) else y
        if coded is None and self.cfg.p_codec > 0 and rng.random() < self.cfg.p_codec:
            codec = str(rng.choice(self.cfg.codecs))
            rates = CODEC_SPECS[codec][3]
            y = codec_round_trip(y, self.sr, codec, float(rates[int(rng.integers(len(rates)))]))
            tags.append("codec")
        return np.asarray(y, dtype=np.float32), "+".join(tags) if tags else "clean"

    def drawn_channel(self, y: np.ndarray, rng: np.random.Generator, tags: list[str]):
        """The channel transforms this sample gets, in order, each with its parameters drawn as its
        own `__call__` would draw them (from the global generators, seeded off `rng`); "channel"
        joins `tags` when there is one. Lazy, as the draws interleave with applying them."""
        for p, transform in self.channel:
            if rng.random() < p:
                seed_globals(rng)
                transform.randomize_parameters(y, self.sr)
                if "channel" not in tags:
                    tags.append("channel")
                yield transform

    def plan(self, x: np.ndarray, rng: np.random.Generator, coded: str) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
        """`__call__` with the transmission channel left for the training device to apply per batch
        (augment.effects_on; systems/common/device_effects.py). Reverberation and noise are applied
        here, since they need the room responses and the noise bank; the band-pass, EQ and clipping,
        which cost a loader worker most, are drawn as `__call__` draws them and returned as arrays
        of fixed shape, so that batches collate: `sos` (CHANNEL_SECTIONS second-order sections,
        identity rows where unused) and `clip_percentile` (-1: none). Every draw is `__call__`'s,
        except that noise and music excerpts come from the kit's excerpt reader rather than
        audiomentations' AddBackgroundNoise (the same file, offset and SNR distributions, at a
        fraction of the cost). `coded` comes from `source`: round trips are never deferred.
        Returns (audio, channel plan, condition tag)."""
        if coded is None and self.cfg.p_codec > 0:
            fail("augment: effects off the loader need the codec cache when p_codec > 0")
        from audiomentations import ClippingDistortion

        y, tags = self.room_and_noise(x, rng, coded, kit_reader=True)
        sos = UNFILTERED.copy()
        used, clip = 0, -1.0
        for transform in self.drawn_channel(y, rng, tags):
            if isinstance(transform, ClippingDistortion):
                clip = float(transform.parameters["percentile_threshold"])
            else:
                sections = channel_sos(transform, self.sr)
                sos[used:used + len(sections)] = sections
                used += len(sections)
        return (np.asarray(y, dtype=np.float32), {"sos": sos, "clip_percentile": np.float32(clip)},
                "+".join(tags) if tags else "clean")


def codec_roundtrip(x: np.ndarray, sr: int, codec: str, rng: np.random.Generator) -> np.ndarray:
    """Encode with a lossy speech/music codec and decode back to `sr` (ffmpeg; AMR-NB via sox).

    The output is cut or zero-padded to the input length so labels and windows stay aligned.
    """
    if codec not in CODECS:
        fail(f"unknown codec {codec!r}; valid: {list(CODECS)}")
    with scratch_dir("kit_codec") as tmp:
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
    if len(y) >= len(x):
        return y[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def have_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]
