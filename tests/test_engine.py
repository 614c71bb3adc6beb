"""Training engine: checkpoints every epoch, resumes after an interruption, keeps the best by dev F1."""
from __future__ import annotations

import csv

import torch

from systems.common.config import load_config
from systems.common.engine import load_checkpoint, train

from .conftest import ROOT

TINY = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32], "train.batch_size": 8,
        "train.num_workers": 0, "train.epochs": 3}


def test_interrupt_and_resume(tiny_prepared, tiny_corpus, tmp_path):
    overrides = dict(TINY, **{"augment.musan": str(tiny_corpus / "musan_demo")})
    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", overrides)
    exp = tmp_path / "exp"
    first = train(cfg, tiny_prepared, exp, torch.device("cpu"), stop_after_epochs=1)
    assert first["epochs_run"] == 1
    state = load_checkpoint(exp / "ckpt" / "last.pt")
    assert state["epoch"] == 1 and (exp / "ckpt" / "best.pt").is_file()
    saved_epoch1 = {k: v.clone() for k, v in state["model"].items()}

    second = train(cfg, tiny_prepared, exp, torch.device("cpu"))
    assert second["epochs_run"] == 2  # epochs 2 and 3 only
    state = load_checkpoint(exp / "ckpt" / "last.pt")
    assert state["epoch"] == 3
    assert any(not torch.equal(saved_epoch1[k], v) for k, v in state["model"].items())
    rows = list(csv.DictReader(open(exp / "train_log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    best = load_checkpoint(exp / "ckpt" / "best.pt")
    assert abs(float(best["dev_f1"]) - max(float(r["dev_f1"]) for r in rows)) < 1e-4

    third = train(cfg, tiny_prepared, exp, torch.device("cpu"))
    assert third["epochs_run"] == 0


def test_changed_config_starts_over(tiny_prepared, tmp_path):
    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", dict(TINY, **{"train.epochs": 1}))
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    cfg2 = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", dict(TINY, **{"train.epochs": 1, "train.lr": 5e-4}))
    assert train(cfg2, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1
