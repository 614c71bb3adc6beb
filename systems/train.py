"""Train one system from its YAML config (see systems/common/engine.py).

    python -m systems.train --config systems/<name>/conf/<conf>.yaml --data exp/data --exp exp/<name>
"""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import run_cli
from systems.common.config import load_config, parse_overrides
from systems.common.engine import train
from systems.common.inference import pick_device, torch_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="system YAML")
    ap.add_argument("--data", required=True, help="prepared data folder (stage 2 output)")
    ap.add_argument("--exp", required=True, help="this system's experiment folder")
    ap.add_argument("--musan", default=None, help="MUSAN-layout folder for augmentation (sets augment.musan)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    args = ap.parse_args()
    overrides = parse_overrides(args.set)
    if args.musan:
        overrides["augment.musan"] = str(Path(args.musan).resolve())
    cfg = load_config(args.config, overrides)
    if not cfg.augment.musan and (cfg.augment.p_noise or cfg.augment.p_music or cfg.augment.p_babble):
        print("[train] no MUSAN folder given (--musan): training without additive augmentation")
    torch_threads(cfg.train.deterministic)
    summary = train(cfg, Path(args.data), Path(args.exp), pick_device(args.device))
    print(f"[train] {args.exp}: best dev open-set F1 {summary['best_f1']:.4f} at epoch {summary['best_epoch']}")


if __name__ == "__main__":
    run_cli(main)
