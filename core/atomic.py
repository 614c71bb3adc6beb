"""Atomic outputs: a file or folder appears under its final name only when it is complete.

Every write failure (a full disk, a file size limit, a read-only or missing folder) becomes one
KitError naming the output, and whatever was half written is removed: an output either exists
complete or does not exist.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from core.errors import KitError, fail


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; done once, on first write, never at import
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, err: OSError) -> str:
    """`<path>: cannot write: <reason>` (reason: "No space left on device", "Permission denied" ...)."""
    return f"{path}: cannot write: {err.strerror or err}"


def ensure_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` (and its parents); a failure is a KitError naming the folder and why."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            fail(f"{folder}: cannot create folder: {blocker} is a file, not a folder")
        fail(f"{folder}: cannot create folder: {err.strerror or err}")
    return folder


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while the block writes `path` into a KitError naming `path`."""
    try:
        yield
    except OSError as err:
        fail(write_error(path, err))


def _rename(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as err:
        fail(write_error(dst, err))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        fail(write_error(path, err))
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the user's usual mode
        except OSError as err:
            # an error on another file (one the block reads) names that file; on the output, the output
            fail(write_error(path, err) if err.filename in (None, str(tmp)) else
                 f"{err.filename}: {err.strerror or err} (while writing {path})")
        _rename(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in when complete.

    A directory that is half written after an interruption keeps its temporary name, so it
    can never be mistaken for a finished output; one whose block fails is removed, and errors
    name the final path, not the temporary one.
    """
    path = Path(path)
    ensure_dir(path.parent)
    tmp, old = staging_of(path)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        fail(write_error(path, err))
    try:
        yield tmp
    except KitError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KitError(str(err).replace(str(tmp), str(path))) from None
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        name = str(err.filename).replace(str(tmp), str(path)) if err.filename is not None else None
        if name is None or str(err.filename).startswith(str(tmp)):
            fail(write_error(name or path, err))
        fail(f"{name}: {err.strerror or err} (while writing {path})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except OSError as err:
        # put the previous output back rather than leave neither
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        fail(write_error(path, err))


def staging_of(path: str | os.PathLike) -> tuple[Path, Path]:
    """Where atomic_dir builds `path` (`.<name>.partial`) and where it moves the previous `path`
    aside while it swaps the two (`.<name>.old`)."""
    path = Path(path)
    return path.parent / f".{path.name}.partial", path.parent / f".{path.name}.old"


def remove_staging_of(path: str | os.PathLike) -> None:
    """What a killed atomic_dir of `path` left beside it: for a stage that then finds `path`
    current, and so never builds it again to sweep them."""
    for left in staging_of(path):
        shutil.rmtree(left, ignore_errors=True)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what a killed run's atomic writes left in `folder` (not below it): `.<name>.<random>.tmp`
    files and `.<name>.partial` / `.<name>.old` folders. Returns what was removed."""
    folder = Path(folder)
    gone = []
    if not folder.is_dir():
        return gone
    for p in sorted(folder.iterdir()):
        if not p.name.startswith("."):
            continue
        if p.is_file() and p.name.endswith(".tmp"):
            p.unlink()
        elif p.is_dir() and (p.name.endswith(".partial") or p.name.endswith(".old")):
            shutil.rmtree(p)
        else:
            continue
        gone.append(p)
    return gone


def stale_temporaries_of(path: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.<random>.tmp` siblings a killed atomic write of `path` left: only that
    file's, since `path` may sit in a folder of the user's own files. Returns what was removed."""
    path = Path(path)
    gone = [p for p in path.parent.glob(f".{glob_escape(path.name)}.*.tmp") if p.is_file()] \
        if path.parent.is_dir() else []
    for p in gone:
        p.unlink()
    return gone


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _scratch_host() -> str:
    # the host as well as the process names a scratch folder: a temp folder may be shared by
    # containers with their own pids
    return socket.gethostname().replace(".", "_")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_SWEPT: set[str] = set()


def remove_orphaned_scratch(prefix: str) -> list[Path]:
    """Delete the scratch folders (scratch_dir) of `prefix` on this host whose process is gone, as
    SIGKILL leaves them; once per process and prefix. Returns what was removed."""
    if prefix in _SWEPT:
        return []
    _SWEPT.add(prefix)
    host = _scratch_host()
    gone = []
    for p in Path(tempfile.gettempdir()).glob(f"{glob_escape(prefix)}.{glob_escape(host)}.*.*"):
        pid = p.name[len(prefix) + len(host) + 2:].split(".", 1)[0]
        if p.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private working folder in the temp dir (`PREFIX.HOST.PID.random`), removed on exit. A
    killed run cannot remove its own, so every call first removes those of `prefix` whose process
    is gone: the leftovers of kills never pile up."""
    remove_orphaned_scratch(prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}.{_scratch_host()}.{os.getpid()}."))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
