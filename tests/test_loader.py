"""Training batches: the same bits whatever the loader workers, their persistence or the number of
processes; each step's items cut into micro-batches that cover it once; loader options outside
the config digest."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from core.errors import KitError
from core.prepared_split import PreparedSplit
from eval.ddp_check import final_parameters, max_difference
from systems.common.config import TrainConfig, load_config
from systems.common.engine import TrainCrops, build_augmenter, train, train_loader
from systems.common.train_inputs import config_digest
from systems.common.sampling import EpochBatches, shard

from .conftest import ROOT

CONFIG = ROOT / "systems/lfcc_resnet18/conf/demo.yaml"


def epochs_of_batches(data, loader_settings: dict, epochs=(1, 2)) -> list:
    batches = EpochBatches(len(data), 8, seed=5)
    loader = train_loader(data, batches, TrainConfig(**loader_settings), torch.device("cpu"))
    out = []
    for epoch in epochs:
        batches.set_epoch(epoch)  # what Brain does before every epoch, in the main process
        out.append([[t.clone() for t in batch] for batch in loader])
    return out


def test_same_batches_whatever_the_workers(tiny_prepared, tiny_corpus):
    """num_workers 0, 2 and 2 persistent workers over 2 epochs, with the demo augmentation on: the
    same bits, and each item what (seed, epoch, index) alone gives."""
    cfg = load_config(CONFIG, {"augment.musan": str(tiny_corpus / "musan_demo")})
    split = PreparedSplit(tiny_prepared / "train")
    data = TrainCrops(split, 16000, build_augmenter(cfg, split), seed=5)
    reference = epochs_of_batches(data, {"num_workers": 0})
    for settings in ({"num_workers": 2}, {"num_workers": 2, "persistent_workers": True}):
        got = epochs_of_batches(data, settings)
        assert len(got) == len(reference)
        for epoch_got, epoch_ref in zip(got, reference):
            assert len(epoch_got) == len(epoch_ref) == 3  # 21 items: 8, 8, 5
            for batch_got, batch_ref in zip(epoch_got, epoch_ref):
                for a, b in zip(batch_got, batch_ref):
                    assert torch.equal(a, b), settings
    # the oracle: item i of epoch e is data[(e, i)], read in the main process
    batches = EpochBatches(len(data), 8, seed=5)
    for epoch, loaded in zip((1, 2), reference):
        batches.set_epoch(epoch)
        for keys, batch in zip(batches, loaded):
            assert torch.equal(batch[0], torch.stack([data[k][0] for k in keys]))
    # and the epoch reached the items: epoch 2 crops and augments them anew
    assert not torch.equal(data[(1, 0)][0], data[(2, 0)][0])


def micro_batches(n, batch_size, world_size, accumulation, epoch=1) -> list[list[list[int]]]:
    """[rank][micro-batch] → item indices, for one epoch."""
    out = []
    for rank in range(world_size):
        b = EpochBatches(n, batch_size, seed=0, rank=rank, world_size=world_size, accumulation=accumulation)
        b.set_epoch(epoch)
        out.append([[i for e, i in keys] for keys in b])
    return out


@pytest.mark.parametrize("world_size, accumulation", [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1)])
def test_each_step_is_cut_once_into_micro_batches(world_size, accumulation):
    n, bs = 21, 8
    order = EpochBatches(n, bs, seed=0).order().tolist()  # the same order in every process
    ranks = micro_batches(n, bs, world_size, accumulation)
    assert len({len(r) for r in ranks}) == 1  # every process runs the same number of steps
    steps = len(ranks[0]) // accumulation
    for step in range(steps):
        pieces = [r[step * accumulation + j] for r in ranks for j in range(accumulation)]
        assert [i for piece in pieces for i in piece] == order[step * bs:(step + 1) * bs]
        assert all(pieces)
    # a step with fewer items than micro-batches waits: 21 = 2·8 + 5 keeps its 5 items only when
    # there are at most 5 micro-batches
    assert steps == 3


def test_two_processes_read_what_one_process_accumulates():
    two = micro_batches(21, 8, world_size=2, accumulation=1)
    one = micro_batches(21, 8, world_size=1, accumulation=2)[0]
    assert [m for step in zip(*two) for m in step] == one


def test_uneven_last_step_hand_worked():
    """21 items in steps of 8 on 2 processes: the last step has 5 items, cut 3 + 2; weighting each
    micro-batch mean by items · 2 / 5 makes the DDP mean of the two the mean over the 5."""
    b = EpochBatches(21, 8, seed=0, rank=0, world_size=2)
    assert [b.step_size(s) for s in range(3)] == [8, 8, 5]
    assert [b.loss_weight(2, 3), b.loss_weight(2, 2), b.loss_weight(0, 4)] == [1.2, 0.8, 1.0]
    losses = np.random.default_rng(0).random(5)
    ddp_mean = (b.loss_weight(2, 3) * losses[:3].mean() + b.loss_weight(2, 2) * losses[3:].mean()) / 2
    assert ddp_mean == pytest.approx(losses.mean(), rel=1e-12)
    assert EpochBatches(17, 8, seed=0, world_size=2, accumulation=2).steps == 2  # 1 left over: waits
    assert EpochBatches(20, 8, seed=0, world_size=2, accumulation=2).steps == 3


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochBatches(50, 8, seed=1), EpochBatches(50, 8, seed=1, rank=1, world_size=2)
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(a.order(), b.order())
    b.set_epoch(4)
    assert not torch.equal(a.order(), b.order())


def test_dev_shares_cover_dev_once():
    for n in (0, 1, 7, 64):
        for world_size in (1, 2, 3):
            shares = [shard(n, r, world_size) for r in range(world_size)]
            assert np.concatenate(shares).tolist() == list(range(n))


def test_batch_that_does_not_divide_is_one_line_error():
    with pytest.raises(KitError, match="does not divide into 2 process"):
        EpochBatches(21, 7, seed=0, world_size=2)
    with pytest.raises(KitError, match="grad_accumulation 3"):
        EpochBatches(21, 8, seed=0, accumulation=3)
    with pytest.raises(KitError, match="fewer than the 4 micro-batches"):
        EpochBatches(3, 8, seed=0, world_size=4)
    with pytest.raises(KitError, match="prefetch_factor"):
        load_config(CONFIG, {"train.prefetch_factor": 0})
    with pytest.raises(KitError, match="pin_memory"):
        load_config(CONFIG, {"train.pin_memory": "yes"})


def test_loader_options():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    data = list(range(4))
    batches = EpochBatches(4, 2, seed=0)
    plain = train_loader(data, batches, TrainConfig(num_workers=0, persistent_workers=True), cpu)
    assert plain.num_workers == 0 and not plain.persistent_workers and not plain.pin_memory  # no workers to keep
    workers = train_loader(data, batches, TrainConfig(num_workers=2, persistent_workers=True, prefetch_factor=3), cpu)
    assert workers.persistent_workers and workers.prefetch_factor == 3
    assert train_loader(data, batches, TrainConfig(num_workers=0), cuda).pin_memory  # default: pinned on CUDA
    assert not train_loader(data, batches, TrainConfig(num_workers=0, pin_memory=False), cuda).pin_memory


def test_loader_options_do_not_change_the_config_digest():
    base = config_digest(load_config(CONFIG))
    loading = {"train.num_workers": 3, "train.persistent_workers": True, "train.pin_memory": True,
               "train.prefetch_factor": 4}
    assert config_digest(load_config(CONFIG, loading)) == base
    assert config_digest(load_config(CONFIG, {"train.grad_accumulation": 2})) != base


def test_training_with_workers_logs_what_training_without_them_logs(tiny_prepared, tiny_corpus, tmp_path):
    """One epoch of the tiny LFCC-ResNet18 with 0 and with 2 persistent workers (training and dev
    loaders both): the same train loss, dev F1 and dev accuracy, and the same weights."""
    def run(name, workers):
        cfg = load_config(CONFIG, {"augment.musan": str(tiny_corpus / "musan_demo"), "model.blocks": [1, 1, 1, 1],
                                   "model.channels": [8, 16, 16, 32], "train.epochs": 1, "train.batch_size": 8,
                                   "train.num_workers": workers, "train.persistent_workers": workers > 0})
        train(cfg, tiny_prepared, tmp_path / name, torch.device("cpu"))
        row = next(csv.DictReader(open(tmp_path / name / "train_log.csv")))
        return {k: row[k] for k in ("train_loss", "dev_f1", "dev_acc")}, final_parameters(tmp_path / name)

    log_plain, weights_plain = run("plain", 0)
    log_workers, weights_workers = run("workers", 2)
    assert log_workers == log_plain
    assert max_difference(weights_workers, weights_plain) == 0
