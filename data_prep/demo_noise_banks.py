"""The demo corpus's two noise banks, built from disjoint sources.

- The evaluation bank (hold music, desktop sound effects, babble of held-out real speech) is mixed
  into test utterances only; it lives in the build's scratch folder and never reaches the corpus.
- The MUSAN-layout bank (`musan_demo/{noise,music,speech}`: sox-synthesised coloured noise and
  sound icons, timidity-rendered random MIDI, klettres letter recordings) is written into the
  corpus for training augmentation.

Keeping the sources apart means test conditions are unseen noise, as they are in the real task.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from core.errors import fail

from .audio_io import ffmpeg_decode, write_wav
from .augment import fit_length, power
from .demo_synth import SR, decode_real, read_any, run_tool

MOH_DIR = "/usr/share/asterisk/moh"
FREEDESKTOP_DIR = "/usr/share/sounds/freedesktop/stereo"
SOUND_ICONS_DIR = "/usr/share/sounds/sound-icons"
KLETTRES_DIR = "/usr/share/klettres"
TIMIDITY_CFG = "/etc/timidity/freepats.cfg"
MUSIC_PROGRAMS = (0, 4, 6, 16, 19, 24, 25, 40, 42, 46, 48, 56, 64, 68, 71, 73)


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
            run_tool(["sox", "-R", "-n", "-r", str(SR), "-b", "16", "-c", "1", str(target), "synth", "8", colour,
                      "tremolo", str(0.5 + take * 2.5), "40", "vol", "0.5"], "sox synth")
            n += 1
    for f in sorted(Path(SOUND_ICONS_DIR).glob("*.wav")) if Path(SOUND_ICONS_DIR).is_dir() else []:
        write_wav(noise_dir / f"icon-{f.stem}.wav", read_any(f), SR)
        n += 1
    counts["noise"] = n
    programs = list(MUSIC_PROGRAMS)
    for i in range(8):
        mid = tmp / f"m{i}.mid"
        write_midi(mid, rng, programs[i % len(programs)])
        raw = tmp / f"m{i}.wav"
        run_tool(["timidity", "-c", TIMIDITY_CFG, "-Ow", "--output-mono", "-s", str(SR), "-o", str(raw), str(mid)],
                 "timidity")
        x = read_any(raw)
        write_wav(music_dir / f"midi-{i:02d}.wav", 0.5 * x / max(1e-6, float(np.abs(x).max())), SR)
    counts["music"] = 8
    clips = sorted(Path(KLETTRES_DIR).rglob("*.ogg")) if Path(KLETTRES_DIR).is_dir() else []
    if not clips:
        fail(f"no recordings under {KLETTRES_DIR}: install klettres-data")
    for i in range(30):
        picks = rng.choice(len(clips), size=6, replace=False)
        parts = [read_any(clips[j]) for j in sorted(picks)]
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
        np.save(bank / "effects" / f"{f.stem}.npy", read_any(f))
    for i, f in enumerate(babble_sources):
        np.save(bank / "babble" / f"{i:03d}.npy", decode_real(f))
    for kind in ("music", "effects", "babble"):
        if not any((bank / kind).iterdir()):
            fail(f"evaluation noise bank has no {kind}: check the Debian packages")
    return bank


# Per worker process: each spawned worker loads a kind's .npy files once, on first use.
_BANK_CACHE: dict[str, list[np.ndarray]] = {}


def eval_noise(bank: Path, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of evaluation noise of one kind; babble sums 3–5 talkers at equal power."""
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
