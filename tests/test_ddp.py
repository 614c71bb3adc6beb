"""Training on two processes (torchrun, gloo on CPU) equals one process that accumulates the same
micro-batches; its checkpoint resumes in one process and its dev F1 covers all of dev once.

The reference is not one process with the whole batch: BatchNorm normalises each process's
micro-batch on its own, so a 2-process step is two micro-batches whose gradients DDP averages,
which is what one process computes with grad_accumulation 2 (each loss halved). SGD, because its
update is linear in the gradient: Adam's is nearly scale-free, and would hide a sum taken for a mean.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.metrics import open_set_scores
from core.prepared_split import PreparedSplit
from core.scores import SystemScores
from eval.ddp_check import final_parameters, max_difference
from systems.common.config import load_config
from systems.common.engine import AtomicCheckpointer, train
from systems.common.inference import (
    build_model,
    load_model_state,
    score_windows,
    utterance_means,
    window_hop,
    window_length,
)
from systems.common.windows import SplitWindows

from .conftest import ROOT, run_module

CONFIG = ROOT / "systems/lfcc_resnet18/conf/demo.yaml"
# 21 training utterances in batches of 8: steps of 8, 8 and 5 items, the last cut 3 + 2
TINY = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32], "train.batch_size": 8,
        "train.num_workers": 0, "train.epochs": 2, "train.optimizer": "sgd", "train.lr": 0.05,
        "train.bf16": False}
# float32 gradients summed in another order (gloo's all-reduce, NCCL's ring) differ in the last
# bits; with two processes the mean (a + b) / 2 and the accumulation a / 2 + b / 2 agree exactly
ATOL = 1e-5


def overrides(tiny_corpus, **extra):
    return dict(TINY, **{"augment.musan": str(tiny_corpus / "musan_demo")}, **extra)


@pytest.fixture(scope="module")
def two_processes(tiny_prepared, tiny_corpus, tmp_path_factory):
    """One epoch (of two) on two processes: (experiment folder, console output)."""
    exp = tmp_path_factory.mktemp("ddp") / "exp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.ddp_stop_early", "--config", str(CONFIG), "--data", str(tiny_prepared), "--exp", str(exp),
           "--device", "cpu", "--set", *[f"{k}={v}" for k, v in overrides(tiny_corpus).items()]]
    env = dict(os.environ, OMP_NUM_THREADS="1", STOP_AFTER_EPOCHS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return exp, proc.stdout


def test_two_processes_equal_one_process_accumulating(two_processes, tiny_prepared, tiny_corpus, tmp_path):
    exp, stdout = two_processes
    assert AtomicCheckpointer(exp / "ckpt").find_checkpoint().meta["epoch"] == 1
    assert stdout.count("[train] epoch 1:") == 1  # rank 0 alone speaks

    def one_process(name, **extra):
        cfg = load_config(CONFIG, overrides(tiny_corpus, **extra))
        # one thread, as each torchrun process has: a CPU kernel's reduction order follows the
        # thread count, and channels-last convolutions (demo.yaml) carry that into the weights
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train(cfg, tiny_prepared, tmp_path / name, torch.device("cpu"), stop_after_epochs=1)
        finally:
            torch.set_num_threads(threads)
        return final_parameters(tmp_path / name)

    ddp = final_parameters(exp)
    assert max_difference(ddp, one_process("accumulated", **{"train.grad_accumulation": 2})) <= ATOL
    # the comparison can fail: each process reading the whole step (BatchNorm over 8 items, not
    # 4), or the gradients summed rather than averaged (with SGD: the learning rate doubled)
    assert max_difference(ddp, one_process("whole_batch")) > 100 * ATOL
    doubled = one_process("summed", **{"train.grad_accumulation": 2, "train.lr": 2 * TINY["train.lr"]})
    assert max_difference(ddp, doubled) > 100 * ATOL


def test_dev_f1_of_two_processes_is_all_of_dev_once(two_processes, tiny_prepared):
    """Each process scored its share of dev; the logged F1 is the checkpoint's F1 on the whole of it."""
    exp, _ = two_processes
    cfg = load_config(exp / "config.yaml")
    model = build_model(cfg)
    ckpt = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    model.load_state_dict(load_model_state(ckpt.paramfiles["model"]))
    split = PreparedSplit(tiny_prepared / "dev")
    windows = SplitWindows(split, window_length(model), window_hop(cfg))
    logits, _ = score_windows(model, windows, torch.device("cpu"), cfg.score.batch_size, bf16=False)
    pred = utterance_means(logits, windows.offsets).argmax(1)
    labels = split.labels[windows.index]
    row = next(csv.DictReader(open(exp / "train_log.csv")))
    assert float(row["dev_f1"]) == pytest.approx(open_set_scores(labels, pred)["f1"], abs=1e-5)
    assert float(row["dev_acc"]) == pytest.approx(float(np.mean(pred == labels)), abs=1e-4)


def test_two_process_checkpoint_resumes_in_one_process(two_processes, tiny_prepared, tiny_corpus, tmp_path, capsys):
    exp, _ = two_processes
    ckpt = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    state = load_model_state(ckpt.paramfiles["model"])
    assert not [k for k in state if k.startswith("module.")]
    cfg = load_config(CONFIG, overrides(tiny_corpus))
    build_model(cfg).load_state_dict(state)  # strict: the keys of the unwrapped model

    resumed = tmp_path / "resumed"
    shutil.copytree(exp, resumed)
    assert train(cfg, tiny_prepared, resumed, torch.device("cpu"))["epochs_run"] == 1  # epoch 2 only
    assert "resuming" in capsys.readouterr().out
    rows = list(csv.DictReader(open(resumed / "train_log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0] == next(csv.DictReader(open(exp / "train_log.csv")))
    assert AtomicCheckpointer(resumed / "ckpt").find_checkpoint().meta["epoch"] == 2


def run_score(exp, data, splits, *extra):
    cmd = [sys.executable, "-m", "systems.score", "--exp", str(exp), "--data", str(data), "--splits", splits,
           "--device", "cpu", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def assert_same_scores(got_exp, want_exp, splits):
    for split in splits:
        got, want = SystemScores(got_exp / "scores" / split), SystemScores(want_exp / "scores" / split)
        assert got.ids == want.ids and np.array_equal(got.labels, want.labels)
        assert np.array_equal(got.window_offsets, want.window_offsets)
        # another batch composition on each share: float32 kernels may round the last bits otherwise
        windows = [np.load(exp / "scores" / split / "window_embeddings.npy") for exp in (got_exp, want_exp)]
        for a, b in ((got.logits, want.logits), (got.embeddings, want.embeddings), windows):
            assert a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5)
        assert not (got_exp / "scores" / f".{split}.shares").exists()


def trained_copies(trained, tmp_path, *names):
    for name in names:
        shutil.copytree(trained, tmp_path / name, ignore=shutil.ignore_patterns("scores"))
    return [tmp_path / name for name in names]


def test_two_scoring_processes_equal_one(two_processes, tiny_prepared, tmp_path):
    """`systems.score --ngpu 2` (torchrun, gloo on CPU): each process scores a contiguous share of
    the windows and rank 0 writes them in window order, as one process writes the whole split."""
    one, two = trained_copies(two_processes[0], tmp_path, "one", "two")
    run_score(one, tiny_prepared, "dev,test")
    out = run_score(two, tiny_prepared, "dev,test", "--ngpu", "2")
    assert out.count("utterances/s, 2 processes)") == 2  # rank 0 alone speaks, once per split
    assert_same_scores(two, one, ("dev", "test"))
    # current splits start no processes
    again = run_score(two, tiny_prepared, "dev,test", "--ngpu", "2")
    assert again.count("up to date, skipped") == 2 and "checkpoint of epoch" not in again


def test_more_scoring_processes_than_windows(two_processes, tiny_corpus, tmp_path):
    """Three processes on a test split of two one-window utterances: the third has no share."""
    import soundfile as sf

    wavs = tmp_path / "wav"
    wavs.mkdir()
    found = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").glob("*.wav"))
    short = [w for w in found if sf.info(w).duration < 3.5]
    for w in short[:2]:
        shutil.copy(w, wavs / w.name)
    data = tmp_path / "data"
    run_module("data_prep.prepare", "--split", "test", "--wav_dir", str(wavs), "--out", str(data), "--nj", "1")
    one, three = trained_copies(two_processes[0], tmp_path, "one", "three")
    run_score(one, data, "test")
    assert len(np.load(one / "scores" / "test" / "window_embeddings.npy")) == 2
    assert "utterances/s, 3 processes)" in run_score(three, data, "test", "--ngpu", "3")
    assert_same_scores(three, one, ("test",))
