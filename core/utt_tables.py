"""Per-utterance side files a user gives the scorer: score columns and recording conditions.

Score file: a TSV with a header whose first column is `utt_id` and which holds at least one of
  known_score    higher = more like a known class 0–6 (a method's known-ness)
  unknown_score  higher = more like the unknown class 7 (`submit.predict`'s column)
  fake_score     higher = more like fake speech (1–7)
  p_0            the share of class 0, real speech (`submit.predict`'s column; fake-ness = 1 − p_0)
so that `submit.predict --out pred.tsv` can be scored as it is. Other columns are ignored, except
  error          `submit.predict`'s reason a file could not be read: a row with one has no scores
                 (its score cells are empty) and is returned among the unscored ids

Condition file: either lines `<id> <condition>`, or a TSV whose header names `utt_id` and
`condition` (the demo corpus's meta.tsv; other columns and extra rows are ignored). A condition may
join several with "+" (`noise:music:12.5+codec:mp3`). A TSV with a `generator` column too (meta.tsv
has one) names each utterance's generation algorithm: the report splits the unknown class by it.

Ids match with or without `.wav`, as in label files. Every problem is one KitError naming the file
and the line.
"""
from __future__ import annotations

import math
from pathlib import Path

from core.errors import fail
from core.label_files import text_lines, utt_id_of

SCORE_COLUMNS = ("known_score", "unknown_score", "fake_score", "p_0")


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    if path.is_dir():
        fail(f"{path}: {what} is a folder, not a file")
    if not path.exists():  # a pipe (`<(...)`, /dev/stdin) is no regular file and reads the same
        fail(f"{path}: {what} does not exist")
    rows = [(n, line.rstrip("\r")) for n, line in enumerate(text_lines(path, what), 1) if line.strip()]
    if not rows:
        fail(f"{path}: {what} is empty")
    return rows


def read_score_columns(path: str | Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """{column: {utt_id: value}} for the recognised columns present (SCORE_COLUMNS), and the ids of
    the rows whose `error` cell is filled (files `submit.predict` could not read: no scores)."""
    path = Path(path)
    what = "score file"
    lines = _lines(path, what)
    head_no, head = lines[0]
    header = [h.strip() for h in head.split("\t")]
    if header[0] != "utt_id":
        fail(f"{path}:{head_no}: {what} must start with a header whose first column is utt_id, got {head[:80]!r}")
    twice = sorted({h for h in header if header.count(h) > 1 and h in (*SCORE_COLUMNS, "utt_id", "error")})
    if twice:
        fail(f"{path}:{head_no}: {what} names column(s) {', '.join(twice)} twice")
    present = [c for c in SCORE_COLUMNS if c in header]
    if not present:
        fail(f"{path}:{head_no}: {what} has none of the columns {', '.join(SCORE_COLUMNS)}")
    out: dict[str, dict[str, float]] = {c: {} for c in present}
    error_at = header.index("error") if "error" in header else None
    unscored: list[str] = []
    first: dict[str, int] = {}
    for lineno, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            fail(f"{path}:{lineno}: {len(cells)} fields, the header has {len(header)}")
        utt = utt_id_of(cells[0].strip())
        if utt in first:
            fail(f"{path}:{lineno}: duplicate id {utt} (first on line {first[utt]})")
        first[utt] = lineno
        if error_at is not None and cells[error_at].strip():
            unscored.append(utt)
            continue
        for c in present:
            raw = cells[header.index(c)].strip()
            try:
                # float() would also take `0_9` (as 9.0) and other scripts' digits
                value = float(raw) if raw.isascii() and "_" not in raw else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                fail(f"{path}:{lineno}: column {c}: {raw!r} is not a finite number")
            out[c][utt] = value
    if not first:
        fail(f"{path}: {what} has a header but no rows")
    return out, unscored


def _utt_column(path: Path, what: str, column: str, lines: list[tuple[int, str]], two_columns: bool) -> dict[str, str]:
    """{utt_id: cell} of `column` in a TSV whose header names utt_id and it, or, with `two_columns`
    and no such header, of `<id> <value>` lines."""
    header = lines[0][1].split("\t")
    if "utt_id" in header and column in header:
        id_col, value_col, width, body, split = header.index("utt_id"), header.index(column), len(header), \
            lines[1:], "\t"
    elif two_columns:
        id_col, value_col, width, body, split = 0, 1, 2, lines, None
    else:
        fail(f"{path}:{lines[0][0]}: {what} has no header naming utt_id and {column}")
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for lineno, line in body:
        cells = line.split(split) if split else line.split()
        if len(cells) != width:
            expected = f"{width} tab-separated fields as in its header" if split else f"'<id> <{column}>'"
            fail(f"{path}:{lineno}: expected {expected}, got {line[:80]!r}")
        utt = utt_id_of(cells[id_col].strip())
        if utt in first:
            fail(f"{path}:{lineno}: duplicate id {utt} (first on line {first[utt]})")
        value = cells[value_col].strip()
        if not value:
            fail(f"{path}:{lineno}: empty {column} for id {utt}")
        first[utt] = lineno
        out[utt] = value
    if not out:
        fail(f"{path}: {what} has a header but no rows")
    return out


def read_condition_file(path: str | Path) -> tuple[dict[str, str], dict[str, str] | None]:
    """{utt_id: condition} from `<id> <condition>` lines or a TSV with utt_id and condition columns,
    and {utt_id: generator} when the TSV also has a generator column (the demo corpus's meta.tsv),
    else None; the file is read once."""
    path = Path(path)
    lines = _lines(path, "condition file")
    conditions = _utt_column(path, "condition file", "condition", lines, two_columns=True)
    if "generator" not in lines[0][1].split("\t"):
        return conditions, None
    return conditions, _utt_column(path, "condition file", "generator", lines, two_columns=False)


def values_for(ids: list[str], table: dict[str, str], path: str | Path, what: str) -> list[str]:
    """`table`'s value of every id of an answer key, in the key's order; a one-line error naming
    `path` when one is missing."""
    missing = [u for u in ids if u not in table]
    if missing:
        fail(f"{path}: no {what} for id {missing[0]} of the answer key ({len(missing)} missing)")
    return [table[u] for u in ids]


def read_conditions(path: str | Path) -> dict[str, str]:
    """{utt_id: condition} of a condition file (read_condition_file)."""
    return read_condition_file(path)[0]
