"""`train.channels_last`: a 2-d model trains with its convolutions in channels-last order. The same
function, so the same training to float rounding; a checkpoint made so scores like any other; a
config that leaves the option off keeps the digest it had before the option existed."""
from __future__ import annotations

import pytest
import torch

from systems.common.config import load_config
from systems.common.engine import train
from systems.common.inference import build_model, config_digest

from .conftest import ROOT
from .test_engine import TINY, latest_weights

# lfcc_resnet18/conf/demo_long.yaml's digest at 8778b3a, before the option existed
DEMO_LONG_BEFORE = "df9ecfa8352c7faee6165f341e2d74ccd2f0930efc02b87a8f0611e1d2f3f0ef"
LFCC = ROOT / "systems/lfcc_resnet18/conf"


def test_off_keeps_the_digest_and_on_changes_it():
    off = load_config(LFCC / "demo_long.yaml")
    assert off.train.channels_last is False
    assert config_digest(off) == DEMO_LONG_BEFORE
    assert config_digest(load_config(LFCC / "demo_long.yaml", {"train.channels_last": True})) != DEMO_LONG_BEFORE


def test_the_default_demo_config_trains_channels_last():
    assert load_config(LFCC / "demo.yaml").train.channels_last is True


@pytest.fixture(scope="module")
def trained_both_ways(tiny_prepared, tiny_corpus, tmp_path_factory):
    out = {}
    for layout in (False, True):
        cfg = load_config(LFCC / "demo.yaml", dict(TINY, **{"augment.musan": str(tiny_corpus / "musan_demo"),
                                                           "train.epochs": 2, "train.bf16": False,
                                                           "train.channels_last": layout}))
        exp = tmp_path_factory.mktemp(f"channels_last_{layout}")
        assert train(cfg, tiny_prepared, exp, torch.device("cpu"))["epochs_run"] == 2
        out[layout] = (cfg, latest_weights(exp)[1])
    return out


def test_training_is_the_same_to_rounding(trained_both_ways):
    (_, plain), (_, fast) = trained_both_ways[False], trained_both_ways[True]
    assert plain.keys() == fast.keys()
    conv_weights = [k for k, v in fast.items() if v.dim() == 4]
    assert conv_weights
    # the checkpoint holds what the optimiser updated: the channels-last tensors, not a copy
    assert all(fast[k].is_contiguous(memory_format=torch.channels_last) for k in conv_weights)
    assert not any(plain[k].is_contiguous(memory_format=torch.channels_last) for k in conv_weights
                   if plain[k].shape[1] > 1 and plain[k].shape[2:] != (1, 1))
    # two epochs of Adam from the same seed: only the order of float additions differs
    differs = [k for k in plain if not torch.equal(plain[k], fast[k])]
    assert differs, "the layouts gave bit-identical weights: the option changed nothing"
    for k in plain:
        torch.testing.assert_close(fast[k], plain[k], rtol=1e-3, atol=1e-4, msg=k)


def test_a_channels_last_checkpoint_loads_into_a_plain_model(trained_both_ways):
    cfg, fast = trained_both_ways[True]
    model = build_model(cfg)
    model.load_state_dict(fast)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    torch.testing.assert_close(dict(model.state_dict()), fast, rtol=0, atol=0)
