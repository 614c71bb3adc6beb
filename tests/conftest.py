"""Shared fixtures: one tiny demo corpus and its prepared splits, built once per test session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SCALE = "0.05"


def run_module(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "demo"
    run_module("data_prep.demo_corpus", "--out", str(out), "--scale", TINY_SCALE, "--seed", "3")
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    run_module("data_prep.prepare", "--data_root", str(tiny_corpus), "--out", str(out))
    return out
