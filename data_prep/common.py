"""Small shared helpers: one-line errors, atomic writes, and option stamps that let a stage skip."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class KitError(Exception):
    """An error the user can act on; printed as one line, never as a traceback."""


def fail(message: str) -> None:
    raise KitError(message)


def run_cli(main) -> None:
    """Run a CLI entry point and turn KitError into a one-line message with exit code 2."""
    try:
        main()
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the user's usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in when complete.

    A directory that is half written after an interruption keeps its temporary name, so it
    can never be mistaken for a finished output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.parent / f".{path.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


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
    except json.JSONDecodeError:
        return False
    return saved.get("digest") == options_digest(options)


def write_stamp(out_dir: str | os.PathLike, options: dict[str, Any]) -> None:
    payload = {"digest": options_digest(options), "options": options}
    write_text_atomic(Path(out_dir) / STAMP_NAME,
                      json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def file_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Size and modification time: enough to notice that an input file was replaced."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
