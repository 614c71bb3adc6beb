"""Score a trained system: export logits and embeddings per the contract in core/scores.py.

    python -m systems.score --exp exp/<name> --data exp/data [--splits train,dev,test]

Reads only `EXP/config.yaml` and the best checkpoint in `EXP/ckpt/` (by dev open-set F1). Every
utterance is cut once into windows of the model's input length every `score.window_hop_seconds`
(the system config owns both); one batched pass gives each window's logits and embedding, the
utterance's are their mean, and dev and test also export the window embeddings for feature
fusion. A split is skipped when its checkpoint, data and options are unchanged.

`--ngpu N` scores with N processes, one per GPU, by starting
    python -m torch.distributed.run --standalone --nproc_per_node N -m systems.score <the other arguments>
Each process scores a contiguous share of the split's windows; rank 0 puts the shares together in
window order and writes the split as one process would.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.distributed import ddp_barrier
from torch.utils.data import Subset

from core.atomic import atomic_dir, ensure_dir, remove_staging_of, save_npy
from core.errors import ArgumentParser, fail, run_cli
from core.prepared_split import PreparedSplit
from core.scores import write_scores
from core.stamps import current_or_restamped, file_signature, output_files, read_stamp, recorded_place, write_stamp
from systems.common.config import load_config
from systems.common.distributed import World, check_processes, join, launch, leave, process_device, world_from_env
from systems.common.inference import (
    best_checkpoint,
    build_model,
    inference_bf16,
    load_model_state,
    pick_device,
    score_windows,
    torch_threads,
    utterance_means,
    window_hop,
    window_length,
)
from systems.common.sampling import shard
from systems.common.train_inputs import fits_config
from systems.common.windows import SplitWindows

# dev windows too: thresholds for the window-based feature fusion are chosen on dev
WINDOW_SPLITS = ("dev", "test")


def split_options(split_name: str, data_dir: Path, ckpt_sig: dict, cfg, device: torch.device,
                  batch_size: int, relative_to: Path | None = None) -> dict:
    """What a split's scores depend on: checkpoint, data, score settings and the precision the
    device scores in (bf16 or fp32: scores move by bf16's rounding). The files are named from
    `relative_to` (the system's folder) when given, so that a copied experiment stays current."""
    score = dict(cfg.to_dict()["score"], batch_size=batch_size)
    manifest = file_signature(data_dir / split_name / "manifest.tsv", relative_to)
    return {"checkpoint": ckpt_sig, "manifest": manifest,
            "windows": split_name in WINDOW_SPLITS, "score": score,
            "bf16": inference_bf16(device, cfg.train.bf16), "version": 3}


def gather_shares(target: Path, world: World, win_logits: np.ndarray | None, win_emb: np.ndarray | None):
    """Every process's window scores, in rank order (= window order), on rank 0; None elsewhere.
    A process with no windows (more processes than windows) passes None and writes no file.

    The shares pass through files beside `target`: a test split's window embeddings run to hundreds
    of MB, more than a collective should carry as one object."""
    folder = target.parent / f".{target.name}.shares"
    if world.main:
        shutil.rmtree(folder, ignore_errors=True)  # shares of a killed earlier run
    ddp_barrier()
    ensure_dir(folder)
    if win_logits is not None:
        save_npy(folder / f"logits.{world.rank}.npy", win_logits)
        save_npy(folder / f"embeddings.{world.rank}.npy", win_emb)
    ddp_barrier()
    if not world.main:
        return None, None
    # after the barrier every process has written its files: a missing one is an empty share
    read = [(np.load(folder / f"logits.{r}.npy"), np.load(folder / f"embeddings.{r}.npy"))
            for r in range(world.size) if (folder / f"logits.{r}.npy").is_file()]
    shutil.rmtree(folder)
    return np.concatenate([lo for lo, _ in read]), np.concatenate([em for _, em in read])


def score_split(model, cfg, split_name: str, data_dir: Path, target: Path, device, options: dict,
                world: World = World(), batch_size: int | None = None) -> None:
    split = PreparedSplit(data_dir / split_name)
    windows = SplitWindows(split, window_length(model), window_hop(cfg))
    share = Subset(windows, shard(len(windows), world.rank, world.size)) if world.parallel else windows
    t0 = time.time()
    win_logits = win_emb = None
    if len(share) or not world.parallel:
        win_logits, win_emb = score_windows(model, share, device, batch_size or cfg.score.batch_size, cfg.train.bf16,
                                            desc=f"score {split_name}" if world.main else None,
                                            num_workers=cfg.train.num_workers, pin_memory=cfg.train.pin_memory)
    if world.parallel:
        win_logits, win_emb = gather_shares(target, world, win_logits, win_emb)
        if not world.main:
            return
    seconds = time.time() - t0
    logits, emb = utterance_means(win_logits, windows.offsets), utterance_means(win_emb, windows.offsets)
    keep_windows = split_name in WINDOW_SPLITS
    ids = [split.ids[i] for i in windows.index]
    # the split's files and stamp are swapped in together: a kill while writing them leaves the
    # earlier split whole (and stamped for what it was scored from), never one file of each. A
    # split that a new test set links from its experiment is written where the link leads, as before
    with atomic_dir(target.resolve() if target.is_symlink() else target) as staging:
        write_scores(staging, ids, split.labels[windows.index], logits, emb,
                     win_emb if keep_windows else None, windows.offsets if keep_windows else None)
        write_stamp(staging, options, outputs=output_files(staging))
    print(f"[score] {target}: {len(ids)} utterances, {len(windows)} windows in {seconds:.1f} s "
          f"({len(ids) / max(seconds, 1e-9):.1f} utterances/s"
          + (f", {world.size} processes)" if world.parallel else ")"))


def as_stamped_earlier(target: Path, options: dict) -> dict:
    """`options` in the form an earlier kit stamped them, the checkpoint and manifest named by an
    absolute path: the one that stamp recorded, where it names the same files (the same folder and
    file name), so that an experiment scored by an earlier kit and then moved or copied counts too."""
    saved = read_stamp(target) or {}
    earlier = dict(options)
    for key in ("checkpoint", "manifest"):
        recorded = saved.get(key)
        if isinstance(recorded, dict) and recorded_place(recorded) == recorded_place(options[key]):
            earlier[key] = dict(options[key], path=recorded["path"])
    return earlier


def splits_to_score(exp: Path, data: Path, splits: str, params: Path, cfg, device: torch.device,
                    speak: bool, batch_size: int) -> dict[str, dict]:
    """The splits whose scores are missing or stale, with the options their stamps will hold (a
    stamp of an earlier kit counts too: as_stamped_earlier)."""
    todo = {}
    sig = file_signature(params, exp)
    for split_name in [s for s in splits.split(",") if s]:
        if not (data / split_name / "manifest.tsv").is_file():
            fail(f"{data / split_name}: not prepared; run the prepare stage")
        target = exp / "scores" / split_name
        options = split_options(split_name, data, sig, cfg, device, batch_size, exp)
        if current_or_restamped(target, options, as_stamped_earlier(target, options), restamp=speak):
            if speak:
                print(f"[score] {exp / 'scores' / split_name}: up to date, skipped")
                remove_staging_of(target.resolve())
        else:
            todo[split_name] = options
    return todo


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--ngpu", type=int, default=1, help="scoring processes, one per GPU, through torchrun")
    ap.add_argument("--batch_size", type=int, default=None, help="windows per batch (default: score.batch_size)")
    args = ap.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        fail(f"--batch_size {args.batch_size}: must be 1 or more")
    world = world_from_env()
    device = pick_device(args.device)
    check_processes(args.ngpu, world, device)
    exp, data = Path(args.exp), Path(args.data)
    best = best_checkpoint(exp / "ckpt")
    if best is None:
        fail(f"{exp / 'ckpt'}: no checkpoint; run the train stage for {exp.name}")
    cfg = load_config(exp / "config.yaml")
    if not fits_config(best.meta.get("config_digest"), cfg):
        fail(f"{best.path}: trained with another config than {exp / 'config.yaml'}; re-run the train stage")
    params = best.paramfiles["model"]
    batch_size = args.batch_size or cfg.score.batch_size
    if args.ngpu > 1:
        # current splits start no processes at all
        todo = splits_to_score(exp, data, args.splits, params, cfg, device, True, batch_size)
        if todo:
            launch(args.ngpu, "systems.score", ["--exp", args.exp, "--data", args.data, "--splits", ",".join(todo),
                                                "--device", args.device, "--batch_size", str(batch_size)],
                   what="scoring")
        return
    device = process_device(world, device)
    todo = splits_to_score(exp, data, args.splits, params, cfg, device, world.main, batch_size)
    if not todo:
        return  # nothing to score: the model is never loaded
    created = join(world, device)
    torch_threads(cfg.train.deterministic)
    model = build_model(cfg).to(device)
    model.load_state_dict(load_model_state(params, device))
    if world.main:
        print(f"[score] {exp}: checkpoint of epoch {best.meta['epoch']} (dev F1 {best.meta['dev_f1']:.4f})"
              + (f", {world.size} processes" if world.parallel else ""))
    for split_name, options in todo.items():
        score_split(model, cfg, split_name, data, exp / "scores" / split_name, device, options, world, batch_size)
    leave(created)


if __name__ == "__main__":
    run_cli(main)
