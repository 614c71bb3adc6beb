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
