"""`train.channels_last`: a 2-d model trains with its convolutions in channels-last order. The same
function and gradients to float rounding (training then drifts apart through Adam); a checkpoint
made so scores like any other; a config that leaves the option off keeps the digest it had before
the option existed."""
from __future__ import annotations

import copy

import pytest
import torch

from systems.common.config import load_config
from systems.common.engine import train
from systems.common.inference import build_model, to_channels_last
from systems.common.train_inputs import config_digest

from .conftest import ROOT
from .test_engine import TINY, latest_weights

# lfcc_resnet18/conf/demo_long.yaml's digest at 8778b3a, before the option existed
DEMO_LONG_BEFORE = "df9ecfa8352c7faee6165f341e2d74ccd2f0930efc02b87a8f0611e1d2f3f0ef"
LFCC = ROOT / "systems/lfcc_resnet18/conf"


def test_off_keeps_the_digest_and_on_changes_it():
    off = load_config(LFCC / "demo_long.yaml")
    assert off.train.channels_last is False
    from systems.common.train_inputs import earlier_config_digest, fits_config

    # the digest earlier kits wrote into checkpoints; the current one leaves score.batch_size out (fits_config takes both)
    assert earlier_config_digest(off) == DEMO_LONG_BEFORE and fits_config(DEMO_LONG_BEFORE, off)
    on = load_config(LFCC / "demo_long.yaml", {"train.channels_last": True})
    assert not fits_config(DEMO_LONG_BEFORE, on) and config_digest(on) != config_digest(off)


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


def test_channels_last_is_the_same_function_and_gradient():
    """One forward and backward pass in training mode, at the same weights, in both layouts: the
    logits and every parameter's gradient agree to float rounding (measured on AMD EPYC: 9e-6 of
    each tensor's largest entry)."""
    cfg = load_config(LFCC / "demo.yaml", TINY)
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    fast = to_channels_last(copy.deepcopy(plain))
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in fast.parameters() if p.dim() == 4)
    wave = torch.randn(8, plain.input_samples, generator=torch.Generator().manual_seed(1)) * 0.1
    labels = torch.arange(8) % 7
    logits, grads = {}, {}
    for name, model in (("plain", plain), ("fast", fast)):
        out, _ = model(wave)
        torch.nn.functional.cross_entropy(out, labels).backward()
        logits[name] = out.detach()
        grads[name] = {k: p.grad for k, p in model.named_parameters()}
    torch.testing.assert_close(logits["fast"], logits["plain"], rtol=0,
                               atol=1e-4 * float(logits["plain"].abs().max()))
    for k, g in grads["plain"].items():
        torch.testing.assert_close(grads["fast"][k], g, rtol=0, atol=1e-4 * float(g.abs().max()), msg=k)


def test_training_channels_last_keeps_that_layout_and_changes_the_rounding(trained_both_ways):
    (_, plain), (_, fast) = trained_both_ways[False], trained_both_ways[True]
    assert plain.keys() == fast.keys()
    conv_weights = [k for k, v in fast.items() if v.dim() == 4]
    assert conv_weights
    # the checkpoint holds what the optimiser updated: the channels-last tensors, not a copy
    assert all(fast[k].is_contiguous(memory_format=torch.channels_last) for k in conv_weights)
    assert not any(plain[k].is_contiguous(memory_format=torch.channels_last) for k in conv_weights
                   if plain[k].shape[1] > 1 and plain[k].shape[2:] != (1, 1))
    # Same function (test above), other float order. The weights after training are not compared
    # to a tolerance: Adam divides each gradient by its running RMS, so a rounding-level
    # difference in a near-zero gradient becomes a step of size lr (on AMD EPYC two epochs of the
    # tiny model moved 40 % of the weights apart by up to 2.3e-3 at lr 1e-3).
    assert [k for k in plain if not torch.equal(plain[k], fast[k])], \
        "the layouts gave bit-identical weights: the option changed nothing"


def test_a_channels_last_checkpoint_loads_into_a_plain_model(trained_both_ways):
    cfg, fast = trained_both_ways[True]
    model = build_model(cfg)
    model.load_state_dict(fast)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    torch.testing.assert_close(dict(model.state_dict()), fast, rtol=0, atol=0)
