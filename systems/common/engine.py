"""One training engine for every system, on SpeechBrain's `Brain`.

    python -m systems.train --config systems/lfcc_resnet18/conf/paper.yaml --data exp/data \
        --exp exp/lfcc_resnet18 [--musan DIR] [--set train.epochs=3 ...]

`SystemBrain` is the only Brain subclass: the system's own hooks (`System.training_loss`,
`optimizer_groups`, `wrap_training_data`, see base.py) carry what differs between systems. A
`Checkpointer` in `EXP/ckpt/` saves model, optimiser, LR scheduler, epoch counter, torch RNG state
and the training log after every epoch and keeps the most recent and the best by dev open-set F1
(seed 004 §3.3: model selection by dev F1, never test); a re-run recovers the most recent and goes
on, or does nothing when training is complete. Also written: `EXP/config.yaml` (the resolved
config; scoring reads only that) and `EXP/train_log.csv`.

What the kit adds to Brain: checkpoints that are complete or invisible (the meta file that makes a
folder a checkpoint is written last), the torch RNG state as a recoverable (so that a run resumed
after kill -9 ends with the same weights as one never interrupted), data order and augmentation
seeded per (seed, epoch, item) (systems/common/sampling.py), the config digest in the checkpoint
meta (a changed config trains from scratch), and checkpoints read with `torch.load(weights_only=True)`
(torch's default, which SpeechBrain's loaders use): a checkpoint cannot run code.

Several GPUs (`torchrun --nproc_per_node N -m systems.train ...`, run_track3.sh --ngpu N): every
process reads its share of each step's train.batch_size items (sampling.py), DDP averages the
gradients, dev is split between the processes and its logit sums added up, and rank 0 alone writes
(checkpoints, train_log.csv, progress bars, messages). Brain's own DDP wrapping is not used: it wraps
the model's forward, which training does not call (see `SystemBrain._wrap_distributed`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer, mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import ddp_all_reduce, ddp_barrier, run_on_main
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn
from torch.distributed import ReduceOp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from core.atomic import remove_stale_temporaries, write_text_atomic
from core.errors import fail
from core.labels import NUM_KNOWN
from core.metrics import open_set_scores
from core.prepared_split import CODEC_FOLDER, CodecVariants, PreparedSplit
from core.provenance import TRAIN_ENVIRONMENT, environment
from data_prep.augment import MusanAugmenter, domain_index
from systems.common.base import (
    additive_margin_cross_entropy,
    default_training_loss,
    overrides_training_loss,
    regmixup_loss,
)
from systems.common.config import SystemConfig, TrainConfig, resolved_pin_memory
from systems.common.device_effects import apply_channel
from systems.common.distributed import World, join, leave, process_device, world_from_env
from systems.common.inference import (
    META_FILE,
    best_checkpoint,
    best_key,
    build_model,
    to_channels_last,
    window_hop,
    window_length,
)
from systems.common.sampling import EpochBatches, item_key, shard
from systems.common.train_inputs import (
    LISTING_NAMES,
    config_digest,
    data_digest,
    drop_trained_stamp,
    fits_config,
    input_listings,
    trained_message,
    training_fingerprint,
    write_trained_stamp,
)
from systems.common.windows import SplitWindows, random_crop

LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "dev_f1", "dev_acc", "lr", "seconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainCrops(Dataset):
    """Random `n`-sample crops of the prepared training audio, augmented; seeded per (epoch, item),
    keyed by (epoch, index) pairs or bare indices at `epoch` (sampling.item_key). With the
    augmenter's codec cache, the crop is cut from the clean audio or from one of its cached codec
    variants (the same length, so the crop draw is the same). With `defer_effects`, an item also
    carries the augmenter's drawn channel (`MusanAugmenter.plan`) for the training device to apply
    (device_effects.py), and its wave is the crop before the channel."""

    def __init__(self, split: PreparedSplit, n: int, augmenter: MusanAugmenter | None, seed: int,
                 defer_effects: bool = False):
        self.split, self.n, self.augmenter, self.seed = split, n, augmenter, seed
        self.defer_effects = defer_effects and augmenter is not None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        epoch, i = item_key(key, self.epoch)
        rng = np.random.default_rng([self.seed, epoch, i])
        condition, plan = "clean", None
        if self.augmenter is not None:
            audio, coded = self.augmenter.source(self.split, i, rng)
            x = random_crop(audio, self.n, rng)
            if self.defer_effects:
                x, plan, condition = self.augmenter.plan(x, rng, coded)
            else:
                x, condition = self.augmenter(x, rng, coded=coded)
        else:
            x = random_crop(self.split.audio(i), self.n, rng)
        item = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(self.split.labels[i]),
                domain_index(condition))
        return item if plan is None else (*item, {k: torch.from_numpy(np.asarray(v)) for k, v in plan.items()})


def effects_on_device(cfg: SystemConfig, augmenter: MusanAugmenter | None, device: torch.device,
                      reads_own_data: bool) -> bool:
    """Whether augment.effects_on puts the augmentation's channel effects (band-pass, EQ, clipping)
    on the training device: `device` (an error where it cannot), `auto` on CUDA where it can,
    `loader` never. It cannot when codec round trips run on the fly (they come after the channel;
    no codec cache) or when the system reads its own training data."""
    mode = cfg.augment.effects_on
    if augmenter is None or mode == "loader":
        return False
    blocker = None
    if augmenter.cfg.p_codec > 0 and augmenter.codec_cache is None:
        blocker = "codec round trips run on the fly in the loader (no codec cache for this config)"
    elif reads_own_data:
        blocker = f"{cfg.system} trains on its own data (wrap_training_data), not on the engine's crops"
    if mode == "device" and blocker:
        fail(f"augment.effects_on device: {blocker}; use loader or auto")
    return blocker is None and (mode == "device" or device.type == "cuda")


def build_augmenter(cfg: SystemConfig, train_split: PreparedSplit, quiet: bool = False) -> MusanAugmenter | None:
    """The training augmenter, with the split's codec cache when it was built with the config's
    K and codecs (else codec round trips run on the fly, with a warning unless `quiet`); None when
    nothing is on."""
    a = cfg.augment
    if not (a.musan or a.p_codec or a.p_reverb or a.p_bandpass or a.p_eq or a.p_clipping):
        return None
    cache = CodecVariants.open_matching(train_split, a.codec_variants, a.codecs) if a.p_codec > 0 else None
    if a.p_codec > 0 and cache is None and not quiet:
        print(f"[train] warning: no codec cache in {train_split.folder / CODEC_FOLDER} made with codec_variants "
              f"{a.codec_variants} and codecs {','.join(a.codecs)}: coding on the fly, 20–90 ms per coded sample "
              f"(data_prep.prepare --codec_variants {a.codec_variants} --codecs {','.join(a.codecs)} builds it)")
    return MusanAugmenter(a, codec_cache=cache, quiet=True)


def lr_factor(cfg: SystemConfig, steps_per_epoch: int):
    """Multiplier of the base learning rate after `step` optimiser steps (LambdaLR)."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warmup = int(round(t.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.lr_schedule == "step":
            return t.step_gamma ** (step // (t.step_epochs * steps_per_epoch))
        if t.lr_schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def loader_options(t: TrainConfig, device: torch.device) -> dict:
    """The DataLoader options of train.num_workers and co. Persistence and prefetching exist only
    with workers (torch refuses them without), so with num_workers 0 they are left out, not an error."""
    options = {"num_workers": t.num_workers,
               "pin_memory": resolved_pin_memory(t.pin_memory, device)}
    if t.num_workers > 0:
        options.update(persistent_workers=t.persistent_workers, prefetch_factor=t.prefetch_factor)
    return options


def train_loader(data: Dataset, batches: EpochBatches, t: TrainConfig, device: torch.device) -> DataLoader:
    """The training DataLoader."""
    # the workers' base seed is drawn from this generator, not from the global one that dropout
    # draws from, so the model's random stream does not depend on how often workers start
    generator = torch.Generator().manual_seed(t.seed)
    return DataLoader(data, batch_sampler=batches, generator=generator, **loader_options(t, device))


def make_optimizer(cfg: SystemConfig, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    groups = model.optimizer_groups(t.lr)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    return torch.optim.SGD(groups, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)


@register_checkpoint_hooks
class RNGState:
    """The global Python, NumPy, torch and CUDA RNG states as a recoverable, stored as tensors and
    plain numbers so that it loads with weights_only=True. (Data order and augmentation do not use
    them: they are seeded per (seed, epoch, item); dropout and other in-model randomness do.)"""

    @mark_as_saver
    def save(self, path):
        version, mt_state, gauss = random.getstate()
        np_state = np.random.get_state(legacy=False)
        state = {"python": [version, list(mt_state), gauss], "torch": torch.get_rng_state(),
                 "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                           "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                           "gauss": float(np_state["gauss"])}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        state = torch.load(path, weights_only=True)
        version, mt_state, gauss = state["python"]
        random.setstate((version, tuple(mt_state), gauss))
        n = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                                                                    "pos": n["pos"]},
                             "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@register_checkpoint_hooks
class TrainLog:
    """The per-epoch rows of train_log.csv, kept in the checkpoint so that a resumed run continues it."""

    def __init__(self):
        self.rows: list[dict] = []

    @mark_as_saver
    def save(self, path):
        Path(path).write_text(json.dumps(self.rows))

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        self.rows = json.loads(Path(path).read_text())

    def csv_text(self) -> str:
        out = io.StringIO()
        # the csv module ends rows with \r\n by default; the kit's tables end them with \n
        writer = csv.DictWriter(out, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def write_csv(self, path: Path) -> None:
        write_text_atomic(path, self.csv_text())


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer writes the meta file first and the parameters after it, so a kill
    in between leaves a folder that looks finished; here the meta file is renamed into place last."""

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):  # noqa: B006
        return super()._save_checkpoint_metafile(Path(fpath).with_suffix(".partial"), meta_to_include, end_of_epoch)

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=20):  # noqa: B006
        ckpt = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        if ckpt is not None:
            os.replace(ckpt.path / (Path(META_FILE).stem + ".partial"), ckpt.path / META_FILE)
        return ckpt

    def recover_if_possible(self, *args, **kwargs):
        # only the loading is this checkpoint's fault (not DDP's set-up, which runs just before it)
        try:
            return super().recover_if_possible(*args, **kwargs)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            latest = self.find_checkpoint()
            fail(f"{latest.path if latest else self.checkpoints_dir}: cannot resume from this checkpoint "
                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); delete it to train again")

    def remove_incomplete(self) -> list[Path]:
        """Delete folders an interrupted save left behind (no meta file); returns them."""
        gone = []
        if self.checkpoints_dir.is_dir():
            for d in sorted(self.checkpoints_dir.iterdir()):
                if d.is_dir() and d.name.startswith("CKPT+") and not (d / META_FILE).is_file():
                    shutil.rmtree(d)
                    gone.append(d)
        return gone


class TrainingStep(nn.Module):
    """The system's training loss as a forward pass. DDP averages the gradients of what runs
    through its wrapped module's forward, and systems train through `training_loss`, not forward."""

    def __init__(self, system: nn.Module, regmixup_alpha: float = 0.0, logitnorm_tau: float = 0.0,
                 am_margin: float = 0.0):
        super().__init__()
        self.system, self.regmixup_alpha, self.logitnorm_tau = system, regmixup_alpha, logitnorm_tau
        # found once: System.cosine_scale walks the model's modules, too much for every step
        self.am_margin, self.margin_scale = am_margin, system.cosine_scale() if am_margin > 0 else None

    def forward(self, wave, label, domain, progress: float):
        if self.am_margin > 0:
            logits, _ = self.system(wave)
            return additive_margin_cross_entropy(logits, label, self.am_margin, self.margin_scale), logits
        if self.regmixup_alpha > 0:
            return regmixup_loss(self.system, wave, label, self.regmixup_alpha, self.logitnorm_tau)
        if self.logitnorm_tau > 0:
            return default_training_loss(self.system, wave, label, self.logitnorm_tau)
        return self.system.training_loss(wave, label, domain, progress)


class _StopRequested(Exception):
    """Ends `fit` after a checkpoint, as an interruption would (tests)."""


class SystemBrain(sb.Brain):
    """Brain for every classifier system: batches are (wave, label, domain) in training and
    (window, owner) on dev, whose logits are averaged per utterance for the dev open-set F1."""

    def __init__(self, cfg: SystemConfig, model: nn.Module, train_data: Dataset, dev_windows: SplitWindows,
                 dev_labels: np.ndarray, exp_dir: Path, device: torch.device, stop_after_epochs: int | None,
                 data_digest: str, world: World = World(), channel_on_device: bool = False,
                 listings: dict[str, str | None] | None = None):
        self.channel_on_device = channel_on_device
        self.cfg, self.train_data, self.dev_windows, self.dev_labels = cfg, train_data, dev_windows, dev_labels
        self.data_digest, self.world, self.train_device = data_digest, world, device
        self.listings = listings or {}
        self.exp_dir, self.stop_after_epochs = exp_dir, stop_after_epochs
        self.epoch_counter = EpochCounter(cfg.train.epochs)
        self.log = TrainLog()
        t = cfg.train
        self.batches = EpochBatches(len(train_data), t.batch_size, t.seed, world.rank, world.size, t.grad_accumulation)
        self.train_loader = train_loader(train_data, self.batches, t, device)
        self.steps_per_epoch = self.batches.steps  # optimiser steps
        self.step_module: nn.Module = TrainingStep(model, t.regmixup_alpha, t.logitnorm_tau, t.am_margin)
        checkpointer = AtomicCheckpointer(exp_dir / "ckpt", recoverables={
            "model": model, "counter": self.epoch_counter, "rng": RNGState(), "log": self.log})
        precision = "bf16" if t.bf16 and device.type == "cuda" else "fp32"
        super().__init__(modules={"model": model}, opt_class=None, checkpointer=checkpointer,
                         run_opts={"device": str(device), "precision": precision, "eval_precision": precision,
                                   "ckpt_interval_minutes": 0, "noprogressbar": False,
                                   "grad_accumulation_factor": t.grad_accumulation})
        self.train_sampler = self.batches  # Brain calls its set_epoch before every epoch
        self.epochs_run = 0

    @property
    def model(self) -> nn.Module:
        return self.modules["model"]

    def _wrap_distributed(self):
        """Brain wraps every module in DDP (and its BatchNorm in SyncBatchNorm, which refuses CPU
        tensors); here only the training step is wrapped, since DDP averages gradients of what runs
        through its forward. The model itself stays unwrapped: dev evaluation runs it without DDP's
        collectives (the processes' dev shares differ in batches), and its checkpoint has no
        `module.` prefix, so it resumes with any number of processes and scores as before. Each
        process normalises its own micro-batch (plain BatchNorm, running statistics from rank 0)."""
        if not self.world.parallel:
            return
        devices = [self.train_device] if self.train_device.type == "cuda" else None
        self.step_module = DistributedDataParallel(self.step_module, device_ids=devices,
                                                   find_unused_parameters=self.model.may_skip_parameters())
        self.modules["train_step"] = self.step_module  # where Brain's no_sync finds it for accumulation

    def init_optimizers(self):
        self.optimizer = make_optimizer(self.cfg, self.model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(self.cfg, self.steps_per_epoch))
        self.optimizers_dict = {"optimizer": self.optimizer}
        self.checkpointer.add_recoverable("optimizer", self.optimizer)
        self.checkpointer.add_recoverable("scheduler", self.scheduler)

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.epoch_start = time.time()
            self.correct = self.seen = 0
            self.loss_sum = 0.0
        else:
            self.dev_logit_sum = np.zeros((len(self.dev_windows.index), NUM_KNOWN))
            if self.world.parallel:
                # DDP hands every forward rank 0's buffers, but each process then updates its own
                # BatchNorm statistics from its micro-batch: dev is scored with rank 0's (the
                # checkpointed model) in every process
                for buffer in self.model.buffers():
                    torch.distributed.broadcast(buffer, src=0)

    def optimiser_step_in_epoch(self) -> int:
        """0-based; Brain's `step` counts micro-batches, grad_accumulation of them per optimiser step."""
        return (self.step - 1) // self.grad_accumulation_factor

    def compute_forward(self, batch, stage):
        if stage == sb.Stage.TRAIN:
            wave, label, domain = (b.to(self.device, non_blocking=True) for b in batch[:3])
            if self.channel_on_device:
                wave = apply_channel(wave, batch[3])
            step = self.optimiser_step_in_epoch()
            progress = (self.epoch_counter.current - 1 + step / self.steps_per_epoch) / self.cfg.train.epochs
            return self.step_module(wave, label, domain, progress)
        wave, _ = batch
        return self.model(wave.to(self.device))[0]

    def compute_objectives(self, predictions, batch, stage):
        if stage == sb.Stage.TRAIN:
            loss, logits = predictions
            label = batch[1].to(self.device)
            self.correct += int((logits.argmax(1) == label).sum())
            self.seen += len(label)
            self.loss_sum += float(loss.detach()) * len(label)
            weight = self.batches.loss_weight(self.optimiser_step_in_epoch(), len(label))
            return loss if weight == 1 else loss * weight
        _, owners = batch
        np.add.at(self.dev_logit_sum, owners.numpy(), predictions.float().cpu().numpy())
        labels = torch.as_tensor(self.dev_labels[owners.numpy()], device=self.device)
        return nn.functional.cross_entropy(predictions.float(), labels)

    def check_loss_isfinite(self, loss):
        if not torch.isfinite(loss):
            fail(f"[train] {self.exp_dir}: loss became {float(loss)} at epoch {self.epoch_counter.current}; "
                 "lower train.lr")

    def optimizers_step(self):
        # every parameter group is clipped (Brain's default clips the first group only, always)
        if self.cfg.train.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_step += 1

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step:
            self.scheduler.step()

    def _sum_over_processes(self, values: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(values, dtype=torch.float64, device=self.train_device)
        return ddp_all_reduce(t, ReduceOp.SUM).cpu().numpy()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN and self.world.parallel:
            total = self._sum_over_processes(np.array([self.loss_sum, self.correct, self.seen]))
            self.loss_sum, self.correct, self.seen = float(total[0]), int(total[1]), int(total[2])
        if stage != sb.Stage.VALID:
            return
        if self.world.parallel:
            # each process scored its own share of the dev windows: the sums cover all of dev, once
            self.dev_logit_sum = self._sum_over_processes(self.dev_logit_sum)
        counts = np.diff(self.dev_windows.offsets)[:, None]
        pred = (self.dev_logit_sum / counts).argmax(1)
        dev_f1 = open_set_scores(self.dev_labels, pred)["f1"]
        dev_acc = float(np.mean(pred == self.dev_labels))
        row = {"epoch": epoch, "train_loss": round(self.loss_sum / self.seen, 5),
               "train_acc": round(self.correct / self.seen, 4), "dev_f1": round(dev_f1, 5),
               "dev_acc": round(dev_acc, 4), "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": round(time.time() - self.epoch_start, 1)}
        self.log.rows.append(row)
        # rank 0 writes; inside run_on_main SpeechBrain's own collectives are off and the others wait
        run_on_main(self._save_epoch, args=[epoch, dev_f1, row])
        self.epochs_run += 1
        if self.stop_after_epochs is not None and self.epochs_run >= self.stop_after_epochs:
            raise _StopRequested

    def _save_epoch(self, epoch: int, dev_f1: float, row: dict) -> None:
        self.checkpointer.save_and_keep_only(
            meta={"dev_f1": float(dev_f1), "epoch": int(epoch), "config_digest": config_digest(self.cfg),
                  "data_digest": self.data_digest, **self.listings},
            importance_keys=[best_key], num_to_keep=1, keep_recent=True, verbosity=10)
        self.log.write_csv(self.exp_dir / "train_log.csv")
        best = best_checkpoint(self.exp_dir / "ckpt")
        print(f"[train] epoch {epoch}: loss {row['train_loss']:.4f}, dev F1 {dev_f1:.4f} (best "
              f"{best.meta['dev_f1']:.4f} @ {best.meta['epoch']}), lr {row['lr']:.3g}, {row['seconds']} s")


def _latest(checkpointer: AtomicCheckpointer):
    return checkpointer.find_checkpoint()  # most recent by SpeechBrain's recency key


def _tidy_experiment(cfg: SystemConfig, exp_dir: Path, inputs: str, listings: dict[str, str | None]) -> None:
    """Rank 0, before anything reads the experiment: leftovers of interrupted runs removed, the
    checkpoints of another config or other data dropped, the resolved config saved."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    drop_trained_stamp(exp_dir)  # written again once training is found or made complete
    for p in remove_stale_temporaries(exp_dir):
        print(f"[train] {p}: temporary file of an interrupted run, removed")
    probe = AtomicCheckpointer(exp_dir / "ckpt")
    for d in probe.remove_incomplete():
        print(f"[train] {d}: incomplete checkpoint from an interrupted save, removed")
    latest = _latest(probe)
    if latest is not None:
        changed = ["config"] if not fits_config(latest.meta.get("config_digest"), cfg) else []
        changed += ["training data"] if latest.meta.get("data_digest") != inputs else []
        changed += [LISTING_NAMES[key] for key, now in listings.items() if latest.meta.get(key) not in (None, now)]
        if changed:
            print(f"[train] {exp_dir}: {' and '.join(changed)} changed since the last checkpoint; training from scratch")
            shutil.rmtree(exp_dir / "ckpt")
    cfg.save(exp_dir / "config.yaml")


def train(cfg: SystemConfig, data_dir: Path, exp_dir: Path, device: torch.device,
          stop_after_epochs: int | None = None) -> dict:
    """Train (or resume) and return a summary. `stop_after_epochs` ends the call early, as an
    interruption would, leaving a resumable checkpoint. Under torchrun (RANK, LOCAL_RANK and
    WORLD_SIZE set) this is one of several processes, on cuda:LOCAL_RANK when `device` is CUDA."""
    world = world_from_env()
    device = process_device(world, device)
    created = join(world, device)
    summary = _train(cfg, data_dir, exp_dir, device, stop_after_epochs, world)
    leave(created)  # after a barrier: no process ends while rank 0 still writes
    return summary


def record_training_environment(exp_dir: Path, first_epoch: int, device: torch.device, processes: int) -> None:
    """Append this call's environment (core/provenance.py) to EXP/train_environment.json: one
    record per training call that trains, since a resumed training may span set-ups whose package
    builds round differently. A training from epoch 1 starts the list again, and a call resuming at
    an epoch drops the records of calls that started there or later: killed before they saved an
    epoch that the checkpoints still hold, they trained none of it."""
    path = exp_dir / TRAIN_ENVIRONMENT
    records = []
    if first_epoch > 1 and path.is_file():
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            print(f"[train] {path}: unreadable ({str(err).splitlines()[0]}); the earlier calls' records are lost")
        if not isinstance(records, list):
            records = []
        records = [r for r in records if not (isinstance(r, dict) and isinstance(r.get("first_epoch"), int)
                                              and r["first_epoch"] >= first_epoch)]
    records.append({"first_epoch": first_epoch, "device": str(device), "processes": processes, **environment()})
    write_text_atomic(path, json.dumps(records, indent=2) + "\n")


def _finish_last_save(exp_dir: Path, latest) -> None:
    """What `_save_epoch` does after the checkpoint of the last epoch, in case a kill came in
    between: older checkpoints other than the best dropped, train_log.csv written from the log the
    checkpoint holds. Nothing is written when both are already so."""
    probe = AtomicCheckpointer(exp_dir / "ckpt")
    found = probe.list_checkpoints()
    keep = {latest.path, max(found, key=best_key).path}
    for ckpt in found:
        if ckpt.path not in keep:
            shutil.rmtree(ckpt.path)
            print(f"[train] {ckpt.path}: superseded checkpoint left by an interrupted run, removed")
    log = TrainLog()
    log.load(Path(latest.path) / "log.ckpt")
    csv_path = exp_dir / "train_log.csv"
    # bytes, not read_text(): universal newlines would hide a difference in line endings
    if not csv_path.is_file() or csv_path.read_bytes() != log.csv_text().encode():
        log.write_csv(csv_path)
        print(f"[train] {csv_path}: completed from the last checkpoint's log")


def _train(cfg: SystemConfig, data_dir: Path, exp_dir: Path, device: torch.device, stop_after_epochs: int | None,
           world: World) -> dict:
    inputs, listings = data_digest(cfg, data_dir), input_listings(cfg)
    if world.main:
        _tidy_experiment(cfg, exp_dir, inputs, listings)
    ddp_barrier()
    latest = _latest(AtomicCheckpointer(exp_dir / "ckpt"))
    if latest is not None and latest.meta["epoch"] >= cfg.train.epochs:
        if world.main:
            _finish_last_save(exp_dir, latest)
        best = best_checkpoint(exp_dir / "ckpt")
        if world.main:
            _stamp_complete(cfg, inputs, listings, exp_dir, latest, best)
            print(trained_message(exp_dir, latest.meta["epoch"], best.meta["dev_f1"], best.meta["epoch"]))
        return {"epochs_run": 0, "best_f1": best.meta["dev_f1"], "best_epoch": best.meta["epoch"]}
    if latest is not None and world.main:
        print(f"[train] resuming {exp_dir} after epoch {latest.meta['epoch']}"
              + (f" with {world.size} processes" if world.parallel else ""))
    if world.main:
        record_training_environment(exp_dir, 1 + (latest.meta["epoch"] if latest is not None else 0), device,
                                    world.size)

    seed_everything(cfg.train.seed)
    model = build_model(cfg).to(device)
    if cfg.train.channels_last:
        to_channels_last(model)
    for option, value, method in (("regmixup_alpha", cfg.train.regmixup_alpha, "RegMixup"),
                                  ("logitnorm_tau", cfg.train.logitnorm_tau, "LogitNorm"),
                                  ("am_margin", cfg.train.am_margin, "the additive margin")):
        if value > 0 and overrides_training_loss(model):
            fail(f"train.{option} {value}: {cfg.system} trains with its own loss "
                 f"({type(model).__name__}.training_loss); {method} applies to the default cross-entropy only")
    if cfg.train.am_margin > 0 and model.cosine_scale() is None:
        fail(f"train.am_margin {cfg.train.am_margin}: {cfg.system} has no cosine classifier "
             f"(model.classifier: cosine, in RawNet2 and LFCC-ResNet18)")
    train_split, dev_split = PreparedSplit(data_dir / "train"), PreparedSplit(data_dir / "dev")
    augmenter = build_augmenter(cfg, train_split, quiet=not world.main)
    crops = TrainCrops(train_split, window_length(model), augmenter, cfg.train.seed)
    # rank 0 builds the system's training cache, if it has one; the others then find it current
    train_data = model.wrap_training_data(crops, exp_dir / "feature_cache", device) if world.main else None
    ddp_barrier()
    if not world.main:
        train_data = model.wrap_training_data(crops, exp_dir / "feature_cache", device)
    channel_on_device = effects_on_device(cfg, augmenter, device, reads_own_data=train_data is not crops)
    if channel_on_device:
        crops.defer_effects = True
        if world.main:
            print(f"[train] augmentation: band-pass, EQ and clipping on {device} per batch, the rest in the loader")
    dev_windows = SplitWindows(dev_split, window_length(model), window_hop(cfg))
    dev_labels = dev_split.labels[dev_windows.index]
    brain = SystemBrain(cfg, model, train_data, dev_windows, dev_labels, exp_dir, device, stop_after_epochs, inputs,
                        world, channel_on_device, listings)
    dev_share = Subset(dev_windows, shard(len(dev_windows), world.rank, world.size)) if world.parallel else dev_windows
    # dev is read by workers too: on a GPU, main-process reading halved the scoring rate (README)
    dev_loader = DataLoader(dev_share, batch_size=cfg.score.batch_size, shuffle=False,
                            **loader_options(cfg.train, device))
    try:
        brain.fit(brain.epoch_counter, brain.train_loader, dev_loader)
    except _StopRequested:
        pass
    best = best_checkpoint(exp_dir / "ckpt")
    latest = _latest(AtomicCheckpointer(exp_dir / "ckpt"))
    if world.main and latest.meta["epoch"] >= cfg.train.epochs:
        _stamp_complete(cfg, inputs, listings, exp_dir, latest, best)
    return {"epochs_run": brain.epochs_run, "best_f1": best.meta["dev_f1"], "best_epoch": best.meta["epoch"]}


def _report_lost_best(exp_dir: Path, latest, best) -> None:
    """A best checkpoint deleted by hand (or lost with its disk) would be stood in for by the best
    one left, and every later stage would score that one as "the best by dev F1": said once here,
    from the training log the last checkpoint holds (its dev F1 is rounded to 5 decimals)."""
    log = TrainLog()
    log.load(Path(latest.path) / "log.ckpt")
    better = [row for row in log.rows if float(row["dev_f1"]) > best.meta["dev_f1"] + 1e-5]
    if better:
        lost = max(better, key=lambda row: (float(row["dev_f1"]), -int(row["epoch"])))
        print(f"[train] warning: {exp_dir / 'ckpt'}: the best checkpoint, epoch {lost['epoch']} (dev F1 "
              f"{float(lost['dev_f1']):.4f}), is gone; epoch {best.meta['epoch']} (dev F1 {best.meta['dev_f1']:.4f}) "
              f"is the best left and stands in for it. To train it anew: delete {exp_dir / 'ckpt'} and run the "
              "train stage", file=sys.stderr)


def _stamp_complete(cfg: SystemConfig, inputs: str, listings: dict[str, str | None], exp_dir: Path, latest,
                    best) -> None:
    """The training stage's stamp (train_inputs.py), once its checkpoints are final, on the digests
    `_train` computed for the checkpoints' own check."""
    _report_lost_best(exp_dir, latest, best)
    write_trained_stamp(exp_dir, training_fingerprint(cfg, inputs, listings), latest.meta["epoch"],
                        best.meta["dev_f1"], best.meta["epoch"])
