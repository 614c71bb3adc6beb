"""Scratch folders and half-written files that a SIGKILL leaves are removed by the next run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from core.atomic import scratch_dir, stale_temporaries_of

from .conftest import ROOT

HOLDER = """
import sys, time
from core.atomic import scratch_dir
with scratch_dir(sys.argv[1]) as tmp:
    (tmp / "work.bin").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(120)
"""


def hold_scratch(prefix: str) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, prefix], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_runs_scratch_folder_is_removed_and_a_live_ones_kept():
    prefix = f"kit_test_{uuid.uuid4().hex[:8]}"
    killed, killed_dir = hold_scratch(prefix)
    live, live_dir = hold_scratch(prefix)
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert (killed_dir / "work.bin").is_file()  # SIGKILL skipped the clean-up
        with scratch_dir(prefix) as mine:
            assert mine.is_dir() and mine.name.startswith(prefix)
            assert not killed_dir.exists()
            assert (live_dir / "work.bin").is_file()
        assert not mine.exists()
    finally:
        live.kill()
        live.wait()
        for folder in (killed_dir, live_dir):
            if folder.exists():
                shutil.rmtree(folder)


def test_only_the_target_files_half_written_copies_are_removed(tmp_path):
    out = tmp_path / "pred[1].tsv"
    out.write_text("kept\n")
    mine = tmp_path / ".pred[1].tsv.k2j4x.tmp"
    others = [tmp_path / ".pred.tsv.a1.tmp", tmp_path / ".notes.txt.b2.tmp", tmp_path / "pred[1].tsv.c3.tmp"]
    for p in [mine, *others]:
        p.write_text("partial")
    assert stale_temporaries_of(out) == [mine]
    assert not mine.exists() and all(p.exists() for p in others) and out.read_text() == "kept\n"
    assert stale_temporaries_of(tmp_path / "missing" / "x.tsv") == []
