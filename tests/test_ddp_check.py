"""`python -m eval.ddp_check` on CPU: two torchrun processes (gloo) against one process
accumulating their micro-batches, with the whole-batch negative control; bad arguments are one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

TINY = ["model.blocks=[1,1,1,1]", "model.channels=[8,16,16,32]"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "eval.ddp_check", "--device", "cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TQDM_DISABLE="1"))


def differences(stdout: str) -> tuple[float, float]:
    found = re.search(r"max \|difference\| (\S+) .*negative control\): (\S+);", stdout)
    assert found, stdout
    return float(found.group(1)), float(found.group(2))


def test_two_processes_pass_and_the_control_differs():
    proc = run("--utterances", "24", "--batch", "8", "--set", *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    same, control = differences(proc.stdout)
    assert same <= 1e-5 < 1e-3 < control
    assert proc.stdout.rstrip().endswith("OK") and "2 processes on cpu (gloo)" in proc.stdout


def test_two_processes_with_the_channel_on_the_device():
    """The channel applied per micro-batch by each process (what CUDA does by default): still the
    accumulating process's weights."""
    proc = run("--utterances", "24", "--batch", "8", "--set", *TINY, "augment.effects_on=device",
               "augment.p_bandpass=0.5", "augment.p_eq=0.5", "augment.p_clipping=0.5")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    same, control = differences(proc.stdout)
    assert same <= 1e-5 < 1e-3 < control
    assert "band-pass, EQ and clipping on cpu per batch" in proc.stdout


def test_a_difference_above_the_tolerance_fails():
    """A tolerance below what the whole-batch control needs: the verdict is computed, not printed."""
    proc = run("--utterances", "24", "--batch", "8", "--atol", "1", "--set", *TINY)
    assert proc.returncode == 1 and "FAILED: the negative control does not differ" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--nproc", "1"], "--nproc 1"),
    (["--system", "nope"], "unknown system 'nope'"),
    (["--batch", "7"], "does not divide"),
    (["--set", "train.nope=1"], "nope"),
])
def test_bad_arguments_are_one_line(args, words):
    proc = run(*args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and words in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
