"""Which training items each step reads, in every process: batches of (epoch, index) keys.

The order of epoch e is a permutation drawn from (seed, e) alone, and every key carries its epoch,
so an item's crop and augmentation (seeded per (seed, epoch, index) by the datasets) are the same
whatever the number of loader workers, their persistence or the number of processes. An `epoch`
attribute set on the dataset would not do: a loader worker holds its own copy of the dataset, and
a persistent one keeps the copy it got in the first epoch.

Every optimiser step reads `batch_size` items of that order (the last step of an epoch fewer),
cut into world size × grad_accumulation micro-batches: process r reads pieces r·A … r·A + A − 1,
one per forward/backward pass. One process with A = N reads exactly the pieces that N processes
with A = 1 read between them, which is what tests/test_ddp.py compares.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from core.errors import fail


def item_key(key, epoch: int) -> tuple[int, int]:
    """(epoch, index) of a training dataset key: a pair from `EpochBatches`, or a bare index read
    at the dataset's own `epoch` (feature caches, benchmarks, tests)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return epoch, int(key)


def shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """Process `rank`'s contiguous share of range(n): the shares cover it once, no item repeated."""
    return np.array_split(np.arange(n), world_size)[rank]


def check_micro_batches(batch_size: int, world_size: int, accumulation: int) -> None:
    if batch_size % (world_size * accumulation):
        fail(f"train.batch_size {batch_size} does not divide into {world_size} process(es) × "
             f"grad_accumulation {accumulation} equal micro-batches; make it a multiple of "
             f"{world_size * accumulation}")


class EpochBatches(Sampler):
    """The micro-batches of one process, as lists of (epoch, index) keys; `set_epoch` (SpeechBrain's
    Brain calls it before every epoch, in the main process) picks the epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 accumulation: int = 1):
        check_micro_batches(batch_size, world_size, accumulation)
        self.parts = world_size * accumulation
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.accumulation = rank, accumulation
        self.epoch = 1
        full, rest = divmod(n, batch_size)
        # a last step with fewer items than micro-batches would leave a process without data, and
        # DDP needs every process in every step: those few items (a different few each epoch) wait
        self.steps = full + (1 if rest >= self.parts else 0)
        if self.steps == 0:
            fail(f"{n} training utterances: fewer than the {self.parts} micro-batches of one step")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=generator)

    def step_size(self, step: int) -> int:
        """Items in optimiser step `step` (0-based) of an epoch, over all processes."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def loss_weight(self, step: int, items: int) -> float:
        """What a micro-batch loss (a mean over its `items`) is multiplied by so that the DDP mean
        over processes of the accumulated losses is the mean over the step's items: 1 for every
        step but an uneven last one, whose micro-batches differ by one item."""
        return items * self.parts / self.step_size(step)

    def __len__(self) -> int:
        return self.steps * self.accumulation

    def __iter__(self):
        order = self.order().numpy()
        for step in range(self.steps):
            start = step * self.batch_size
            pieces = np.array_split(order[start:start + self.step_size(step)], self.parts)
            for j in range(self.accumulation):
                yield [(self.epoch, int(i)) for i in pieces[self.rank * self.accumulation + j]]
