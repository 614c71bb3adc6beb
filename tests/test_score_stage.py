"""The score stage's outputs: a kill -9 while a split is being written leaves the earlier split
whole, its files and stamp from one scoring, and the next run writes the new one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import torch

from core.scores import SystemScores
from core.stamps import STAMP_NAME, read_stamp, stage_is_current
from systems.common.config import load_config
from systems.common.inference import build_model
from systems.score import score_split, split_options

from .conftest import ROOT, TINY_LFCC_RESNET18

# scores dev with a model of the given seed; with KILL set, the process kills itself with SIGKILL
# the moment the first .npy is saved, i.e. after logits.tsv and before embeddings.npy
SCORE_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import torch
    import core.scores
    from systems.common.config import load_config
    from systems.common.inference import build_model
    from systems.score import score_split, split_options

    data, target, seed, kill = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "kill"
    cfg = load_config(Path("systems/lfcc_resnet18/conf/demo.yaml"), json.loads(sys.argv[5]))
    if kill:
        def killed_while_saving(path, array):
            os.kill(os.getpid(), signal.SIGKILL)
        core.scores.save_npy = killed_while_saving
    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    score_split(build_model(cfg), cfg, "dev", data, target, cpu,
                split_options("dev", data, {"seed": seed}, cfg, cpu, cfg.score.batch_size))
""")


def score_in_process(data, target, seed, kill=False):
    return subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(data), str(target), str(seed),
                           "kill" if kill else "whole", json.dumps(TINY_LFCC_RESNET18)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_kill_while_writing_a_split_leaves_the_earlier_split_whole(tiny_prepared, tmp_path):
    target = tmp_path / "sys" / "scores" / "dev"
    first = score_in_process(tiny_prepared, target, seed=0)
    assert first.returncode == 0, first.stderr[-2000:]
    before = folder_bytes(target)
    assert {"logits.tsv", "embeddings.npy", "window_embeddings.npy", STAMP_NAME} <= set(before)

    killed = score_in_process(tiny_prepared, target, seed=1, kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # every file and the stamp are the first scoring's: logits.tsv was written, but not in place
    assert folder_bytes(target) == before
    assert read_stamp(target)["checkpoint"] == {"seed": 0}
    SystemScores(target)  # reads as one consistent split

    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", TINY_LFCC_RESNET18)
    cpu = torch.device("cpu")
    second = split_options("dev", tiny_prepared, {"seed": 1}, cfg, cpu, cfg.score.batch_size)
    assert not stage_is_current(target, second)  # so the score stage runs it again
    torch.manual_seed(1)
    score_split(build_model(cfg), cfg, "dev", tiny_prepared, target, cpu, second)
    after = folder_bytes(target)
    assert after["logits.tsv"] != before["logits.tsv"] and after["embeddings.npy"] != before["embeddings.npy"]
    assert stage_is_current(target, second)
    # what the killed run left beside the split is gone
    assert sorted(p.name for p in target.parent.iterdir()) == ["dev"]


def test_a_linked_split_is_written_where_its_link_leads(tiny_prepared, tmp_path):
    """A new test set links scores/{train,dev} from its experiment: scoring through the link
    writes the experiment's folder and keeps the link, as the in-place writes did."""
    real = tmp_path / "exp" / "scores" / "dev"
    real.parent.mkdir(parents=True)
    linked = tmp_path / "testset" / "scores" / "dev"
    linked.parent.mkdir(parents=True)
    real.mkdir()
    os.symlink(os.path.relpath(real, linked.parent), linked)
    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", TINY_LFCC_RESNET18)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    score_split(build_model(cfg), cfg, "dev", tiny_prepared, linked, cpu,
                split_options("dev", tiny_prepared, {}, cfg, cpu, cfg.score.batch_size))
    assert linked.is_symlink() and (real / "logits.tsv").is_file()
    assert SystemScores(linked).ids == SystemScores(real).ids
