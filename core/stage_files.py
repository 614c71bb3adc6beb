"""Readers for the small files one stage leaves for the next (summary.json, *.npy, id lists).

Each failure is one KitError naming the file, what is wrong with it and the stage that writes it,
so that a damaged or truncated file says how to make it again instead of raising a traceback.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import fail


def _rerun(stage: str | None) -> str:
    return f"; re-run the {stage} stage" if stage else ""


def read_json(path: str | os.PathLike, what: str, stage: str | None = None,
              keys: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """A JSON object; `keys` maps required keys to their expected type(s)."""
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: {what} is missing{_rerun(stage)}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        fail(f"{path}: cannot read {what}: {err.strerror or err}")
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        fail(f"{path}: {what} is corrupt or truncated ({str(err).splitlines()[0]}){_rerun(stage)}")
    if not isinstance(data, dict):
        fail(f"{path}: {what} is not a JSON object{_rerun(stage)}")
    for key, kind in (keys or {}).items():
        if key not in data:
            fail(f"{path}: {what} has no {key!r}{_rerun(stage)}")
        if not isinstance(data[key], kind):
            fail(f"{path}: {what}: {key!r} has the wrong type ({type(data[key]).__name__}){_rerun(stage)}")
    return data


def load_npy(path: str | os.PathLike, what: str = "array", stage: str | None = None, ndim: int | None = None,
             finite: bool = False) -> np.ndarray:
    """A .npy array (never a pickle); optionally of `ndim` dimensions and all finite."""
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: {what} is missing{_rerun(stage)}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":
            fail(f"{path}: {what} is not a .npy file{' (empty)' if not magic else ''}{_rerun(stage)}")
        array = np.load(path, allow_pickle=False)
    except OSError as err:
        reason = err.strerror or str(err).splitlines()[0]
        fail(f"{path}: {what} is unreadable ({reason}){_rerun(stage)}")
    except (ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        fail(f"{path}: {what} is corrupt or truncated ({reason}){_rerun(stage)}")
    if not isinstance(array, np.ndarray):
        fail(f"{path}: {what} is not a single array{_rerun(stage)}")
    if ndim is not None and array.ndim != ndim:
        fail(f"{path}: {what} has shape {array.shape}, expected {ndim} dimension(s){_rerun(stage)}")
    if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        fail(f"{path}: {what} holds NaN or infinite values{_rerun(stage)}")
    return array


def read_ids(path: str | os.PathLike, what: str = "id list", stage: str | None = None) -> list[str]:
    """One utterance id per line."""
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: {what} is missing{_rerun(stage)}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        fail(f"{path}: cannot read {what}: {err.strerror or err}")
    except UnicodeDecodeError:
        fail(f"{path}: {what} is not UTF-8 text{_rerun(stage)}")
    if text and not text.endswith("\n"):
        fail(f"{path}: {what} is truncated (its last line is incomplete){_rerun(stage)}")
    return text.split()


class NpyRows:
    """A 2-D .npy array read by row ranges, never whole: the header is checked on opening, each
    block is read with one positioned read (no memory map, whose touched pages would stay resident)
    and, with `finite`, checked for NaN/inf as it is read. Memory: the blocks asked for."""

    def __init__(self, path: str | os.PathLike, what: str = "array", stage: str | None = None, finite: bool = False):
        self.path, self.what, self.stage, self.finite = Path(path), what, stage, finite
        if not self.path.is_file():
            fail(f"{self.path}: {what} is missing{_rerun(stage)}")
        try:
            # a memory map reads only the header here; its pages are never touched
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
            shape, dtype = mapped.shape, mapped.dtype
            fortran = mapped.flags.f_contiguous and not mapped.flags.c_contiguous
            self.data_offset = int(mapped.offset)
            del mapped
            size = self.path.stat().st_size
        except OSError as err:
            fail(f"{self.path}: {what} is unreadable ({err.strerror or err}){_rerun(stage)}")
        except (ValueError, EOFError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            fail(f"{self.path}: {what} is corrupt or truncated ({reason}){_rerun(stage)}")
        if len(shape) != 2:
            fail(f"{self.path}: {what} has shape {shape}, expected 2 dimension(s){_rerun(stage)}")
        if fortran or dtype.hasobject or dtype.kind not in "fiu":
            fail(f"{self.path}: {what} must be a C-order numeric array, got {dtype}"
                 f"{' in Fortran order' if fortran else ''}{_rerun(stage)}")
        self.shape, self.dtype = tuple(int(s) for s in shape), dtype
        self.row_bytes = self.shape[1] * dtype.itemsize
        if size < self.data_offset + self.shape[0] * self.row_bytes:
            fail(f"{self.path}: {what} is corrupt or truncated ({size} bytes for shape {self.shape}){_rerun(stage)}")

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop as a new array."""
        start, stop = max(0, start), min(stop, self.shape[0])
        out = np.empty((max(stop - start, 0), self.shape[1]), dtype=self.dtype)
        if len(out):
            with open(self.path, "rb") as fh:
                view = memoryview(out.reshape(-1).view(np.uint8))
                got = os.preadv(fh.fileno(), [view], self.data_offset + start * self.row_bytes)
            if got != out.nbytes:
                fail(f"{self.path}: {self.what} is corrupt or truncated (short read){_rerun(self.stage)}")
            if self.finite and out.dtype.kind == "f" and not np.all(np.isfinite(out)):
                fail(f"{self.path}: {self.what} holds NaN or infinite values{_rerun(self.stage)}")
        return out

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self.rows(start, stop)
        index = np.asarray(key)
        if index.size == 0:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        lo = int(index.min())
        return self.rows(lo, int(index.max()) + 1)[index - lo]
