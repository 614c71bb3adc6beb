"""Tab-separated tables the stages exchange (manifests, score files), read with pandas.

Every reader checks the header against the format's columns and names the file in its error,
with the stage that writes the file when it is given (a damaged table is re-made by re-running it).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from core.atomic import atomic_path
from core.errors import fail

# floats parse exactly as Python's float() does, so values survive a re-read: before pandas 3.1
# only with float_precision="round_trip"; from 3.1 every mode is exact and the argument deprecated
EXACT_FLOATS = {"float_precision": "round_trip"} if tuple(map(int, pd.__version__.split(".")[:2])) < (3, 1) else {}


def read_table(path: str | os.PathLike, columns: tuple[str, ...], dtypes: dict[str, str] | None = None,
               what: str = "table", stage: str | None = None) -> pd.DataFrame:
    """The rows of a TSV file whose header must be exactly `columns`."""
    path = Path(path)
    rerun = f"; re-run the {stage} stage" if stage else ""
    if not path.is_file():
        fail(f"{path}: {what} does not exist{rerun}")
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            last = fh.read(1)
    except OSError as err:
        fail(f"{path}: cannot read {what}: {err.strerror or err}")
    # the kit writes every table with a final newline: without one, the file was cut short
    if size and last != b"\n":
        fail(f"{path}: {what} is truncated (its last line is incomplete){rerun}")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=dtypes or {}, keep_default_na=False, na_filter=False,
                            quoting=csv.QUOTE_NONE, encoding="utf-8-sig", **EXACT_FLOATS)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        where = _bad_cell(path, dtypes or {}) if not isinstance(err, UnicodeDecodeError) else None
        reason = where or (str(err).splitlines()[0] if str(err) else type(err).__name__)
        fail(f"{path}: not a valid {what} ({reason}){rerun}")
    if tuple(frame.columns) != tuple(columns):
        fail(f"{path}: unexpected header {list(frame.columns)}; expected {list(columns)}{rerun}")
    return frame


def _bad_cell(path: Path, dtypes: dict) -> str | None:
    """Where a table fails to parse: the first cell of a numeric column that is not a number
    (pandas' own message names neither the line nor the value)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    header = lines[0].split("\t")
    numeric = {header.index(c): c for c, t in dtypes.items()
               if c in header and t not in (str, "str", "string", object)}
    for lineno, line in enumerate(lines[1:], 2):
        if not line:
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            return f"line {lineno}: {len(cells)} fields, the header has {len(header)}"
        for i, column in numeric.items():
            value = cells[i].strip()
            try:
                float(value)
                ok = value.lstrip("+-").lower() != "nan"
            except ValueError:
                ok = False
            if not ok:
                return f"line {lineno}: column {column!r}: {value!r} is not a number"
    return None


def write_table(path: str | os.PathLike, frame: pd.DataFrame, float_format: str | None = None) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, float_format=float_format,
                     lineterminator="\n")
