"""The REFD-style two-stage scorer: a real-vs-fake gate, then the unknown rule among fakes only.
Hand-worked probabilities; the fusion stage writes its method."""
from __future__ import annotations

import numpy as np

from fusion.calibrate import decide_labels
from fusion.config import FusionConfig
from fusion.members import SplitScores
from fusion.scorers import FusionContext, TwoStage

from .test_ood_scores import write_exports

PROBS = np.array([
    [0.60, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05],  # real by the gate
    [0.10, 0.50, 0.10, 0.10, 0.10, 0.05, 0.05],  # fake 1, share 0.5 / 0.9
    [0.30, 0.12, 0.12, 0.12, 0.12, 0.11, 0.11],  # fake, flat: share 0.12 / 0.7
    [0.55, 0.41, 0.01, 0.01, 0.01, 0.005, 0.005],  # real, narrowly
])


def context(probs_a, probs_b=None):
    logits = {"a": np.log(np.maximum(probs_a, 1e-12))}
    if probs_b is not None:
        logits["b"] = np.log(np.maximum(probs_b, 1e-12))
    n = len(probs_a)
    split = SplitScores(ids=[str(i) for i in range(n)], labels=np.zeros(n, dtype=int), logits=logits,
                        embeddings={s: np.zeros((n, 2)) for s in logits})
    return FusionContext({"train": split, "dev": split, "test": split}, list(logits), FusionConfig())


def test_gate_then_unknown_rule_among_fakes_hand_worked():
    scores = TwoStage(context(PROBS), "a").scores("test")
    np.testing.assert_allclose(scores[:, 0], [1.6, -0.9, -0.7, 1.55], atol=1e-9)
    np.testing.assert_allclose(scores[1, 1:], np.array([0.5, 0.1, 0.1, 0.1, 0.05, 0.05]) / 0.9, atol=1e-9)
    np.testing.assert_allclose(scores[2].max(), 0.12 / 0.7, atol=1e-9)
    assert decide_labels(scores, 0.3).tolist() == [0, 1, 7, 0]
    # the gate's real utterances are never rejected, whatever τ in [0, 1]
    for tau in (0.0, 0.5, 1.0):
        assert decide_labels(scores, tau)[[0, 3]].tolist() == [0, 0]
    assert decide_labels(scores, 0.0).tolist() == [0, 1, 1, 0]


def test_fused_gate_uses_the_mean_softmax_and_held_out_columns():
    other = np.roll(PROBS, 1, axis=0)
    fused = TwoStage(context(PROBS, other))
    mean = (PROBS + other) / 2
    scores = fused.scores("test")
    np.testing.assert_allclose(scores[:, 0], np.where(mean[:, 0] >= 0.5, 1 + mean[:, 0], mean[:, 0] - 1), atol=1e-9)
    held = fused.scores("test", held_out=2)  # a fake class held out: six columns, the real one first
    assert held.shape == (4, 6)
    # each member's softmax over the kept classes, then their mean
    kept = sum(np.delete(p, 2, axis=1) / np.delete(p, 2, axis=1).sum(axis=1, keepdims=True) for p in (PROBS, other)) / 2
    np.testing.assert_allclose(held[:, 0], np.where(kept[:, 0] >= 0.5, 1 + kept[:, 0], kept[:, 0] - 1), atol=1e-9)


def test_two_stage_methods_come_out_of_the_fusion_stage(tmp_path):
    from fusion.run import run_fusion

    exp = tmp_path / "exp"
    write_exports(exp, ("a", "b"))
    cfg = FusionConfig()
    cfg.feature.d, cfg.feature.k = 3, 3
    summary = run_fusion(exp, ["a", "b"], cfg)
    assert {"two_stage", "two_stage:a", "two_stage:b"} <= set(summary["methods"])
    assert (exp / "fusion" / "two_stage" / "test_pred.txt").is_file()
