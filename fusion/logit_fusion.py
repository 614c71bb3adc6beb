"""Decisions from the members' logits (shared/spec/fusion.md; seed 004 §3.5.1–3.5.2).

Every function returns a score matrix over the kept known classes (all 7, or 6 when a class is held
out for the leave-one-out threshold rule), or, for label fusion, labels 0–7.
"""
from __future__ import annotations

import numpy as np

from core.errors import fail
from core.labels import NUM_LABELS, kept_classes


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_scores(logits: np.ndarray, held_out: int | None = None) -> np.ndarray:
    """Softmax over the kept classes' logits (a held-out class is removed before normalising)."""
    return softmax(logits[:, kept_classes(held_out)])


def augmented_softmax(logits: np.ndarray, clip: float, scale: float, held_out: int | None = None) -> np.ndarray:
    """Seed 004 §3.5.2 'inference augmentation': clip logits to (−clip, clip), multiply by `scale`."""
    return softmax(np.clip(logits[:, kept_classes(held_out)], -clip, clip) * scale)


def score_fusion(logits: dict[str, np.ndarray], weights: dict[str, float] | None, augment: bool,
                 clip: float = 20.0, scale: float = 0.1, held_out: int | None = None) -> np.ndarray:
    systems = list(logits)
    w = np.array([(weights or {}).get(s, 1.0) for s in systems], dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        fail(f"score fusion: weights {dict(zip(systems, w))} must be non-negative and not all zero")
    probs = [augmented_softmax(logits[s], clip, scale, held_out) if augment else softmax_scores(logits[s], held_out)
             for s in systems]
    return sum(wi * p for wi, p in zip(w / w.sum(), probs))


def label_fusion(member_labels: dict[str, np.ndarray], tie_break: str) -> np.ndarray:
    """Mode of the members' labels (7 counts as a label); when all disagree, the tie-break system's."""
    systems = list(member_labels)
    stacked = np.stack([member_labels[s] for s in systems], axis=1)  # (N, M)
    counts = np.stack([(stacked == c).sum(axis=1) for c in range(NUM_LABELS)], axis=1)  # (N, 8)
    best = counts.max(axis=1)
    fused = member_labels[tie_break].copy()
    decided = best >= 2
    # with several labels sharing the top count (e.g. 2-2 of four members) the tie-break member's
    # label wins when it is among them, else the lowest such label
    top = counts == best[:, None]
    tb = member_labels[tie_break]
    tb_on_top = top[np.arange(len(tb)), tb]
    fused[decided] = np.where(tb_on_top[decided], tb[decided], np.argmax(top[decided], axis=1))
    return fused
