"""Stage stamps: a stage's resolved options stored beside its outputs, so that an unchanged
stage is skipped and a changed one re-runs (SpeechBrain's `voxceleb_prepare` pattern)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from core.atomic import write_text_atomic

STAMP_NAME = ".options.json"


def options_digest(options: dict[str, Any]) -> str:
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def stage_is_current(out_dir: str | os.PathLike, options: dict[str, Any]) -> bool:
    """True when `out_dir` was completed earlier with exactly these resolved options."""
    stamp = Path(out_dir) / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        saved = json.loads(stamp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and saved.get("digest") == options_digest(options)


def write_stamp(out_dir: str | os.PathLike, options: dict[str, Any]) -> None:
    payload = {"digest": options_digest(options), "options": options}
    write_text_atomic(Path(out_dir) / STAMP_NAME,
                      json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def file_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Size and modification time: enough to notice that an input file was replaced."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
