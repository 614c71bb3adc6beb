"""TSV tables: floats survive a write and a re-read bit for bit, with the pandas installed."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from core.tables import read_table, write_table


def test_floats_survive_a_re_read_exactly_and_without_a_deprecation_warning(tmp_path):
    rng = np.random.default_rng(0)
    # magnitudes from 1e-12 to 1e12, the digits that a parser rounding in the last bit gets wrong
    values = rng.standard_normal(20000) * 10.0 ** rng.integers(-12, 13, size=20000)
    write_table(tmp_path / "t.tsv", pd.DataFrame({"utt_id": [f"u{i}" for i in range(len(values))], "x": values}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_table(tmp_path / "t.tsv", ("utt_id", "x"), {"utt_id": "str", "x": "float64"})
    assert np.array_equal(frame["x"].to_numpy(), values)
