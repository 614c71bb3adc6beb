"""eval/score.py: the spec's worked example, an independent re-implementation, malformed inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.metrics import open_set_scores

from .conftest import ROOT

WORKED_TRUE = [0, 0, 0, 0, 1, 1, 1, 1, 7, 7]
WORKED_PRED = [0, 0, 0, 1, 1, 1, 7, 7, 0, 7]


def score_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "eval" / "score.py"), *map(str, args)],
                          capture_output=True, text=True)


def write_pairs(path, ids, labels, wav=True):
    path.write_text("".join(f"{u}{'.wav' if wav else ''} {lab}\n" for u, lab in zip(ids, labels)))
    return path


def test_worked_example(tmp_path):
    ids = [f"ADD2023_T3_E_{i:08d}" for i in range(10)]
    key = write_pairs(tmp_path / "key.txt", ids, WORKED_TRUE)
    pred = write_pairs(tmp_path / "pred.txt", ids[::-1], WORKED_PRED[::-1], wav=False)
    proc = score_cli(pred, key)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "P 0.7083" in first and "R 0.6250" in first and "F1 0.6641" in first
    assert "0.5738" in proc.stdout
    rep = json.loads(score_cli(pred, key, "--json").stdout)
    assert round(rep["open_set"]["f1"], 4) == 0.6641
    assert round(rep["sklearn_macro_f1"], 4) == 0.5738
    assert rep["confusion"][7][0] == 1 and rep["confusion"][1][7] == 2


def reference_open_set_f1(y_true, y_pred):
    """Written from the confusion matrix, independently of eval.metrics."""
    cm = np.zeros((8, 8), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    known = [c for c in range(7) if cm[c].sum() > 0]
    prec = [cm[c, c] / cm[:, c].sum() if cm[:, c].sum() else 0.0 for c in known]
    rec = [cm[c, c] / cm[c].sum() for c in known]
    p, r = np.mean(prec), np.mean(rec)
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y_true = rng.integers(0, 8, size=n)
    y_true[0] = 0  # at least one known class
    noise = rng.random(n) < rng.uniform(0, 1)
    y_pred = np.where(noise, rng.integers(0, 8, size=n), y_true)
    assert open_set_scores(y_true, y_pred)["f1"] == pytest.approx(reference_open_set_f1(y_true, y_pred), abs=1e-12)


@pytest.mark.parametrize("pred_text, key_text, message", [
    ("a 0\nb 1\n", "a 0\n", "not in the answer key"),
    ("a 0\n", "a 0\nb 1\n", "has no prediction"),
    ("a 0\na.wav 1\n", "a 0\n", "duplicate id a"),
    ("a zero\n", "a 0\n", "not an integer"),
    ("a 8\n", "a 0\n", "outside 0–7"),
    ("", "a 0\n", "is empty"),
    ("a 0 extra\n", "a 0\n", "expected"),
])
def test_malformed_inputs_are_one_line_errors(tmp_path, pred_text, key_text, message):
    pred, key = tmp_path / "pred.txt", tmp_path / "key.txt"
    pred.write_text(pred_text)
    key.write_text(key_text)
    proc = score_cli(pred, key)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "\n" not in err and message in err and "Traceback" not in err
    assert str(tmp_path) in err


def test_missing_file(tmp_path):
    proc = score_cli(tmp_path / "nope.txt", tmp_path / "key.txt")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
