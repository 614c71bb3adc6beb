"""Open-set decisions (shared/spec/fusion.md): label = argmax p, unless max p < τ, then 7."""
from __future__ import annotations

import numpy as np

from eval.metrics import UNKNOWN


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def decide(scores: np.ndarray, tau: float) -> np.ndarray:
    """(N, 7) scores → labels in 0–7."""
    labels = scores.argmax(axis=1)
    return np.where(scores.max(axis=1) < tau, UNKNOWN, labels)


def tau_quantile(dev_scores: np.ndarray, q: float) -> float:
    """τ such that a fraction q of dev utterances (all of known classes) would be rejected."""
    return float(np.quantile(dev_scores.max(axis=1), q)) if q > 0 else float("-inf")
