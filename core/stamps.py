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
KIT_ROOT = Path(__file__).resolve().parents[1]


def options_digest(options: dict[str, Any]) -> str:
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def stage_is_current(out_dir: str | os.PathLike, options: dict[str, Any], inputs: str | None = None) -> bool:
    """True when `out_dir` was completed earlier with exactly these resolved options and every
    output the stamp lists is still there at the size it was written. `inputs` (a listing_digest of
    the files the stage read) must match too where the stamp holds one; stamps written before they
    held one are judged by the options alone, as then, so that an older experiment (whose later
    stages hash this stamp) is not redone by an upgrade of the kit."""
    out_dir = Path(out_dir)
    stamp = out_dir / STAMP_NAME
    if not stamp.is_file():
        return False
    try:
        saved = json.loads(stamp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(saved, dict) or saved.get("digest") != options_digest(options):
        return False
    if inputs is not None and "inputs" in saved and saved["inputs"] != inputs:
        return False
    for name, size in (saved.get("outputs") or {}).items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def read_stamp(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The options a stage's stamp holds; None when there is no readable stamp."""
    try:
        saved = json.loads((Path(out_dir) / STAMP_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    options = saved.get("options") if isinstance(saved, dict) else None
    return options if isinstance(options, dict) else None


def same_file(signature: Any, path: str | os.PathLike) -> bool:
    """Whether `path` is still the file a file_signature recorded: the same size and modification
    time. The recorded path itself is not compared: a copied experiment folder (cp -a,
    shutil.copytree) keeps both, and its files stand where the originals stood."""
    path = Path(path)
    if not isinstance(signature, dict) or not path.is_file():
        return False
    st = path.stat()
    return signature.get("size") == st.st_size and signature.get("mtime_ns") == st.st_mtime_ns


def recorded_place(signature: dict[str, Any]) -> tuple[str, ...]:
    """The folder and file name of the path a file_signature recorded: what stays the same when an
    experiment is copied or moved, and whether the stamp spelt the path absolute, relative to the
    experiment or through a link (a checkpoint is `CKPT+…/model.ckpt` in every spelling)."""
    return Path(str(signature.get("path", ""))).parts[-2:]


def output_files(out_dir: str | os.PathLike, below: bool = False) -> list[str]:
    """The names of the files directly in `out_dir` (not the stamp): a stage's outputs when it
    writes them in place. With `below`, every file under it too, by its path relative to `out_dir`."""
    out_dir = Path(out_dir)
    found = out_dir.rglob("*") if below else out_dir.iterdir()
    return sorted(p.relative_to(out_dir).as_posix() for p in found
                  if p.is_file() and p.relative_to(out_dir).as_posix() != STAMP_NAME)


def write_stamp(out_dir: str | os.PathLike, options: dict[str, Any], outputs: list[str] = (),
                inputs: str | None = None) -> None:
    """`outputs`: names of files in `out_dir` the stage wrote; the stage then counts as current
    only while each is there at this size (a lost or truncated output re-runs it). Sizes, not
    times: a copied experiment folder stays current. `inputs`: see stage_is_current."""
    out_dir = Path(out_dir)
    payload = {"digest": options_digest(options), "options": options,
               "outputs": {name: (out_dir / name).stat().st_size for name in outputs}}
    if inputs is not None:
        payload["inputs"] = inputs
    _write_payload(out_dir, payload)


def _write_payload(out_dir: str | os.PathLike, payload: dict[str, Any]) -> None:
    # one byte layout for every stamp: training digests the bytes of the prepared splits' stamps
    write_text_atomic(Path(out_dir) / STAMP_NAME, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def current_or_restamped(out_dir: str | os.PathLike, options: dict[str, Any], earlier: dict[str, Any],
                         inputs: str | None = None, restamp: bool = True) -> bool:
    """stage_is_current with `options`, or with `earlier`: the same options in the form an earlier
    kit stamped them (files inside the experiment by absolute path). A stage current in that form
    is rewritten in the new one (its outputs and inputs kept) when `restamp`, so that upgrading the
    kit redoes nothing, and a copy made afterwards stays current."""
    if stage_is_current(out_dir, options, inputs):
        return True
    if not stage_is_current(out_dir, earlier, inputs):
        return False
    if restamp:
        saved = json.loads((Path(out_dir) / STAMP_NAME).read_text())
        _write_payload(out_dir, dict(saved, digest=options_digest(options), options=options))
    return True


def entry_stat(path: Path) -> os.stat_result:
    """The file's stat, or for a link to nothing the link's own: an entry that cannot be read is
    listed (and later reported) like any other, not an error while listing."""
    return path.stat() if path.exists() else path.lstat()


def listing_digest(files: list[Path], root: str | os.PathLike) -> str:
    """A digest of every file's name (relative to `root`), size and modification time: a renamed,
    added, removed or replaced file changes it, without reading any audio (a file replaced by one
    of the same size and time, as `cp -p` of an equal-length file gives, does not)."""
    h = hashlib.sha256()
    root = Path(root)
    for path in sorted(files):
        st = entry_stat(path)
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def folder_listing(root: str | os.PathLike) -> str:
    """listing_digest of every file below `root`, or of `root` itself when it is a file (an
    augmentation bank: its files are drawn by their place in a sorted list, so a renamed one
    changes what is drawn though count and bytes stay; a pretrained checkpoint, folder or file)."""
    root = Path(root)
    if root.is_file():
        return listing_digest([root], root.parent)
    return listing_digest([p for p in root.rglob("*") if p.is_file()], root)


def file_signature(path: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
    """Size and modification time: enough to notice that an input file was replaced. The path is
    recorded resolved, and relative to `relative_to` (resolved too) when given: a stage that reads
    files inside its own experiment names them from there, so that a copy of the experiment
    (cp -a, shutil.copytree: times and relative links kept) records what the original does."""
    where = Path(path).resolve()
    st = where.stat()
    recorded = os.path.relpath(where, Path(relative_to).resolve()) if relative_to is not None else str(where)
    return {"path": recorded, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_digest(*packages: str) -> str:
    """A digest of the kit's Python source in `packages` (folders under the kit root, recursively):
    for the stamp of a stage cheap enough to re-run after any change of the code that computes it."""
    h = hashlib.sha256()
    for package in packages:
        folder = KIT_ROOT / package
        for path in sorted(folder.rglob("*.py")):
            h.update(path.relative_to(KIT_ROOT).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()
