"""Does training on N processes equal training on one? A check to run on your own machine.

    python -m eval.ddp_check [--device auto] [--nproc 2] [--system lfcc_resnet18] [--conf demo]
                             [--utterances 48] [--batch 16] [--atol 1e-5] [--set SECTION.KEY=VALUE ...]

It trains one epoch of a system on a small synthetic corpus (speech-like signals, a synthetic MUSAN
folder for the augmentation) three ways, from one seed, with SGD, whose update is linear in the
gradient, so that a sum taken for a mean shows (Adam's nearly scale-free update would hide it):
  parallel     N processes through torchrun, each reading 1/N of every step (the `--ngpu N` path)
  accumulated  one process accumulating the same N micro-batches (train.grad_accumulation N): what
               N processes must equal, since each normalises its own micro-batch in BatchNorm
  whole        one process with each step as one batch: the negative control, which must differ
and prints the largest parameter difference of `parallel` against each. It fails (exit code 1)
unless parallel ≈ accumulated within --atol and whole differs by more than 100 × --atol.

On CUDA with at least N GPUs the processes train on cuda:0..N-1 over NCCL, as `--ngpu N` does. With
fewer GPUs (one GPU, say) they share cuda:0 and talk over gloo's CUDA collectives, since NCCL refuses
two processes on one GPU: the gradient averaging, sharding, rank-0 writes and checkpoint are the kit's
own, the transport is not NCCL. On CPU the processes use gloo, as tests/test_ddp.py does.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.errors import ArgumentParser, fail, run_cli

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def write_corpus(folder: Path, utterances: int, seed: int = 0) -> tuple[Path, Path]:
    """A prepared train/dev pair of speech-like utterances of 2–5 s (labels 0–6 in turn) and a
    synthetic MUSAN folder: (prepared data folder, MUSAN folder)."""
    from data_prep.bench_augment import speechlike
    from eval.bench import write_musan, write_split

    rng = np.random.default_rng(seed)
    data = folder / "data"
    for split, n in (("train", utterances), ("dev", max(7, utterances // 3))):
        write_split(data / split, [speechlike(int(s * SR), rng) for s in rng.uniform(2.0, 5.0, n)],
                    [i % 7 for i in range(n)])
    write_musan(folder / "musan", rng, files=2, seconds=8.0)
    return data, folder / "musan"


def check_overrides(musan: Path, batch: int, extra: dict) -> dict:
    """One epoch of plain SGD in fp32 with deterministic kernels; the user's --set on top."""
    return {"augment.musan": str(musan), "augment.p_codec": 0.0, "train.epochs": 1, "train.batch_size": batch,
            "train.grad_accumulation": 1, "train.optimizer": "sgd", "train.lr": 0.05, "train.warmup_epochs": 0.0,
            "train.bf16": False, "train.num_workers": 0, "train.deterministic": True, **extra}


def final_parameters(exp: Path) -> dict:
    """The model parameters of an experiment's latest checkpoint (not BatchNorm's running
    statistics, which DDP takes from rank 0 alone)."""
    from systems.common.config import load_config
    from systems.common.engine import AtomicCheckpointer
    from systems.common.inference import build_model, load_model_state

    ckpt = AtomicCheckpointer(exp / "ckpt").find_checkpoint()
    state = load_model_state(ckpt.paramfiles["model"])
    names = {n for n, _ in build_model(load_config(exp / "config.yaml")).named_parameters()}
    return {n: state[n] for n in names}


def max_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        fail("the checkpoints hold different parameters")
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def share_one_gpu() -> None:
    """Under torchrun with more processes than GPUs: every process on cuda:0, over gloo."""
    import torch
    import torch.distributed as dist

    os.environ["LOCAL_RANK"] = "0"
    init = dist.init_process_group

    def init_gloo(backend=None, **kwargs):
        kwargs.pop("device_id", None)  # NCCL's eager binding; gloo takes none
        return init("gloo", **kwargs)

    dist.init_process_group = init_gloo
    torch.cuda.set_device(0)


def worker(args) -> None:
    """One of the torchrun processes: the kit's training, as `systems.train` runs it."""
    import torch

    from systems.common.config import load_config, parse_overrides
    from systems.common.engine import train
    from systems.common.inference import torch_threads

    device = torch.device(args.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > torch.cuda.device_count():
        share_one_gpu()
    cfg = load_config(args.config, parse_overrides(args.set))
    torch_threads(cfg.train.deterministic)
    train(cfg, Path(args.data), Path(args.exp), device)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--system", default="lfcc_resnet18")
    ap.add_argument("--conf", default="demo")
    ap.add_argument("--utterances", type=int, default=48, help="training utterances (dev: a third)")
    ap.add_argument("--batch", type=int, default=16, help="the step's batch over all processes")
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--exp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    from systems import REGISTRY
    from systems.common.config import load_config, parse_overrides
    from systems.common.distributed import launch
    from systems.common.engine import train
    from systems.common.inference import pick_device, torch_threads
    from systems.common.sampling import check_micro_batches

    if args.system not in REGISTRY:
        fail(f"--system: unknown system {args.system!r}; valid: {', '.join(sorted(REGISTRY))}")
    if args.nproc < 2:
        fail(f"--nproc {args.nproc}: at least 2")
    device = pick_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: no CUDA device visible")
    check_micro_batches(args.batch, args.nproc, 1)
    config = ROOT / f"systems/{args.system}/conf/{args.conf}.yaml"
    with tempfile.TemporaryDirectory(prefix="kit_ddp_check_") as tmp:
        work = Path(tmp)
        data, musan = write_corpus(work, args.utterances)
        base = check_overrides(musan, args.batch, parse_overrides(args.set))
        cfg = load_config(config, base)  # a wrong --set fails here, before any process starts
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        transport = ("NCCL" if gpus >= args.nproc else "gloo, sharing cuda:0") if gpus else "gloo"
        print(f"{args.system} ({args.conf}), {args.utterances} utterances, step batch {args.batch}, "
              f"{args.nproc} processes on {device} ({transport}), SGD, fp32, deterministic kernels")
        t0 = time.perf_counter()
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        launch(args.nproc, "eval.ddp_check", [
            "--worker", "--config", str(config), "--data", str(data), "--exp", str(work / "parallel"),
            "--device", device.type,
            "--set", *[f"{k}={v}" for k, v in base.items()]])
        parallel_seconds = time.perf_counter() - t0
        parallel = final_parameters(work / "parallel")
        torch_threads(cfg.train.deterministic)
        references = {}
        for name, extra in (("accumulated", {"train.grad_accumulation": args.nproc}), ("whole", {})):
            t0 = time.perf_counter()
            train(load_config(config, {**base, **extra}), data, work / name, device)
            references[name] = (max_difference(parallel, final_parameters(work / name)), time.perf_counter() - t0)
    same, control = references["accumulated"][0], references["whole"][0]
    print(f"parallel vs accumulated: max |difference| {same:.3g} (tolerance {args.atol:g}); "
          f"parallel vs whole batch (negative control): {control:.3g}; "
          f"seconds {parallel_seconds:.1f} / {references['accumulated'][1]:.1f} / {references['whole'][1]:.1f}")
    if same > args.atol or control <= 100 * args.atol:
        print(f"FAILED: {args.nproc} processes do not equal one process accumulating their micro-batches"
              if same > args.atol else "FAILED: the negative control does not differ; the check cannot tell")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    run_cli(main)
