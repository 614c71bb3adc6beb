"""Score a trained system: export logits and embeddings (and test windows) per the contract.

    python -m systems.score --exp exp/<name> --data exp/data [--splits train,dev,test]

Reads only `EXP/config.yaml` and `EXP/ckpt/best.pt`; writes `EXP/scores/<split>/` (see
systems/common/export.py). A split is skipped when its checkpoint, data and options are unchanged.
"""
from __future__ import annotations

import argparse
from pathlib import Path


from data_prep.common import fail, file_signature, run_cli, stage_is_current, write_stamp
from data_prep.prepare import PreparedSplit
from systems.common.config import load_config
from systems.common.engine import SplitAudio, build_model, embed_arrays, load_checkpoint, pick_device, torch_threads
from systems.common.export import WindowAudio, write_scores

# dev windows too: thresholds for the window-based feature fusion are chosen on dev
WINDOW_SPLITS = ("dev", "test")


def split_options(split_name: str, data_dir: Path, ckpt_sig: dict) -> dict:
    return {"checkpoint": ckpt_sig, "manifest": file_signature(data_dir / split_name / "manifest.tsv"),
            "windows": split_name in WINDOW_SPLITS, "version": 1}


def score_split(model, cfg, split_name: str, data_dir: Path, target: Path, device, options: dict) -> None:
    split = PreparedSplit(data_dir / split_name)
    audio = SplitAudio(split)
    bs, bf16 = cfg.train.score_batch_size, cfg.train.bf16
    logits, emb = embed_arrays(model, audio, device, bs, bf16, desc=f"score {split_name}")
    win_emb = win_off = None
    if split_name in WINDOW_SPLITS:
        windows = WindowAudio(split, audio.index)
        _, win_emb = embed_arrays(model, windows, device, bs, bf16, desc=f"windows {split_name}")
        win_off = windows.offsets
    ids = [split.ids[i] for i in audio.index]
    write_scores(target, ids, split.labels[audio.index], logits, emb, win_emb, win_off)
    write_stamp(target, options)
    print(f"[score] {target}: {len(ids)} utterances" + (f", {len(win_emb)} windows" if win_emb is not None else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    exp = Path(args.exp)
    ckpt = exp / "ckpt" / "best.pt"
    if not ckpt.is_file():
        fail(f"{ckpt}: no checkpoint; run the train stage for {exp.name}")
    data = Path(args.data)
    sig = file_signature(ckpt)
    todo = {}
    for split_name in [s for s in args.splits.split(",") if s]:
        if not (data / split_name / "manifest.tsv").is_file():
            fail(f"{data / split_name}: not prepared; run the prepare stage")
        options = split_options(split_name, data, sig)
        if stage_is_current(exp / "scores" / split_name, options):
            print(f"[score] {exp / 'scores' / split_name}: up to date, skipped")
        else:
            todo[split_name] = options
    if not todo:
        return  # nothing to score: the model is never loaded
    cfg = load_config(exp / "config.yaml")
    torch_threads()
    device = pick_device(args.device)
    state = load_checkpoint(ckpt, device)
    if state.get("config") != cfg.to_dict():
        fail(f"{ckpt}: trained with another config than {exp / 'config.yaml'}; re-run the train stage")
    model = build_model(cfg).to(device)
    model.load_state_dict(state["model"])
    for split_name, options in todo.items():
        score_split(model, cfg, split_name, data, exp / "scores" / split_name, device, options)

if __name__ == "__main__":
    run_cli(main)
