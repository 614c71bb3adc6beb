"""One training engine for every system.

A small loop of our own rather than SpeechBrain's `Brain`: each system is a plain `nn.Module` with
the interface in `base.py`, the config is one strict YAML, and what the engine must guarantee —
checkpoint every epoch, automatic resume, best-by-dev-F1 selection, bf16 autocast on GPU, seeded
data order and augmentation — fits in this file without adopting HyperPyYAML.

    python -m systems.train --config systems/lfcc_resnet18/conf/paper.yaml --data exp/data \
        --exp exp/lfcc_resnet18 [--musan DIR] [--set train.epochs=3 ...]

Writes `EXP/config.yaml` (the resolved config; scoring reads only that), `EXP/ckpt/last.pt` after
every epoch, `EXP/ckpt/best.pt` (highest dev open-set F1, seed 004 §3.3) and `EXP/train_log.csv`.
A re-run with the same config resumes from `last.pt`, or does nothing when training is complete.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_prep.augment import MusanAugmenter, domain_index
from data_prep.common import atomic_path, fail, write_text_atomic
from data_prep.prepare import PreparedSplit
from data_prep.views import random_crop
from eval.metrics import open_set_scores
from systems import model_class
from systems.common.config import SystemConfig

LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "dev_f1", "dev_acc", "lr", "seconds")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def build_model(cfg: SystemConfig) -> nn.Module:
    return model_class(cfg.system)(**cfg.model)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainCrops(Dataset):
    """Random `n`-sample crops of the prepared training audio, augmented; seeded per (epoch, item)."""

    def __init__(self, split: PreparedSplit, n: int, augmenter: MusanAugmenter | None, seed: int):
        self.split, self.n, self.augmenter, self.seed = split, n, augmenter, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        x = random_crop(self.split.audio(i), self.n, rng)
        condition = "clean"
        if self.augmenter is not None:
            x, condition = self.augmenter(x, rng)
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.split.labels[i]),
                domain_index(condition))


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def embed_arrays(model: nn.Module, arrays, device: torch.device, batch_size: int, bf16: bool,
                 desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Utterance-level logits and embeddings: the mean over each array's views, views batched."""
    model.eval()
    n = len(arrays)
    logits = np.zeros((n, 0), np.float32)
    embs = np.zeros((n, 0), np.float32)
    pending_views, owners = [], []

    def flush():
        nonlocal logits, embs
        batch = torch.from_numpy(np.stack(pending_views)).to(device)
        with autocast(device, bf16):
            lo, em = model(batch)
        lo, em = lo.float().cpu().numpy(), em.float().cpu().numpy()
        if logits.shape[1] == 0:
            logits, embs = np.zeros((n, lo.shape[1]), np.float32), np.zeros((n, em.shape[1]), np.float32)
        np.add.at(logits, owners, lo)
        np.add.at(embs, owners, em)
        np.add.at(counts, owners, 1)
        pending_views.clear()
        owners.clear()

    counts = np.zeros(n, np.int64)
    for i in tqdm(range(n), desc=desc, unit="utt", disable=desc is None, mininterval=2.0):
        for view in model.views(arrays[i]):
            pending_views.append(view)
            owners.append(i)
            if len(pending_views) == batch_size:
                flush()
    if pending_views:
        flush()
    return logits / counts[:, None], embs / counts[:, None]


class SplitAudio:
    """Sequence view of a prepared split's readable utterances (lazy, memory-mapped)."""

    def __init__(self, split: PreparedSplit):
        self.split = split
        self.index = np.flatnonzero(split.readable)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.split.audio(int(self.index[i]))


def dev_metrics(model, dev: PreparedSplit, device, cfg: SystemConfig) -> tuple[float, float]:
    logits, _ = embed_arrays(model, SplitAudio(dev), device, cfg.train.score_batch_size, cfg.train.bf16)
    pred = logits.argmax(1)
    truth = dev.labels[dev.readable]
    return open_set_scores(truth, pred)["f1"], float(np.mean(pred == truth))


def make_optimizer(cfg: SystemConfig, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    # a system may give per-layer learning rates (SSL fine-tunes); otherwise one group
    params = model.optimizer_groups(t.lr) if hasattr(model, "optimizer_groups") else \
        [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        fail(f"{path}: cannot load checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")


def write_log(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, out.getvalue())


def train(cfg: SystemConfig, data_dir: Path, exp_dir: Path, device: torch.device,
          stop_after_epochs: int | None = None) -> dict:
    """Train (or resume) and return a summary. `stop_after_epochs` ends the call early, as an
    interruption would, leaving a resumable checkpoint."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = exp_dir / "ckpt"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    resolved = cfg.to_dict()
    state = None
    if last_path.is_file():
        state = load_checkpoint(last_path)
        if state.get("config") != resolved:
            print(f"[train] {exp_dir}: config changed since the last checkpoint; training from scratch")
            state = None
    cfg.save(exp_dir / "config.yaml")
    if state is not None and state["epoch"] >= cfg.train.epochs:
        print(f"[train] {exp_dir}: already trained for {state['epoch']} epochs (best dev F1 "
              f"{state['best_f1']:.4f} at epoch {state['best_epoch']}); nothing to do")
        return {"epochs_run": 0, "best_f1": state["best_f1"], "best_epoch": state["best_epoch"]}

    seed_everything(cfg.train.seed)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    start_epoch, best_f1, best_epoch, log_rows = 1, -1.0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_f1, best_epoch = state["epoch"] + 1, state["best_f1"], state["best_epoch"]
        log_rows = state["log"]
        print(f"[train] resuming {exp_dir} at epoch {start_epoch}")

    train_split, dev_split = PreparedSplit(data_dir / "train"), PreparedSplit(data_dir / "dev")
    augmenter = MusanAugmenter(cfg.augment) if cfg.augment.musan else None
    dataset = TrainCrops(train_split, model.train_samples, augmenter, cfg.train.seed)
    if hasattr(model, "wrap_training_data"):  # e.g. W2V-ASDG's cache of frozen front-end features
        dataset = model.wrap_training_data(dataset, exp_dir / "feature_cache", device)
    loss_fn = nn.CrossEntropyLoss()
    epochs_run = 0
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        t0 = time.time()
        dataset.epoch = epoch
        loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, drop_last=False,
                            num_workers=cfg.train.num_workers, persistent_workers=False,
                            generator=torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch))
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.train.epochs}", unit="batch", mininterval=2.0)
        for step, (wave, label, domain) in enumerate(bar):
            wave, label = wave.to(device, non_blocking=True), label.to(device, non_blocking=True)
            progress = (epoch - 1 + step / max(1, len(loader))) / cfg.train.epochs
            with autocast(device, cfg.train.bf16):
                if hasattr(model, "training_loss"):  # systems with auxiliary losses (W2V-ASDG)
                    loss, logits = model.training_loss(wave, label, domain.to(device), progress)
                else:
                    logits, _ = model(wave)
                    loss = loss_fn(logits.float(), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            if not math.isfinite(loss.item()):
                fail(f"[train] {exp_dir}: loss became {loss.item()} at epoch {epoch}; lower train.lr")
            total_loss += loss.item() * len(label)
            correct += int((logits.argmax(1) == label).sum())
            seen += len(label)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        dev_f1, dev_acc = dev_metrics(model, dev_split, device, cfg)
        row = {"epoch": epoch, "train_loss": round(total_loss / seen, 5), "train_acc": round(correct / seen, 4),
               "dev_f1": round(dev_f1, 5), "dev_acc": round(dev_acc, 4), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.time() - t0, 1)}
        log_rows.append(row)
        improved = dev_f1 > best_f1
        if improved:
            best_f1, best_epoch = dev_f1, epoch
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "best_f1": best_f1, "best_epoch": best_epoch, "config": resolved, "log": log_rows}
        if improved:
            save_checkpoint(best_path, {"model": state["model"], "epoch": epoch, "dev_f1": dev_f1,
                                        "config": resolved})
        save_checkpoint(last_path, state)
        write_log(exp_dir / "train_log.csv", log_rows)
        print(f"[train] epoch {epoch}: loss {row['train_loss']:.4f}, dev F1 {dev_f1:.4f} (best {best_f1:.4f} "
              f"@ {best_epoch}), {row['seconds']} s")
        epochs_run += 1
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
            break
    return {"epochs_run": epochs_run, "best_f1": best_f1, "best_epoch": best_epoch}


def torch_threads() -> None:
    """Respect an explicit OMP_NUM_THREADS; otherwise use every core we have."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
