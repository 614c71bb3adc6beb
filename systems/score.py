"""Score a trained system: export logits and embeddings per the contract in core/scores.py.

    python -m systems.score --exp exp/<name> --data exp/data [--splits train,dev,test]

Reads only `EXP/config.yaml` and the best checkpoint in `EXP/ckpt/` (by dev open-set F1). Every
utterance is cut once into windows of the model's input length every `score.window_hop_seconds`
(the system config owns both); one batched pass gives each window's logits and embedding, the
utterance's are their mean, and dev and test also export the window embeddings for feature
fusion. A split is skipped when its checkpoint, data and options are unchanged.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from core.errors import fail, run_cli
from core.prepared_split import PreparedSplit
from core.scores import write_scores
from core.stamps import file_signature, output_files, stage_is_current, write_stamp
from systems.common.config import load_config
from systems.common.inference import (
    best_checkpoint,
    build_model,
    config_digest,
    inference_bf16,
    load_model_state,
    pick_device,
    score_windows,
    torch_threads,
    utterance_means,
    window_hop,
    window_length,
)
from systems.common.windows import SplitWindows

# dev windows too: thresholds for the window-based feature fusion are chosen on dev
WINDOW_SPLITS = ("dev", "test")


def split_options(split_name: str, data_dir: Path, ckpt_sig: dict, cfg, device: torch.device) -> dict:
    """What a split's scores depend on: checkpoint, data, score settings and the precision the
    device scores in (bf16 or fp32: scores move by bf16's rounding)."""
    return {"checkpoint": ckpt_sig, "manifest": file_signature(data_dir / split_name / "manifest.tsv"),
            "windows": split_name in WINDOW_SPLITS, "score": cfg.to_dict()["score"],
            "bf16": inference_bf16(device, cfg.train.bf16), "version": 3}


def score_split(model, cfg, split_name: str, data_dir: Path, target: Path, device, options: dict) -> None:
    split = PreparedSplit(data_dir / split_name)
    windows = SplitWindows(split, window_length(model), window_hop(cfg))
    t0 = time.time()
    win_logits, win_emb = score_windows(model, windows, device, cfg.score.batch_size, cfg.train.bf16,
                                        desc=f"score {split_name}", num_workers=cfg.train.num_workers,
                                        pin_memory=cfg.train.pin_memory)
    seconds = time.time() - t0
    logits, emb = utterance_means(win_logits, windows.offsets), utterance_means(win_emb, windows.offsets)
    keep_windows = split_name in WINDOW_SPLITS
    ids = [split.ids[i] for i in windows.index]
    write_scores(target, ids, split.labels[windows.index], logits, emb,
                 win_emb if keep_windows else None, windows.offsets if keep_windows else None)
    write_stamp(target, options, outputs=output_files(target))
    print(f"[score] {target}: {len(ids)} utterances, {len(windows)} windows in {seconds:.1f} s "
          f"({len(ids) / max(seconds, 1e-9):.1f} utterances/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    exp = Path(args.exp)
    best = best_checkpoint(exp / "ckpt")
    if best is None:
        fail(f"{exp / 'ckpt'}: no checkpoint; run the train stage for {exp.name}")
    cfg = load_config(exp / "config.yaml")
    if best.meta.get("config_digest") != config_digest(cfg):
        fail(f"{best.path}: trained with another config than {exp / 'config.yaml'}; re-run the train stage")
    params = best.paramfiles["model"]
    data = Path(args.data)
    sig = file_signature(params)
    device = pick_device(args.device)
    todo = {}
    for split_name in [s for s in args.splits.split(",") if s]:
        if not (data / split_name / "manifest.tsv").is_file():
            fail(f"{data / split_name}: not prepared; run the prepare stage")
        options = split_options(split_name, data, sig, cfg, device)
        if stage_is_current(exp / "scores" / split_name, options):
            print(f"[score] {exp / 'scores' / split_name}: up to date, skipped")
        else:
            todo[split_name] = options
    if not todo:
        return  # nothing to score: the model is never loaded
    torch_threads(cfg.train.deterministic)
    model = build_model(cfg).to(device)
    model.load_state_dict(load_model_state(params, device))
    print(f"[score] {exp}: checkpoint of epoch {best.meta['epoch']} (dev F1 {best.meta['dev_f1']:.4f})")
    for split_name, options in todo.items():
        score_split(model, cfg, split_name, data, exp / "scores" / split_name, device, options)


if __name__ == "__main__":
    run_cli(main)
