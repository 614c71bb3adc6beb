"""Decision and fusion methods over exported scores (shared/spec/fusion.md; seed 004 §3.4–3.5).

Every method turns the members' exported files into a per-utterance score matrix over the known
classes that remain (all 7, or 6 when a class is held out for the leave-one-out threshold rule);
OpenMax adds an unknown column. `Members` holds what the methods read: per system and split,
logits, embeddings and (test) window embeddings, aligned on common utterance ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import weibull_min

from data_prep.common import fail
from fusion.manifold import StackedBases, batched_distances, onpe, orthonormal_columns, span_bases
from systems.common.export import SystemScores

NUM_KNOWN = 7
SPAN_CHUNK = 2048


@dataclass
class SplitScores:
    ids: list[str]
    labels: np.ndarray
    logits: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    window_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    window_offsets: np.ndarray | None = None


def load_members(exp: Path, systems: list[str], splits=("train", "dev", "test")) -> dict[str, SplitScores]:
    """Read every member's exported splits and align them on the ids of the first member."""
    out = {}
    for split in splits:
        per = {s: SystemScores(exp / s / "scores" / split) for s in systems}
        ref = per[systems[0]]
        for s in systems[1:]:
            if per[s].ids != ref.ids:
                fail(f"{exp / s / 'scores' / split}: utterance ids differ from {systems[0]}'s; re-run the score stage")
            if per[s].window_offsets is not None and not np.array_equal(per[s].window_offsets, ref.window_offsets):
                fail(f"{exp / s / 'scores' / split}: test windows differ from {systems[0]}'s")
        out[split] = SplitScores(
            ids=ref.ids, labels=ref.labels, logits={s: per[s].logits for s in systems},
            embeddings={s: per[s].embeddings for s in systems},
            window_embeddings={s: per[s].window_embeddings for s in systems if per[s].window_embeddings is not None},
            window_offsets=ref.window_offsets)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kept_classes(held_out: int | None) -> np.ndarray:
    return np.array([c for c in range(NUM_KNOWN) if c != held_out])


# --------------------------------------------------------------------------- logit-based methods

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
    counts = np.stack([(stacked == c).sum(axis=1) for c in range(NUM_KNOWN + 1)], axis=1)  # (N, 8)
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


# --------------------------------------------------------------------------- feature-level fusion

@dataclass
class FeatureFusionConfig:
    d: int = 10
    k: int = 5
    pca_ratio: float = 0.99
    pca_max: int = 128
    alpha: float = 1e-3
    normalise_members: bool = True
    include_mean: bool = True
    temperature: float = 0.1
    class_stats_from: str = "train"
    cv_folds: int = 5

    def __post_init__(self):
        if self.class_stats_from not in ("train", "dev"):
            fail(f"feature.class_stats_from {self.class_stats_from!r}: valid are train, dev")
        if self.d < 1 or self.k < 1 or self.temperature <= 0:
            fail("feature: d and k must be positive, temperature > 0")


def concat_embeddings(parts: dict[str, np.ndarray], normalise: bool) -> np.ndarray:
    """Members' embeddings side by side (each L2-normalised first when `normalise`)."""
    blocks = []
    for emb in parts.values():
        emb = np.asarray(emb, dtype=np.float64)
        if normalise:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        blocks.append(emb)
    return np.concatenate(blocks, axis=1)


def class_subspace(Z: np.ndarray, cfg: FeatureFusionConfig, include_mean: bool) -> np.ndarray:
    if include_mean:
        mean = Z.mean(axis=0)
        direction = mean / max(np.linalg.norm(mean), 1e-12)
        if cfg.d == 1 or len(Z) < 3:
            return direction[:, None]
        local = onpe(Z, cfg.d - 1, cfg.k, cfg.pca_ratio, cfg.pca_max, cfg.alpha)
        return orthonormal_columns(np.column_stack([direction, local]))
    return onpe(Z, cfg.d, cfg.k, cfg.pca_ratio, cfg.pca_max, cfg.alpha)


def class_subspaces(Z: np.ndarray, labels: np.ndarray, cfg: FeatureFusionConfig, include_mean: bool
                    ) -> dict[int, np.ndarray]:
    out = {}
    for c in range(NUM_KNOWN):
        members = Z[labels == c]
        if len(members) < 2:
            fail(f"feature fusion: class {c} has {len(members)} utterance(s) in the statistics set; need >= 2")
        out[c] = class_subspace(members, cfg, include_mean)
    return out


def window_subspaces(windows: np.ndarray, offsets: np.ndarray, cfg: FeatureFusionConfig, include_mean: bool
                     ) -> StackedBases:
    """One basis per utterance from its window embeddings (n × D).

    include_mean: span of the windows (≤ d dims), through the origin. Otherwise (paper-literal):
    ONPE of the centred windows when n ≥ k + 2, else the span of the centred windows, else the
    single embedding's direction. Spans are computed in batches of equal window count.
    """
    counts = np.diff(offsets)
    out = StackedBases(len(counts))
    onpe_bases: dict[int, np.ndarray] = {}
    for n in np.unique(counts):
        # chunks keep the stacked arrays small enough to stay in cache-friendly, reused memory
        all_idx = np.flatnonzero(counts == n)
        for start in range(0, len(all_idx), SPAN_CHUNK):
            idx = all_idx[start:start + SPAN_CHUNK]
            stacked = windows[offsets[idx][:, None] + np.arange(n)].astype(np.float64)  # (G, n, D)
            if include_mean or n == 1:
                groups = span_bases(stacked, cfg.d)
            elif n >= cfg.k + 2:
                for i, Z in zip(idx, stacked):
                    onpe_bases[int(i)] = onpe(Z, cfg.d, cfg.k, cfg.pca_ratio, cfg.pca_max, cfg.alpha)
                continue
            else:
                groups = span_bases(stacked - stacked.mean(axis=1, keepdims=True), min(cfg.d, n - 1))
            for pos, rows in groups:
                out.add(idx[pos], rows)
    if onpe_bases:
        extra = StackedBases.from_list(list(onpe_bases.values()))
        keys = np.array(list(onpe_bases))
        for index, rows in extra.groups:
            out.add(keys[index], rows)
    return out


def manifold_distances(bases: StackedBases, classes: dict[int, np.ndarray], held_out: int | None = None
                       ) -> np.ndarray:
    """(N, kept classes) geodesic distances, one batched computation per group of bases."""
    class_list = [classes[c] for c in kept_classes(held_out)]
    out = np.empty((bases.n, len(class_list)))
    for index, rows in bases.groups:
        out[index] = batched_distances(rows, class_list)
    return out


def distance_scores(dist: np.ndarray, kind: str, temperature: float = 0.1) -> np.ndarray:
    """Seed 004 eq. 2–4: s = −d, p_j = (s_j − min s) / Σ (s_l − min s); or a temperature softmax of s."""
    s = -dist
    if kind == "softmax":
        return softmax(s / temperature)
    shifted = s - s.min(axis=1, keepdims=True)
    total = shifted.sum(axis=1, keepdims=True)
    uniform = np.full_like(shifted, 1.0 / shifted.shape[1])
    return np.where(total > 0, shifted / np.where(total > 0, total, 1.0), uniform)


# --------------------------------------------------------------------------- OpenMax (S07)

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
