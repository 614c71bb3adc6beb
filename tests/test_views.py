"""Fixed-length crops and the scoring windows (model input length, configured hop)."""
from __future__ import annotations

import numpy as np

from systems.common.windows import random_crop, repeat_pad, sliding_windows, window_starts


def test_window_starts_cover_the_end():
    win, hop = 48000, 16000
    assert window_starts(48000, win, hop) == [0]
    assert window_starts(30000, win, hop) == [0]
    assert window_starts(64000, win, hop) == [0, 16000]
    starts = window_starts(70000, win, hop)
    assert starts == [0, 16000, 22000]
    assert starts[-1] + win == 70000


def test_sliding_windows_content():
    x = np.arange(70000, dtype=np.float32)
    w = sliding_windows(x, 48000, 16000)
    assert w.shape == (3, 48000)
    np.testing.assert_array_equal(w[2], x[22000:])
    short = sliding_windows(np.arange(10, dtype=np.float32), 25, 5)
    assert short.shape == (1, 25)
    np.testing.assert_array_equal(short[0], np.tile(np.arange(10), 3)[:25])


def test_crops():
    x = np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(repeat_pad(x, 30), x[:30])
    np.testing.assert_array_equal(repeat_pad(x, 250)[100:200], x)
    rng = np.random.default_rng(0)
    crop = random_crop(x, 30, rng)
    assert len(crop) == 30 and np.all(np.diff(crop) == 1)
