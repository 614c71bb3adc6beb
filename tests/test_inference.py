"""Scoring's fast path (channels-last weights, bf16 on CPUs that have it, loader workers) against a
plain fp32 forward of an untouched copy of the same model, window by window."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from core.prepared_split import PreparedSplit
from systems.common.config import load_config
from systems.common.inference import (
    build_model,
    inference_bf16,
    native_cpu_bf16,
    prepare_for_inference,
    score_windows,
    window_hop,
    window_length,
)
from systems.common.windows import SplitWindows

from .conftest import ROOT, TINY_LFCC_RESNET18


def tiny_system(tiny_prepared):
    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", TINY_LFCC_RESNET18)
    torch.manual_seed(0)
    model = build_model(cfg)
    # trained-like BatchNorm statistics, so eval mode is not the identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    windows = SplitWindows(PreparedSplit(tiny_prepared / "dev"), window_length(model), window_hop(cfg))
    return cfg, model, windows


def plain_forward(model, windows):
    reference = copy.deepcopy(model).eval()
    wave = torch.stack([windows[k][0] for k in range(len(windows))])
    with torch.no_grad():
        logits, emb = reference(wave)
    return logits.numpy(), emb.numpy()


def test_bf16_only_where_it_is_native():
    assert not inference_bf16(torch.device("cpu"), False)
    assert not inference_bf16(torch.device("cuda"), False)
    assert inference_bf16(torch.device("cuda"), True)
    assert inference_bf16(torch.device("cpu"), True) == native_cpu_bf16()


def test_channels_last_keeps_the_values(tiny_prepared):
    _, model, windows = tiny_system(tiny_prepared)
    ref_logits, ref_emb = plain_forward(model, windows)
    fast = prepare_for_inference(copy.deepcopy(model))
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    logits, emb = score_windows(fast, windows, torch.device("cpu"), batch_size=4, bf16=False)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb, ref_emb, rtol=1e-4, atol=1e-5)


def test_default_scoring_matches_fp32(tiny_prepared):
    """bf16 where the CPU has it (else fp32): the same decisions, values within bf16's precision."""
    cfg, model, windows = tiny_system(tiny_prepared)
    ref_logits, ref_emb = plain_forward(model, windows)
    logits, emb = score_windows(model, windows, torch.device("cpu"), batch_size=4, bf16=cfg.train.bf16)
    scale = np.abs(ref_emb).max()
    tol = 3e-2 if inference_bf16(torch.device("cpu"), cfg.train.bf16) else 1e-5
    assert np.abs(emb - ref_emb).max() <= tol * scale
    assert np.abs(logits - ref_logits).max() <= tol * np.abs(ref_logits).max()
    margin = np.sort(ref_logits, axis=1)
    clear = margin[:, -1] - margin[:, -2] > 2 * tol * np.abs(ref_logits).max()
    assert clear.any()
    np.testing.assert_array_equal(logits.argmax(1)[clear], ref_logits.argmax(1)[clear])


@pytest.mark.parametrize("workers", [2])
def test_loader_workers_keep_the_rows(tiny_prepared, workers):
    _, model, windows = tiny_system(tiny_prepared)
    one = score_windows(model, windows, torch.device("cpu"), batch_size=3, bf16=False)
    many = score_windows(model, windows, torch.device("cpu"), batch_size=3, bf16=False, num_workers=workers)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
