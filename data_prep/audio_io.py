"""Reading audio as the systems see it: 16 kHz mono float32, level-normalised, edge silence cropped.

Seed 004 §3.1: the Track 3 audio mixes 16 and 24 kHz (44.1 kHz also occurs) with widely varying
volume, so everything is resampled to 16 kHz and normalised; leading/trailing silence is cropped.
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

TARGET_SR = 16000


class AudioReadError(Exception):
    """The file exists but cannot be decoded (or holds no samples)."""


def _wav_data_chunk(fh, size: int) -> tuple[str, bytes | None, int, int] | None:
    """(byte order, the `fmt ` chunk's first 16 bytes or None, offset of the sample bytes, their
    declared length) of an open RIFF/WAVE file of `size` bytes; None when it is not one or has no
    `data` chunk."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "little" if head[:4] == b"RIFF" else "big"
    pos, fmt = 12, None
    while pos + 8 <= size:
        fh.seek(pos)
        chunk = fh.read(8)
        cid, clen = chunk[:4], int.from_bytes(chunk[4:8], order)
        if cid == b"fmt ":
            fmt = fh.read(16)
        if cid == b"data":
            return order, fmt, pos + 8, clen
        pos += 8 + clen + (clen & 1)
    return None


def wav_truncation(path: str | Path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None when it is whole (or not a RIFF/WAVE file).

    libsndfile reads a WAV whose header declares more sample bytes than the file holds as if it were
    complete, only shorter: an interrupted copy would pass as a short utterance. The `data` chunk's
    declared size is compared with the bytes after it. Sizes 0 and 0xFFFFFFFF are what streaming
    writers (ffmpeg to a pipe) leave when the length is unknown: not truncation.
    """
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            found = _wav_data_chunk(fh, size)
    except OSError:
        return None  # the decoder reports unreadable files itself
    if found is None:
        return None
    order, fmt, start, clen = found
    held = size - start
    if clen in (0, 0xFFFFFFFF) or held >= clen:
        return None
    if fmt is not None and len(fmt) >= 16:
        rate, align = int.from_bytes(fmt[4:8], order), int.from_bytes(fmt[12:14], order)
        if rate and align:
            return (f"truncated: the header declares {clen / align / rate:.3f} s ({clen} bytes of "
                    f"samples) but the file holds {held / align / rate:.3f} s ({held} bytes); "
                    "copy the file again")
    return f"truncated: the header declares {clen} bytes of samples but the file holds {held}"


def pcm16_wav_samples_at(path: str | Path) -> int | None:
    """Byte offset of the samples of a little-endian 16-bit PCM WAV (MUSAN's format), whose frames
    can then be read at any offset without a decoder; None for any other file."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as fh:
            found = _wav_data_chunk(fh, size)
    except OSError:
        return None
    if found is None or found[0] != "little" or found[1] is None or len(found[1]) < 16:
        return None
    fmt = found[1]
    tag, bits = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[14:16], "little")
    # 1: PCM; 0xFFFE (extensible) carries its sub-format elsewhere: left to libsndfile
    return found[2] if tag == 1 and bits == 16 else None


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono at its own rate (channels averaged). A truncated WAV, an
    empty file and samples that are NaN or infinite (float WAVs can hold them) are AudioReadErrors."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise AudioReadError("empty file (0 bytes)")
    truncated = wav_truncation(path)
    if truncated:
        raise AudioReadError(truncated)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile reports every decode failure as a RuntimeError variant
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # libsndfile names the file again ("Error opening '<path>': ..."); the caller names it once
        first_line = first_line.replace(f"Error opening {str(path)!r}: ", "")
        raise AudioReadError(first_line) from None
    if data.shape[0] == 0:
        raise AudioReadError("no samples")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(np.count_nonzero(~finite.all(axis=1)))
        first = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise AudioReadError(f"{bad} of {data.shape[0]} samples are NaN or infinite (first at "
                             f"{first / sr:.3f} s); the file is damaged")
    return data.mean(axis=1).astype(np.float32), int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int = TARGET_SR) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # here, not at import: scipy.signal takes ~1 s to load

    # polyphase at the exact rational ratio: 24 and 44.1 kHz reach 16 kHz without drift or an FFT's edge ringing
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def trim_edge_silence(x: np.ndarray, sr: int, top_db: float = 60.0, frame_ms: float = 20.0,
                      min_keep_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing frames whose RMS is more than `top_db` below the loudest frame.

    Never returns less than `min_keep_s` of audio: an all-silent or near-empty file is kept whole,
    because cropping an utterance to nothing would silently drop it.
    """
    # 20 ms frames: short enough to keep word onsets, long enough for a stable RMS
    frame = max(1, int(sr * frame_ms / 1000))
    n_frames = len(x) // frame
    if n_frames < 2:
        return x
    frames = x[: n_frames * frame].reshape(n_frames, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    peak = rms.max()
    if peak <= 0.0:
        return x
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-20) / peak) > -top_db)
    start = loud[0] * frame
    stop = len(x) if loud[-1] == n_frames - 1 else (loud[-1] + 1) * frame
    if (stop - start) < min_keep_s * sr:
        return x
    return x[start:stop]


def rms_dbfs(x: np.ndarray) -> float:
    power = float(np.mean(np.asarray(x, dtype=np.float64) ** 2)) if len(x) else 0.0
    return 10 * math.log10(power) if power > 0 else -math.inf


def normalise_level(x: np.ndarray, mode: str = "rms", target_dbfs: float = -26.0,
                    peak_limit: float = 0.99) -> np.ndarray:
    """Scale to a target RMS level (or peak), never letting the peak exceed `peak_limit`."""
    if mode == "none":
        return x
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak == 0.0:
        return x
    if mode == "rms":
        gain = 10 ** ((target_dbfs - rms_dbfs(x)) / 20)
    elif mode == "peak":
        gain = peak_limit / peak
    else:
        raise ValueError(f"unknown normalisation mode {mode!r} (rms, peak, none)")
    # the peak limit wins over the RMS target: clipping would add an artefact that systems could learn
    gain = min(gain, peak_limit / peak)
    return (x * gain).astype(np.float32)


@dataclass(frozen=True)
class LoadOptions:
    """How an utterance is turned into model input; stored beside every prepared split."""

    sample_rate: int = TARGET_SR
    normalise: str = "rms"
    target_dbfs: float = -26.0
    trim_silence: bool = True
    trim_top_db: float = 60.0


# at or below two steps of 16-bit PCM (-84 dBFS) a file holds digital silence or dither, not speech;
# normalisation would lift it to speech level, so it is judged before
NO_SIGNAL_PEAK = 2.0 ** -14
# the trimming floor (trim_edge_silence's min_keep_s): five LFCC frames, too little to attribute
MIN_EVIDENCE_S = 0.1


def evidence_warning(x: np.ndarray, sr: int) -> str:
    """Why a readable file's label would say little ("" when nothing): no signal, or under
    MIN_EVIDENCE_S of audio. Such files are still labelled (a submission needs every line)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= NO_SIGNAL_PEAK:
        level = (f"loudest sample {20 * math.log10(peak):.1f} dBFS, at or below "
                 f"{20 * math.log10(NO_SIGNAL_PEAK):.0f} dBFS") if peak > 0 else "digital silence"
        return f"no signal ({level}): its label carries no evidence"
    if len(x) < MIN_EVIDENCE_S * sr:
        return (f"{len(x) / sr:.4f} s of audio (under {MIN_EVIDENCE_S} s): its label carries almost no "
                "evidence")
    return ""


def read_for_model(path: str | Path, opts: LoadOptions = LoadOptions()) -> tuple[np.ndarray, int, str]:
    """Decode, mix to mono, resample, crop edge silence, normalise. Returns the audio, the file's
    original rate and its evidence_warning."""
    x, sr = read_audio(path)
    x = resample(x, sr, opts.sample_rate)
    warning = evidence_warning(x, opts.sample_rate)
    if opts.trim_silence:
        x = trim_edge_silence(x, opts.sample_rate, opts.trim_top_db)
    x = normalise_level(x, opts.normalise, opts.target_dbfs)
    return x, sr, warning


def ffmpeg_decode(path: str | Path, sr: int = TARGET_SR, input_format: str | None = None) -> np.ndarray:
    """Decode anything ffmpeg reads to float32 mono at `sr` (used for G.722, Ogg and codec output)."""
    # one thread: preparation and augmentation already run one process per core
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1"]
    if input_format:
        cmd += ["-f", input_format]
    cmd += ["-i", str(path), "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioReadError(msg[-1] if msg else f"ffmpeg exit {proc.returncode}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def write_wav(path: str | Path, x: np.ndarray, sr: int) -> None:
    """PCM_16 wav, clipped to [-1, 1] (the format of the Track 3 audio)."""
    sf.write(str(path), np.clip(x, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
