"""The `<file> <label>` files of ADD 2023: label files, answer keys, predictions and submissions."""
from __future__ import annotations

import re
from pathlib import Path

from core.errors import fail
from core.labels import ALL_LABELS


def utt_id_of(token: str) -> str:
    """`ADD2023_T3_T_00000001.wav` and `ADD2023_T3_T_00000001` name the same utterance."""
    return token[:-4] if token.lower().endswith(".wav") else token


def is_utf8(text: str) -> bool:
    """Whether a name read from the file system is UTF-8 (Python keeps other bytes as surrogates,
    which no UTF-8 label, manifest or submission line can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_wavs(wav_dir: Path) -> list[Path]:
    """The entries a challenge split is made of: the names ending in .wav directly in its folder,
    sorted, folders excepted. A link to nothing is one (it gets its line, as a file that cannot be
    read); a name that is not UTF-8 is an error, since no line could hold it."""
    wavs = sorted(p for p in Path(wav_dir).iterdir() if p.suffix.lower() == ".wav" and not p.is_dir())
    for p in wavs:
        if not is_utf8(p.name):
            fail(f"{str(p)!r}: a file name that is not UTF-8 cannot be an utterance id; rename the file")
    return wavs


def text_lines(path: Path, what: str) -> list[str]:
    """The file's lines as UTF-8 text; a byte-order mark (Windows editors write one) is dropped,
    never read as part of the first id. UTF-16 and other encodings are refused with the line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        fail(f"{path}: cannot read {what}: {err.strerror or err}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        fail(f"{path}: {what} is UTF-16 text; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = data[:err.start].count(b"\n") + 1
        fail(f"{path}:{lineno}: {what} is not UTF-8 text (byte 0x{data[err.start]:02x})")
    return text.split("\n")


def read_label_lines(path: str | Path, valid_labels: range = ALL_LABELS, what: str = "label file"
                     ) -> list[tuple[str, int, int]]:
    """Read `<file> <label>` lines as (utt_id, label, line number); every problem is one KitError
    naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        fail(f"{path}: {what} is a folder, not a file")
    if not path.exists():  # a pipe (`<(...)`, /dev/stdin) is no regular file and reads the same
        fail(f"{path}: {what} does not exist")
    rows: list[tuple[str, int, int]] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text_lines(path, what), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            fail(f"{path}:{lineno}: expected '<file> <label>', got {line[:80]!r}")
        utt, tok = utt_id_of(parts[0]), parts[1]
        # ASCII digits after at most one sign: int() would also take `0_3` and other scripts' digits
        if not re.fullmatch(r"[+-]?[0-9]+", tok):
            fail(f"{path}:{lineno}: label {tok!r} is not an integer")
        label = int(tok)
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


def key_labels_exactly(key: dict[str, int], key_path: str | Path, ids, items: str, place: str) -> None:
    """An answer key labels exactly `ids` (the `items` of `place`, e.g. "utterance(s)" of "the test
    set exp/data/test"): else one line naming the key, the count and an example."""
    ids = set(ids)
    missing, extra = sorted(ids - set(key)), sorted(set(key) - ids)
    if missing:
        fail(f"{key_path}: no label for {len(missing)} {items} of {place}, e.g. {missing[0]}")
    if extra:
        fail(f"{key_path}: {len(extra)} id(s) not in {place}, e.g. {extra[0]}")


def label_lines(labels: dict[str, int]) -> str:
    """`<id>.wav <label>` lines sorted by id: the format of predictions, keys and submissions."""
    return "".join(f"{u}.wav {int(c)}\n" for u, c in sorted(labels.items()))
