"""Train one system from its YAML config (see systems/common/engine.py).

    python -m systems.train --config systems/<name>/conf/<conf>.yaml --data exp/data --exp exp/<name>

`--ngpu N` trains with N processes, one per GPU, by starting
    python -m torch.distributed.run --standalone --nproc_per_node N -m systems.train <the other arguments>
from this process (that command by hand does the same, with torchrun's own failure report).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import ArgumentParser, fail, run_cli
from systems.common.config import check_model_keys, load_config, parse_overrides
from systems.common.train_inputs import finished_training, save_run_settings, trained_message, why_not_finished


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="system YAML")
    ap.add_argument("--data", required=True, help="prepared data folder (stage 2 output)")
    ap.add_argument("--exp", required=True, help="this system's experiment folder")
    ap.add_argument("--musan", default=None, help="MUSAN-layout folder for augmentation (sets augment.musan)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--ngpu", type=int, default=1, help="training processes, one per GPU, through torchrun")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    ap.add_argument("--trained_only", action="store_true",
                    help="train nothing: check that EXP holds a finished training of this config on this data "
                         "(saving the config's run settings there) and fail, naming what differs, where it does not")
    args = ap.parse_args()
    if args.ngpu < 1:  # before the stamp's answer: a wrong count is wrong whether or not there is work
        fail(f"--ngpu {args.ngpu}: at least 1")
    for split in ("train", "dev"):
        if not (Path(args.data) / split / "manifest.tsv").is_file():
            fail(f"{Path(args.data) / split}: not prepared; run the prepare stage")
    overrides = parse_overrides(args.set)
    if args.musan:
        overrides["augment.musan"] = str(Path(args.musan).resolve())
    cfg = load_config(args.config, overrides, check_model=False)
    done = finished_training(cfg, Path(args.data), Path(args.exp))
    if done is not None:  # the training stage's stamp: answered before torch is imported
        print(trained_message(Path(args.exp), done["epochs"], done["best_f1"], done["best_epoch"]))
        if save_run_settings(cfg, Path(args.exp), done):
            print(f"[train] {Path(args.exp) / 'config.yaml'}: the config's loader and scoring batch settings "
                  "saved (they need no training)")
        return
    if args.trained_only:
        fail(why_not_finished(cfg, args.config, Path(args.data), Path(args.exp)))
    check_model_keys(cfg.system, cfg.model, f"{args.config}: model")
    # PyTorch, SpeechBrain and the model load from here on: seconds a finished training need not pay
    from systems.common.distributed import check_processes, launch, world_from_env
    from systems.common.engine import train
    from systems.common.inference import pick_device, torch_threads
    from systems.common.sampling import check_micro_batches

    world = world_from_env()
    device = pick_device(args.device)
    check_processes(args.ngpu, world, device)
    if args.ngpu > 1:
        check_micro_batches(cfg.train.batch_size, args.ngpu, cfg.train.grad_accumulation)
        forwarded = ["--config", args.config, "--data", args.data, "--exp", args.exp, "--device", args.device,
                     *(["--musan", args.musan] if args.musan else []), "--set", *args.set]
        launch(args.ngpu, "systems.train", forwarded)
        return
    if world.main and not cfg.augment.musan and (cfg.augment.p_noise or cfg.augment.p_music or cfg.augment.p_babble):
        print("[train] no MUSAN folder given (--musan): training without additive augmentation")
    torch_threads(cfg.train.deterministic)
    summary = train(cfg, Path(args.data), Path(args.exp), device)
    if world.main:  # under torchrun, rank 0 alone speaks
        print(f"[train] {args.exp}: best dev open-set F1 {summary['best_f1']:.4f} at epoch {summary['best_epoch']}")


if __name__ == "__main__":
    run_cli(main)
