"""Several training or scoring processes, one per GPU, started by torchrun (`run_track3.sh --ngpu N`).

torchrun gives every process RANK, LOCAL_RANK and WORLD_SIZE; without them training and scoring are
the one process they always were and nothing here does anything. With them the process joins a
process group (NCCL on CUDA, gloo on CPU) and runs on cuda:LOCAL_RANK. What is shared how is the
engine's business (systems/common/engine.py) and the score stage's (systems/score.py); this module
says who this process is, joins and leaves the group, and starts torchrun for
`python -m systems.train --ngpu N` and `python -m systems.score --ngpu N`.
"""
from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from speechbrain.utils.distributed import ddp_barrier

from core.errors import fail

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
# SpeechBrain's ddp_init_group waits as long; the other processes wait this long at a barrier
# while rank 0 alone builds a system's training cache (w2v_asdg features, feature_decomp codecs)
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launched: bool = False  # started by torchrun (a process group exists, perhaps of one)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    present = [k for k in ENV if k in os.environ]
    if not present:
        return World()
    if len(present) < len(ENV):
        missing = [k for k in ENV if k not in present]
        fail(f"{', '.join(present)} set but not {', '.join(missing)}: start several processes "
             "with torchrun (python -m torch.distributed.run), which sets all three")
    try:
        rank, local_rank, size = (int(os.environ[k]) for k in ENV)
    except ValueError:
        fail(f"{', '.join(f'{k}={os.environ[k]!r}' for k in ENV)}: expected integers (torchrun sets them)")
    if not (0 <= rank < size and 0 <= local_rank < size):
        fail(f"RANK {rank}, LOCAL_RANK {local_rank}, WORLD_SIZE {size}: inconsistent")
    return World(rank, local_rank, size, launched=True)


def process_device(world: World, device: torch.device) -> torch.device:
    """The device this process runs on: `device`, or cuda:LOCAL_RANK under torchrun."""
    if not world.launched or device.type != "cuda":
        return device
    if device.index is not None and device.index != world.local_rank:
        fail(f"--device {device}: under torchrun process {world.rank} runs on cuda:{world.local_rank}; "
             "pass --device cuda or auto (CUDA_VISIBLE_DEVICES picks the GPUs)")
    if world.local_rank >= torch.cuda.device_count():
        fail(f"process {world.rank} needs cuda:{world.local_rank} but {torch.cuda.device_count()} GPU(s) are "
             "visible; lower --ngpu")
    device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)
    return device


def join(world: World, device: torch.device) -> bool:
    """Join the process group (True when this call created it, so that `leave` should end it)."""
    if not world.launched or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available() or not dist.is_backend_available(backend):
        fail(f"torch.distributed backend {backend} is not available in this torch build")
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    return True


def leave(created: bool) -> None:
    """Wait for every process (none leaves while another still writes), then end the group."""
    if created and dist.is_initialized():
        ddp_barrier()
        # the DDP wrapper (in Brain's reference cycles) holds the group: freed first, the group ends
        # here rather than in the interpreter's teardown, where gloo's threads can abort the process
        gc.collect()
        dist.destroy_process_group()


def check_processes(nproc: int, world: World, device: torch.device) -> None:
    """A process count for `--ngpu`, checked before any process starts, so that a wrong one is one line."""
    if nproc < 1:
        fail(f"--ngpu {nproc}: at least 1")
    if nproc > 1 and world.launched:
        fail("--ngpu under torchrun: torchrun's --nproc_per_node sets the number of processes")
    if nproc > 1 and device.type == "cuda" and nproc > torch.cuda.device_count():
        fail(f"--ngpu {nproc}: {torch.cuda.device_count()} GPU(s) visible")


def launch(nproc: int, module: str, argv: list[str], what: str = "training") -> None:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m MODULE ARGV`, run from
    this process so that a failure ends in one line after the processes' own messages (torchrun's
    report is a traceback and a table)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun would give every process one CPU thread (and print a banner saying so): a share each
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", module, *argv]))
    except ChildFailedError as err:
        rank, first = err.get_first_failure()
        fail(f"{nproc} {what} processes: rank {rank} failed first (exit code {first.exitcode}); "
             "its message is above")
