"""OpenMax (Bendale & Boult 2016), the organisers' S07 baseline (seed 000 §IV; shared/spec/fusion.md).

Per class, the mean activation vector (MAV) of correctly classified training logits; eucos distance
(Euclidean/200 + cosine); a Weibull fit on the `tail` largest distances (scipy's weibull_min, since
libmr does not build); at test time the top-α classes are recalibrated and the removed activation
becomes an unknown score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import fail
from core.labels import NUM_KNOWN, kept_classes
from fusion.logit_fusion import softmax


@dataclass
class OpenMaxModel:
    mav: np.ndarray  # (7, 7) mean activation vector per class
    weibull: list[tuple[float, float, float]]  # (shape, loc, scale) per class
    alpha: int


def eucos(a: np.ndarray, mav: np.ndarray) -> np.ndarray:
    """Euclidean/200 + cosine distance of each row of a to mav."""
    euc = np.linalg.norm(a - mav, axis=-1) / 200.0
    cos = 1.0 - (a * mav).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(mav, axis=-1), 1e-12)
    return euc + cos


def fit_openmax(logits: np.ndarray, labels: np.ndarray, alpha: int = 3, tail: int = 20) -> OpenMaxModel:
    """Per class: MAV of correctly classified training logits; Weibull fit on its `tail` largest
    eucos distances (scipy.stats.weibull_min, location fixed at 0)."""
    from scipy.stats import weibull_min  # here, not at import: scipy.stats takes ~1 s to load

    mav = np.zeros((NUM_KNOWN, logits.shape[1]))
    fits = []
    for c in range(NUM_KNOWN):
        correct = logits[(labels == c) & (logits.argmax(1) == c)]
        if len(correct) < 2:
            correct = logits[labels == c]
        if len(correct) < 2:
            fail(f"openmax: class {c} has fewer than 2 training utterances")
        mav[c] = correct.mean(axis=0)
        dist = np.sort(eucos(correct, mav[c]))[-tail:]
        dist = np.maximum(dist, 1e-9)
        shape, loc, scale = weibull_min.fit(dist, floc=0.0)
        fits.append((float(shape), float(loc), float(scale)))
    return OpenMaxModel(mav=mav, weibull=fits, alpha=min(alpha, NUM_KNOWN))


def openmax_scores(model: OpenMaxModel, logits: np.ndarray, held_out: int | None = None) -> np.ndarray:
    """(N, kept + 1) probabilities: the kept classes' recalibrated scores and an unknown column last.

    The top-α classes by activation are recalibrated with weights (α + 1 − i)/α (i = rank from 1);
    the removed activation mass is the unknown activation; softmax over all of them."""
    from scipy.stats import weibull_min

    kept = kept_classes(held_out)
    av = logits[:, kept].astype(np.float64)  # activation vectors restricted to kept classes
    mav = model.mav[np.ix_(kept, kept)]
    alpha = min(model.alpha, len(kept))
    ranks = np.argsort(-av, axis=1)[:, :alpha]
    revised = av.copy()
    unknown = np.zeros(len(av))
    rows = np.arange(len(av))
    for i in range(alpha):
        cls = ranks[:, i]
        weight = (alpha - i) / alpha
        dist = eucos(av, mav[cls])
        shape = np.array([model.weibull[kept[c]][0] for c in cls])
        scale = np.array([model.weibull[kept[c]][2] for c in cls])
        cdf = weibull_min.cdf(dist, shape, loc=0.0, scale=scale)
        w = 1.0 - weight * cdf
        removed = av[rows, cls] * (1.0 - w)
        revised[rows, cls] = av[rows, cls] * w
        unknown += removed
    return softmax(np.column_stack([revised, unknown]))
