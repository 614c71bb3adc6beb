"""Lossy codec round trips in-process, through FFmpeg's libraries (PyAV).

Why not the `ffmpeg` command: a process start costs 70-150 ms, several times a CPU training step,
which is what kept codec augmentation switched off. PyAV links the same encoders into this process,
so a round trip costs only the encoding itself. GSM 06.10 is the one codec of the list whose encoder
PyAV's bundled FFmpeg lacks; it alone still goes through the `ffmpeg` command (through pipes).

Every round trip returns float32 at the input rate and the input length (cut, or zero-padded where
an encoder's frame grid ends early), so that labels, crops and windows stay aligned. Silent,
near-silent and very short inputs are valid (a sub-frame input is padded to one codec frame first).
"""
from __future__ import annotations

import io
import subprocess

import numpy as np

from core.errors import fail

# name -> (encoder, container, encoder rate or None for the input rate, bit rates in kbit/s);
# the bit rates span each codec's speech range (ADD 2023 / SFR codec conditions, seed 000 §II)
CODEC_SPECS: dict[str, tuple[str, str, int | None, tuple[float, ...]]] = {
    "mp3": ("libmp3lame", "mp3", None, (16, 24, 32, 48, 64)),
    "aac": ("aac", "adts", None, (16, 24, 32, 48, 64)),
    "opus": ("libopus", "ogg", 16000, (8, 12, 16, 24, 32, 64)),
    "g722": ("g722", "nut", 16000, (64,)),
    "amr-nb": ("libopencore_amrnb", "amr", 8000, (4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)),
    "gsm": ("libgsm", "gsm", 8000, (13,)),
}
CODEC_NAMES = tuple(CODEC_SPECS)
# shortest input handed to an encoder: 0.1 s covers one frame of every codec above (AAC: 1024 samples)
MIN_ENCODE_SECONDS = 0.1


def _encode_decode_pyav(x: np.ndarray, sr: int, encoder: str, container: str, rate: int,
                        bit_rate: int) -> np.ndarray:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        try:
            stream = out.add_stream(encoder, rate=rate)
        except av.codec.codec.UnknownCodecError:
            # PyAV's wheels bundle their own FFmpeg, and a release may leave an encoder out (18.1.1
            # has no libopencore_amrnb): the pin in requirements.txt names one that has them all
            fail(f"encoder {encoder}: not in PyAV {av.__version__}'s FFmpeg; install the PyAV of "
                 "requirements.txt (bash data_prep/setup_env.sh, or stage 0 of run_track3.sh)")
        stream.layout = "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        # the resampler converts to the encoder's sample format and rate, and (frame_size) cuts the
        # frames each encoder needs
        to_codec = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate,
                                     frame_size=stream.codec_context.frame_size or None)
        for piece in (*to_codec.resample(frame), *to_codec.resample(None)):
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return _decode_bytes(buf.getvalue(), container, sr)


def _decode_bytes(data: bytes, container: str, sr: int) -> np.ndarray:
    import av

    pieces = []
    with av.open(io.BytesIO(data), "r", format=container) as inp:
        to_float = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in inp.decode(audio=0):
            pieces.extend(f.to_ndarray()[0] for f in to_float.resample(frame))
        pieces.extend(f.to_ndarray()[0] for f in to_float.resample(None))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _encode_gsm_ffmpeg(x: np.ndarray, sr: int) -> bytes:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-f", "f32le", "-ar", str(sr), "-ac", "1",
           "-i", "pipe:0", "-ar", "8000", "-c:a", "libgsm", "-f", "gsm", "pipe:1"]
    try:
        proc = subprocess.run(cmd, input=x.astype("<f4").tobytes(), capture_output=True)
    except FileNotFoundError:
        fail("codec gsm: the ffmpeg command is not installed (Debian: apt-get install ffmpeg)")
    if proc.returncode != 0:
        fail(f"codec gsm: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    return proc.stdout


def codec_round_trip(x: np.ndarray, sr: int, codec: str, kbps: float | None = None) -> np.ndarray:
    """Encode `x` (mono float, rate `sr`) with `codec` at `kbps` (default: the codec's middle rate)
    and decode it back to `sr`, at the input length."""
    if codec not in CODEC_SPECS:
        fail(f"unknown codec {codec!r}; valid: {', '.join(CODEC_NAMES)}")
    encoder, container, rate, rates = CODEC_SPECS[codec]
    kbps = rates[len(rates) // 2] if kbps is None else kbps
    x = np.nan_to_num(np.asarray(x, dtype=np.float32).reshape(-1))
    n = len(x)
    if n == 0:
        return x.copy()
    padded = np.pad(x, (0, max(0, int(MIN_ENCODE_SECONDS * sr) - n)))
    if codec == "gsm":
        y = _decode_bytes(_encode_gsm_ffmpeg(padded, sr), container, sr)
    else:
        y = _encode_decode_pyav(padded, sr, encoder, container, rate or sr, int(round(kbps * 1000)))
    y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
    return y.astype(np.float32, copy=False)
