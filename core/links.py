"""Folders that reuse another experiment's trained files through relative symbolic links (a new
test set beside a trained experiment, an ensemble over training seeds): nothing is copied, and the
source is never written through a link by the stages that read it."""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import fail


def link_parts(source_dir: Path, link_dir: Path, parts: tuple[str, ...], missing_hint: str,
               conflict_hint: str) -> None:
    """Link each `link_dir/part` to `source_dir/part`. A link already there to the same target is
    kept, so that a second call changes nothing; anything else in its place is refused."""
    for rel in parts:
        source, link = source_dir / rel, link_dir / rel
        if not source.exists():
            fail(f"{source}: missing; {missing_hint}")
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        if link.exists() or link.is_symlink():
            fail(f"{link}: exists and is not a link to {source}; {conflict_hint}")
        link.parent.mkdir(parents=True, exist_ok=True)
        relative_link(source, link)


def relative_link(source: Path, link: Path) -> None:
    # relative links keep working when the experiment folder is moved as a whole
    os.symlink(os.path.relpath(source.resolve(), link.parent.resolve()), link)


# what a finished training leaves beside its checkpoints: its stamp (so that the training stage
# answers "nothing to do" from it), its log and its record of how it was run
TRAINING_RECORDS = (".options.json", "train_log.csv", "train_environment.json")


def link_training_records(source_dir: Path, link_dir: Path) -> None:
    """Link those of TRAINING_RECORDS that `source_dir` holds, where `link_dir` has nothing in
    their place. A stage that writes one of them again renames a new file over the link (atomic
    writes), never through it."""
    for name in TRAINING_RECORDS:
        source, link = source_dir / name, link_dir / name
        if source.is_file() and not (link.exists() or link.is_symlink()):
            relative_link(source, link)
