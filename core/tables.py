"""Tab-separated tables the stages exchange (manifests, score files), read with pandas.

Every reader checks the header against the format's columns and names the file in its error.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from core.atomic import atomic_path
from core.errors import fail


def read_table(path: str | os.PathLike, columns: tuple[str, ...], dtypes: dict[str, str] | None = None,
               what: str = "table") -> pd.DataFrame:
    """The rows of a TSV file whose header must be exactly `columns`."""
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: {what} does not exist")
    try:
        # round_trip: floats parse exactly as Python's float() does, so values survive a re-read
        frame = pd.read_csv(path, sep="\t", dtype=dtypes or {}, keep_default_na=False, na_filter=False,
                            quoting=csv.QUOTE_NONE, float_precision="round_trip", encoding="utf-8")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        fail(f"{path}: not a valid {what} ({str(err).splitlines()[0]})")
    if tuple(frame.columns) != tuple(columns):
        fail(f"{path}: unexpected header {list(frame.columns)}; expected {list(columns)}")
    return frame


def write_table(path: str | os.PathLike, frame: pd.DataFrame, float_format: str | None = None) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, float_format=float_format,
                     lineterminator="\n")
