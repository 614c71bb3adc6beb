"""The asvspoof2021 LFCC preset against the ASVspoof 2021 LA baseline's own output.

The fixture holds three 16 kHz float32 test signals and the (frames, 60) features that the baseline front-end
(asvspoof-challenge/2021, LA/Baseline-LFCC-LCNN, sandbox/util_frontend.py LFCC as built in
project/baseline_LA/model.py) produced for them; fixtures/lfcc_reference/README.md says how.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from systems.common.lfcc import LFCC, PRESETS

FIXTURE = Path(__file__).parent / "fixtures" / "lfcc_reference" / "asvspoof2021.npz"
TOLERANCE = 1e-3


def load_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(FIXTURE) as data:
        names = sorted(k[: -len("__wave")] for k in data.files if k.endswith("__wave"))
        return {name: (data[f"{name}__wave"], data[f"{name}__lfcc"]) for name in names}


CASES = load_cases()


def extract(preset, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return LFCC(preset)(torch.from_numpy(wave)[None])[0].T.numpy()  # (frames, 60)


def test_fixture_is_what_we_think():
    assert len(CASES) == 3
    for wave, ref in CASES.values():
        assert wave.dtype == np.float32 and ref.dtype == np.float32
        assert ref.shape == (1 + len(wave) // 160, 60)
        assert np.isfinite(ref).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_asvspoof2021_matches_baseline_output(name):
    wave, ref = CASES[name]
    ours = extract("asvspoof2021", wave)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOLERANCE


@pytest.mark.parametrize("change", [{"pad_mode": "reflect"}, {"filter_grid": "fft"}, {"energy_c0": False}])
def test_fixture_tells_each_baseline_detail_apart(change):
    """Undoing any one of the baseline's details breaks the match, so the check above has teeth."""
    cfg = dataclasses.replace(PRESETS["asvspoof2021"], **change)
    worst = max(np.abs(extract(cfg, wave) - ref).max() for wave, ref in CASES.values())
    assert worst > 10 * TOLERANCE
