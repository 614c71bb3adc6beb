"""The `<file> <label>` files of ADD 2023: label files, answer keys, predictions and submissions."""
from __future__ import annotations

from pathlib import Path

from core.errors import fail
from core.labels import ALL_LABELS


def utt_id_of(token: str) -> str:
    """`ADD2023_T3_T_00000001.wav` and `ADD2023_T3_T_00000001` name the same utterance."""
    return token[:-4] if token.lower().endswith(".wav") else token


def read_label_lines(path: str | Path, valid_labels: range = ALL_LABELS, what: str = "label file"
                     ) -> list[tuple[str, int, int]]:
    """Read `<file> <label>` lines as (utt_id, label, line number); every problem is one KitError
    naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: {what} does not exist")
    rows: list[tuple[str, int, int]] = []
    first_line: dict[str, int] = {}
    with path.open(errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                fail(f"{path}:{lineno}: expected '<file> <label>', got {line[:80]!r}")
            utt, tok = utt_id_of(parts[0]), parts[1]
            try:
                label = int(tok)
            except ValueError:
                fail(f"{path}:{lineno}: label {tok!r} is not an integer")
            if label not in valid_labels:
                fail(f"{path}:{lineno}: label {label} outside {valid_labels.start}–{valid_labels.stop - 1}")
            if utt in first_line:
                fail(f"{path}:{lineno}: duplicate id {utt} (first on line {first_line[utt]})")
            first_line[utt] = lineno
            rows.append((utt, label, lineno))
    if not rows:
        fail(f"{path}: {what} is empty")
    return rows


def read_label_file(path: str | Path, valid_labels: range = ALL_LABELS, what: str = "label file"
                    ) -> dict[str, int]:
    return {utt: label for utt, label, _ in read_label_lines(path, valid_labels, what)}


def label_lines(labels: dict[str, int]) -> str:
    """`<id>.wav <label>` lines sorted by id: the format of predictions, keys and submissions."""
    return "".join(f"{u}.wav {int(c)}\n" for u, c in sorted(labels.items()))
