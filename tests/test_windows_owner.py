"""One owner for window length and shift: the system config. Scoring and fusion follow it."""
from __future__ import annotations

import numpy as np
import torch

from core.prepared_split import PreparedSplit
from core.scores import SystemScores
from fusion.members import aligned_window_rows, load_members
from systems.common.config import load_config
from systems.common.inference import build_model, window_hop, window_length
from systems.common.windows import SplitWindows, window_starts
from systems.score import score_split, split_options

from .conftest import ROOT, TINY_LFCC_RESNET18


def export(cfg, data, target):
    torch.manual_seed(0)
    model, cpu = build_model(cfg), torch.device("cpu")
    score_split(model, cfg, "dev", data, target, cpu, split_options("dev", data, {}, cfg, cpu, cfg.score.batch_size))
    return SystemScores(target), model


def test_window_length_and_hop_follow_the_config(tiny_prepared, tmp_path):
    dev = PreparedSplit(tiny_prepared / "dev")
    lengths = [dev.num_samples(i) for i in range(len(dev)) if dev.readable[i]]
    exported = {}
    for frames, hop_s in ((400, 1.0), (200, 0.5)):
        cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml",
                          dict(TINY_LFCC_RESNET18, **{"model.segment_frames": frames,
                                                      "score.window_hop_seconds": hop_s}))
        scores, model = export(cfg, tiny_prepared, tmp_path / f"f{frames}")
        win, hop = window_length(model), window_hop(cfg)
        assert win == (frames - 1) * 160 and hop == int(hop_s * 16000)
        # the export has exactly the windows the config implies, at the model's input length
        expected = [len(window_starts(n, win, hop)) for n in lengths]
        np.testing.assert_array_equal(np.diff(scores.window_offsets), expected)
        windows = SplitWindows(dev, win, hop)
        assert {len(windows[k][0]) for k in range(len(windows))} == {win}  # cut once, never re-padded
        exported[frames] = scores
    # fusion reads the windows as exported: its per-utterance window counts follow the config
    assert exported[200].window_offsets[-1] > exported[400].window_offsets[-1]


def test_fusion_aligns_members_with_different_windows(tiny_prepared, tmp_path):
    long = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml", TINY_LFCC_RESNET18)
    short = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml",
                        dict(TINY_LFCC_RESNET18, **{"model.segment_frames": 150, "score.window_hop_seconds": 0.5}))
    exp = tmp_path / "exp"
    for name, cfg in (("a", long), ("b", short)):
        for split in ("train", "dev", "test"):
            torch.manual_seed(0)
            score_split(build_model(cfg), cfg, split, tiny_prepared, exp / name / "scores" / split,
                        torch.device("cpu"), {})
    members = load_members(exp, ["a", "b"])
    a, b = SystemScores(exp / "a" / "scores" / "dev"), SystemScores(exp / "b" / "scores" / "dev")
    dev = members["dev"]
    counts = np.maximum(np.diff(a.window_offsets), np.diff(b.window_offsets))
    np.testing.assert_array_equal(np.diff(dev.window_offsets), counts)
    for name, own in (("a", a), ("b", b)):
        assert len(dev.window_embeddings[name]) == dev.window_offsets[-1]
        aligned = dev.window_embeddings[name].block(0, int(dev.window_offsets[-1]))
        # every exported window of a member is used, first and last windows pair with each other
        first = own.window_embeddings[own.window_offsets[:-1]]
        last = own.window_embeddings[own.window_offsets[1:] - 1]
        np.testing.assert_array_equal(aligned[dev.window_offsets[:-1]], first)
        np.testing.assert_array_equal(aligned[dev.window_offsets[1:] - 1], last)


def test_aligned_window_rows_hand_worked():
    # utterance 0: member has 2 windows, target 4 → 0, 0, 1, 1 (positions 0, 1/3, 2/3, 1)
    # utterance 1: member has 3 windows, target 3 → identity; utterance 2: 1 window, target 2
    offsets = np.array([0, 2, 5, 6])
    rows = aligned_window_rows(offsets, np.array([4, 3, 2]))
    np.testing.assert_array_equal(rows, [0, 0, 1, 1, 2, 3, 4, 5, 5])
