"""Training on SpeechBrain's Brain: checkpoints every epoch, resumes after an interruption (kill -9
included) with the weights of an uninterrupted run, keeps the best by dev F1, LR schedules."""
from __future__ import annotations

import csv
import math
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from core.errors import KitError
from systems.common.config import load_config
from systems.common.engine import AtomicCheckpointer, lr_factor, train
from systems.common.inference import best_checkpoint, load_model_state

from .conftest import ROOT

TINY = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32], "train.batch_size": 8,
        "train.num_workers": 0, "train.epochs": 3}
CONFIG = ROOT / "systems/lfcc_resnet18/conf/demo.yaml"


def tiny_config(tiny_corpus, **extra):
    return load_config(CONFIG, dict(TINY, **{"augment.musan": str(tiny_corpus / "musan_demo")}, **extra))


def latest_weights(exp):
    ckpt = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    return ckpt.meta["epoch"], load_model_state(ckpt.paramfiles["model"])


def log_rows(exp):
    return list(csv.DictReader(open(exp / "train_log.csv")))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupt_and_resume_gives_the_uninterrupted_weights(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus)
    whole = tmp_path / "whole"
    assert train(cfg, tiny_prepared, whole, torch.device("cpu"))["epochs_run"] == 3

    exp = tmp_path / "exp"
    first = train(cfg, tiny_prepared, exp, torch.device("cpu"), stop_after_epochs=1)
    assert first["epochs_run"] == 1 and latest_weights(exp)[0] == 1
    second = train(cfg, tiny_prepared, exp, torch.device("cpu"))
    assert second["epochs_run"] == 2  # epochs 2 and 3 only
    epoch, weights = latest_weights(exp)
    assert epoch == 3
    assert_same_weights(weights, latest_weights(whole)[1])
    rows = log_rows(exp)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in log_rows(whole)]
    best = best_checkpoint(exp / "ckpt")
    assert best.meta["dev_f1"] == pytest.approx(max(float(r["dev_f1"]) for r in rows), abs=1e-4)
    # at most the best and the most recent checkpoint are kept
    assert len(AtomicCheckpointer(exp / "ckpt").list_checkpoints()) <= 2
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0


def test_kill_9_during_training_then_rerun_gives_the_same_weights(tiny_prepared, tiny_corpus, tmp_path):
    """A real kill -9 of `python -m systems.train` in its second epoch, then a plain re-run."""
    cmd = [sys.executable, "-m", "systems.train", "--config", str(CONFIG), "--data", str(tiny_prepared),
           "--musan", str(tiny_corpus / "musan_demo"), "--device", "cpu",
           "--set", *[f"{k}={v}" for k, v in TINY.items() if k != "train.epochs"], "train.epochs=8"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*cmd, "--exp", str(whole)], cwd=ROOT, env=env, check=True, capture_output=True)

    proc = subprocess.Popen([*cmd, "--exp", str(killed)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "train_log.csv").is_file():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "train_log.csv").is_file(), "training never finished its first epoch"
    rerun = subprocess.run([*cmd, "--exp", str(killed)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    assert latest_weights(killed)[0] == 8
    assert_same_weights(latest_weights(killed)[1], latest_weights(whole)[1])
    leftovers = [p for p in killed.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not leftovers, leftovers


def test_incomplete_checkpoint_is_ignored_and_removed(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    # what a kill during a save leaves: parameters written, meta file not yet renamed into place
    partial = exp / "ckpt" / "CKPT+2099-01-01+00-00-00+00"
    partial.mkdir()
    (partial / "model.ckpt").write_bytes(b"half")
    (partial / "CKPT.partial").write_text("epoch: 9\n")
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    assert not partial.exists()


def test_a_kill_after_the_last_checkpoint_is_finished_by_the_next_run(tiny_prepared, tiny_corpus, tmp_path):
    """The last epoch's save writes the checkpoint, then drops superseded ones and writes the log;
    a kill in between leaves an older checkpoint and a log one row short. The next run, which finds
    training complete, finishes both instead of saying "nothing to do" over them."""
    import shutil

    import yaml

    cfg = tiny_config(tiny_corpus, **{"train.epochs": 2})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    whole_log = (exp / "train_log.csv").read_bytes()
    kept = sorted(p.name for p in (exp / "ckpt").iterdir())
    # the state of the kill: a superseded checkpoint still there, the log's last row missing
    latest = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    old = exp / "ckpt" / "CKPT+2000-01-01+00-00-00+00"
    shutil.copytree(latest.path, old)
    meta = yaml.safe_load((old / "CKPT.yaml").read_text())
    meta.update(epoch=1, dev_f1=-1.0, unixtime=1.0)
    (old / "CKPT.yaml").write_text(yaml.safe_dump(meta))
    (exp / "train_log.csv").write_bytes(b"".join(whole_log.splitlines(keepends=True)[:2]))
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    assert (exp / "train_log.csv").read_bytes() == whole_log
    assert sorted(p.name for p in (exp / "ckpt").iterdir()) == kept


def test_a_trained_experiment_run_again_writes_nothing(tiny_prepared, tiny_corpus, tmp_path, capsys):
    """A second run over a finished training leaves its log alone (before, a log written with \\r\\n
    line ends never compared equal to itself, so every run rewrote it and said it had completed it)."""
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    log = exp / "train_log.csv"
    written, stamp = log.read_bytes(), log.stat().st_mtime_ns
    assert b"\r" not in written and written.count(b"\n") == 2  # header and one epoch, \n line ends
    capsys.readouterr()
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    assert "completed from the last checkpoint's log" not in capsys.readouterr().out
    assert log.read_bytes() == written and log.stat().st_mtime_ns == stamp


def test_a_renamed_noise_file_retrains(tiny_prepared, tiny_corpus, tmp_path):
    """Noise files are drawn by their place in the sorted list: renaming one changes what training
    sees while the bank's count, bytes and newest time stay; the checkpoint's bank listing notices."""
    import shutil

    bank = tmp_path / "musan"
    shutil.copytree(tiny_corpus / "musan_demo", bank)
    cfg = load_config(CONFIG, dict(TINY, **{"augment.musan": str(bank), "train.epochs": 1}))
    exp = tmp_path / "exp"
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    noise = sorted((bank / "noise").rglob("*.wav"))[0]
    noise.rename(noise.with_name("zz-" + noise.name))
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1


def test_replaced_ssl_weights_retrain(tiny_prepared, tiny_corpus, tiny_ssl_checkpoints, tmp_path, capsys):
    """Other weights saved at the same `model.ssl_ckpt` path change what is fine-tuned while the config
    reads the same: the checkpoint's SSL listing notices, and training starts over."""
    import shutil

    from transformers import HubertConfig, HubertModel

    from .conftest import TINY_SSL

    ssl = tmp_path / "hubert"
    shutil.copytree(tiny_ssl_checkpoints["hubert"], ssl)
    cfg = load_config(ROOT / "systems/hubert_ft/conf/demo.yaml",
                      {"model.ssl_ckpt": str(ssl), "train.epochs": 1, "train.batch_size": 8, "augment.p_codec": 0.0,
                       "augment.musan": str(tiny_corpus / "musan_demo")})
    exp = tmp_path / "exp"
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    torch.manual_seed(1)
    HubertModel(HubertConfig(**TINY_SSL)).save_pretrained(ssl)
    capsys.readouterr()
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1
    assert "the SSL checkpoint's files changed since the last checkpoint" in capsys.readouterr().out


def test_changed_config_starts_over(tiny_prepared, tiny_corpus, tmp_path):
    exp = tmp_path / "exp"
    train(tiny_config(tiny_corpus, **{"train.epochs": 1}), tiny_prepared, exp, torch.device("cpu"))
    changed = tiny_config(tiny_corpus, **{"train.epochs": 1, "train.lr": 5e-4})
    assert train(changed, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1


def test_cosine_schedule_moves_the_logged_lr(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, **{"train.lr_schedule": "cosine", "train.lr": 1e-3})
    train(cfg, tiny_prepared, tmp_path / "exp", torch.device("cpu"))
    lrs = [float(r["lr"]) for r in log_rows(tmp_path / "exp")]
    assert lrs[0] < 1e-3 and lrs[0] > lrs[1] > lrs[2]
    assert lrs[2] == pytest.approx(0.0, abs=1e-12)  # min_lr_ratio 0 at the last step
    constant = tiny_config(tiny_corpus)
    train(constant, tiny_prepared, tmp_path / "const", torch.device("cpu"))
    assert {float(r["lr"]) for r in log_rows(tmp_path / "const")} == {1e-3}


def test_lr_factor_hand_worked():
    def factor(**train):
        cfg = load_config(CONFIG, {f"train.{k}": v for k, v in dict(epochs=4, **train).items()})
        return lr_factor(cfg, steps_per_epoch=10)

    f = factor(lr_schedule="step", step_epochs=1, step_gamma=0.5)
    assert [f(s) for s in (0, 9, 10, 25, 39)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    f = factor(lr_schedule="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    assert [f(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warm-up over 10 steps
    assert f(10) == pytest.approx(1.0)
    assert f(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert f(40) == pytest.approx(0.1)
    f = factor(lr_schedule="constant")
    assert {f(s) for s in range(40)} == {1.0}


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _RunsCode()}, fh)
    with pytest.raises(KitError, match="cannot load checkpoint"):
        load_model_state(path)


# tiny versions of every system: resume must equal an uninterrupted run for each of them
TINY_SYSTEMS = {
    "lfcc_resnet18": {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32]},
    "se_res2net50": {"model.blocks": [1, 1, 1, 1], "model.segment_frames": 100},
    "rawnet2": {"model.channels": [8, 16], "model.gru_hidden": 16, "model.gru_layers": 1,
                "model.input_samples": 16000},
    "hubert_ft": {"model.input_samples": 16000},
    "wav2vec2_ft": {"model.input_samples": 16000},
    "w2v_asdg": {"model.input_samples": 16000, "model.feature_cache_copies": 2},
}


@pytest.mark.parametrize("system", sorted(TINY_SYSTEMS))
def test_resume_equals_uninterrupted_for_every_system(system, tiny_prepared, tiny_corpus, tmp_path):
    from .conftest import TINY_SSL

    overrides = dict(TINY_SYSTEMS[system], **{"train.epochs": 2, "train.batch_size": 8, "train.num_workers": 0,
                                              "augment.musan": str(tiny_corpus / "musan_demo")})
    if system in ("hubert_ft", "wav2vec2_ft", "w2v_asdg"):
        overrides["model.random_init"] = dict(TINY_SSL)
    cfg = load_config(ROOT / f"systems/{system}/conf/demo.yaml", overrides)
    train(cfg, tiny_prepared, tmp_path / "whole", torch.device("cpu"))
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"), stop_after_epochs=1)
    assert latest_weights(tmp_path / "resumed")[0] == 1
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"))
    assert latest_weights(tmp_path / "resumed")[0] == 2
    assert_same_weights(latest_weights(tmp_path / "resumed")[1], latest_weights(tmp_path / "whole")[1])


def test_changed_training_data_retrains(tiny_corpus, tmp_path):
    """The train stage's stamp covers the data: re-preparing train without one file re-runs it."""
    import shutil

    from .conftest import run_module

    data = tmp_path / "data"
    run_module("data_prep.prepare", "--data_root", str(tiny_corpus), "--out", str(data))
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    assert train(cfg, data, exp, torch.device("cpu"))["epochs_run"] == 1
    assert train(cfg, data, exp, torch.device("cpu"))["epochs_run"] == 0
    smaller = tmp_path / "smaller"
    shutil.copytree(tiny_corpus / "ADD2023_Track3_train", smaller / "ADD2023_Track3_train")
    first = sorted((smaller / "ADD2023_Track3_train" / "wav").iterdir())[0]
    first.unlink()
    label = smaller / "ADD2023_Track3_train" / "label.txt"
    label.write_text("".join(ln for ln in label.read_text().splitlines(True) if not ln.startswith(first.stem)))
    run_module("data_prep.prepare", "--split", "train", "--wav_dir", str(smaller / "ADD2023_Track3_train" / "wav"),
               "--label_file", str(label), "--out", str(data))
    assert train(cfg, data, exp, torch.device("cpu"))["epochs_run"] == 1


def test_deterministic_switch_repeats_bit_for_bit(tiny_prepared, tiny_corpus, tmp_path):
    from systems.common.inference import torch_threads

    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1, "train.deterministic": True})
    threads = torch.get_num_threads()
    try:
        torch_threads(deterministic=True)
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        for name in ("a", "b"):
            train(cfg, tiny_prepared, tmp_path / name, torch.device("cpu"))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert_same_weights(latest_weights(tmp_path / "a")[1], latest_weights(tmp_path / "b")[1])


def test_a_lost_best_checkpoint_is_reported(tiny_prepared, tiny_corpus, tmp_path, capsys):
    """The best checkpoint gone (deleted by hand): the best one left stands in for it, and the train
    stage says so, naming the lost epoch from the training log the last checkpoint holds, instead
    of reporting the stand-in as the best by dev F1 without a word. The tiny model's dev F1 ties
    from epoch to epoch, so the lost epoch is made the best in that log: what the log of a run
    whose best checkpoint was then deleted says."""
    import json
    import shutil

    cfg = tiny_config(tiny_corpus, **{"train.epochs": 3})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    capsys.readouterr()
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 0
    assert "warning" not in capsys.readouterr().err  # nothing lost, nothing said
    latest = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    for ckpt in AtomicCheckpointer(exp / "ckpt").list_checkpoints():
        if ckpt.path != latest.path:
            shutil.rmtree(ckpt.path)
    log = latest.path / "log.ckpt"
    rows = json.loads(log.read_text())
    rows[0]["dev_f1"] = round(latest.meta["dev_f1"] + 0.25, 5)
    log.write_text(json.dumps(rows))
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["best_epoch"] == 3
    err = capsys.readouterr().err
    assert f"the best checkpoint, epoch 1 (dev F1 {rows[0]['dev_f1']:.4f}), is gone" in err
    assert f"epoch 3 (dev F1 {latest.meta['dev_f1']:.4f}) is the best left" in err
