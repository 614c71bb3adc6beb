"""The training stage's stamp (systems/common/train_inputs.py): a finished training is told
"nothing to do" without importing PyTorch, and anything that would make the engine train again
(another config, other data, a lost or truncated checkpoint file, a training cut short) makes the
stamp not count, so that the engine's own check decides."""
from __future__ import annotations

import shutil
import subprocess
import sys

import torch

from core.stamps import STAMP_NAME
from systems.common.engine import train
from systems.common.inference import best_checkpoint
from systems.common.train_inputs import finished_training

from .conftest import ROOT
from .test_engine import tiny_config

# runs systems.train as run_track3.sh does, then says whether PyTorch was imported
CLI = ("import runpy, sys; sys.argv = ['systems.train'] + sys.argv[1:]; "
       "runpy.run_module('systems.train', run_name='__main__'); print('torch imported:', 'torch' in sys.modules)")


def train_cli(config, data, exp, *extra):
    return subprocess.run([sys.executable, "-c", CLI, "--config", str(config), "--data", str(data), "--exp", str(exp),
                           *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_finished_training_answers_without_torch(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 2})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    best = best_checkpoint(exp / "ckpt")
    done = finished_training(cfg, tiny_prepared, exp)
    assert done is not None
    assert (done["epochs"], done["best_epoch"], done["best_f1"]) == (2, best.meta["epoch"], best.meta["dev_f1"])

    config = tmp_path / "config.yaml"
    cfg.save(config)
    proc = train_cli(config, tiny_prepared, exp)
    assert proc.returncode == 0, proc.stderr
    assert "already trained for 2 epochs" in proc.stdout and "nothing to do" in proc.stdout
    assert f"best dev F1 {best.meta['dev_f1']:.4f} at epoch {best.meta['epoch']}" in proc.stdout
    assert "torch imported: False" in proc.stdout
    # the stamp's answer does not pass over a wrong process count
    proc = train_cli(config, tiny_prepared, exp, "--ngpu", "0")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --ngpu 0: at least 1", proc.stderr

    # without the stamp (an experiment trained before it existed) the engine decides, and stamps it
    (exp / STAMP_NAME).unlink()
    proc = train_cli(config, tiny_prepared, exp)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "torch imported: True" in proc.stdout
    assert finished_training(cfg, tiny_prepared, exp) is not None


def test_what_would_retrain_makes_the_stamp_not_count(tiny_prepared, tiny_corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_prepared, data, symlinks=True)
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    train(cfg, data, exp, torch.device("cpu"))
    assert finished_training(cfg, data, exp) is not None

    assert finished_training(tiny_config(tiny_corpus, **{"train.epochs": 2}), data, exp) is None
    assert finished_training(tiny_config(tiny_corpus, **{"train.lr": 0.5}), data, exp) is None
    # loader settings change how fast batches come, not which: the training stands, as in the engine
    assert finished_training(tiny_config(tiny_corpus, **{"train.epochs": 1, "train.num_workers": 1}), data, exp)

    manifest = data / "train" / "manifest.tsv"
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b"\n", b"\r\n", 1))
    assert finished_training(cfg, data, exp) is None
    manifest.write_bytes(original)
    assert finished_training(cfg, data, exp) is not None

    model = next((exp / "ckpt").rglob("model.ckpt"))
    weights = model.read_bytes()
    model.write_bytes(weights[:-1])
    assert finished_training(cfg, data, exp) is None
    model.write_bytes(weights)
    assert finished_training(cfg, data, exp) is not None
    assert finished_training(cfg, tmp_path / "not_prepared", exp) is None  # no traceback either


def test_a_training_cut_short_or_started_again_has_no_stamp(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 2})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"), stop_after_epochs=1)
    assert not (exp / STAMP_NAME).exists() and finished_training(cfg, tiny_prepared, exp) is None
    assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 1
    assert finished_training(cfg, tiny_prepared, exp)["epochs"] == 2

    # another config trains from scratch: its first epoch, cut short, leaves no stamp of the old one
    longer = tiny_config(tiny_corpus, **{"train.epochs": 3, "train.lr": 0.002})
    train(longer, tiny_prepared, exp, torch.device("cpu"), stop_after_epochs=1)
    assert not (exp / STAMP_NAME).exists()
    assert finished_training(cfg, tiny_prepared, exp) is None and finished_training(longer, tiny_prepared, exp) is None


def test_the_scoring_batch_size_is_saved_without_training_again(tiny_prepared, tiny_corpus, tmp_path):
    """score.batch_size (like the loader's settings) says how fast the model runs, not what it
    learned: editing it keeps the checkpoints, the train stage saves it into EXP/config.yaml (what
    the score stage reads), and scoring then runs with it. Checkpoints and stamps of an earlier
    kit, whose config digest held it, count as before."""
    import json

    from core.stamps import options_digest, read_stamp
    from systems.common.config import load_config
    from systems.common.train_inputs import config_digest, earlier_config_digest, fits_config

    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    checkpoints = sorted((p.name, p.stat().st_mtime_ns) for p in (exp / "ckpt").rglob("*") if p.is_file())

    edited = tiny_config(tiny_corpus, **{"train.epochs": 1, "score.batch_size": cfg.score.batch_size // 2})
    assert config_digest(edited) == config_digest(cfg) and earlier_config_digest(edited) != earlier_config_digest(cfg)
    config = tmp_path / "config.yaml"
    edited.save(config)
    proc = train_cli(config, tiny_prepared, exp)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "batch settings saved" in proc.stdout, proc.stderr
    assert "torch imported: False" in proc.stdout
    assert load_config(exp / "config.yaml").score.batch_size == cfg.score.batch_size // 2
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (exp / "ckpt").rglob("*") if p.is_file()) == checkpoints
    again = train_cli(config, tiny_prepared, exp)  # the stamp was written again around the new config
    assert "nothing to do" in again.stdout and "saved" not in again.stdout and "torch imported: False" in again.stdout
    scored = subprocess.run([sys.executable, "-m", "systems.score", "--exp", str(exp), "--data", str(tiny_prepared),
                             "--splits", "dev", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    assert read_stamp(exp / "scores" / "dev")["score"]["batch_size"] == cfg.score.batch_size // 2

    # a training stamp and checkpoint of an earlier kit: its digest held the batch size it was trained with
    best = best_checkpoint(exp / "ckpt")
    assert fits_config(earlier_config_digest(edited), edited) and not fits_config(earlier_config_digest(cfg), edited)
    stamp = json.loads((exp / STAMP_NAME).read_text())
    stamp["options"]["fingerprint"]["config_digest"] = earlier_config_digest(edited)
    stamp["digest"] = options_digest(stamp["options"])
    (exp / STAMP_NAME).write_text(json.dumps(stamp))
    assert finished_training(edited, tiny_prepared, exp) is not None
    assert best.meta["config_digest"] == config_digest(edited)


def test_trained_only_trains_nothing_and_says_why(tiny_prepared, tiny_corpus, tmp_path):
    """`--trained_only` (stage 4 run alone): a finished training of the config passes without torch;
    no stamp, a training setting changed, or data changed is one error line saying which, and
    nothing is trained or deleted."""
    cfg = tiny_config(tiny_corpus, **{"train.epochs": 1})
    exp = tmp_path / "exp"
    config = tmp_path / "config.yaml"
    cfg.save(config)

    def refused(config_file, data=tiny_prepared) -> str:
        before = sorted(p.relative_to(exp) for p in exp.rglob("*")) if exp.exists() else []
        proc = train_cli(config_file, data, exp, "--trained_only")
        err = proc.stderr.strip()
        assert proc.returncode == 2 and err.startswith("error: ") and "\n" not in err, proc.stdout + proc.stderr
        assert (sorted(p.relative_to(exp) for p in exp.rglob("*")) if exp.exists() else []) == before
        return err

    assert "no finished training" in refused(config)
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    proc = train_cli(config, tiny_prepared, exp, "--trained_only")
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "torch imported: False" in proc.stdout

    changed = tmp_path / "changed.yaml"
    tiny_config(tiny_corpus, **{"train.epochs": 1, "train.lr": cfg.train.lr * 2, "train.seed": 9}).save(changed)
    err = refused(changed)
    assert f"train.lr: {cfg.train.lr} → {cfg.train.lr * 2}; train.seed: {cfg.train.seed} → 9" in err
    assert str(changed) in err

    data = tmp_path / "data"
    shutil.copytree(tiny_prepared, data, symlinks=True)
    manifest = data / "train" / "manifest.tsv"
    manifest.write_text(manifest.read_text() + "\n")
    assert "trained on other data" in refused(config, data)
    # a split that a killed prepare left unfinished: said as such, with or without --trained_only
    shutil.rmtree(data / "dev")
    assert refused(config, data) == f"error: {data / 'dev'}: not prepared; run the prepare stage"
    proc = train_cli(config, data, exp)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {data / 'dev'}: not prepared; run the prepare stage"
