"""Feature-level (manifold) fusion, seed 004 §3.5.3 and shared/spec/fusion.md.

Members' embeddings L2-normalised and concatenated; class subspaces from training (or dev)
embeddings by ONPE, optionally with the class mean direction; each utterance's subspace spanned by
its window embeddings; geodesic distance from the principal angles; scores by the paper's eq. 2–4
or a temperature softmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import fail
from core.labels import NUM_KNOWN, kept_classes
from fusion.logit_fusion import softmax
from fusion.manifold import StackedBases, batched_distances, onpe, orthonormal_columns, span_bases
from fusion.members import SplitScores

# utterances of one window count are stacked in chunks of this many: bounded, cache-friendly memory
SPAN_CHUNK = 2048


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


class FeatureDistances:
    """Geodesic distances (N, 7) of dev and test utterances to the class subspaces, per variant.

    Statistics from train: one set of class subspaces. From dev: the dev distances are out-of-fold
    (class subspaces rebuilt without the fold), so τ is never chosen on the utterances that built
    the statistics; test uses subspaces from all of dev."""

    def __init__(self, data: dict[str, SplitScores], cfg: FeatureFusionConfig):
        self.data, self.cfg = data, cfg
        self.fused = {s: concat_embeddings(data[s].embeddings, cfg.normalise_members) for s in data}
        self.windows = {s: concat_embeddings(data[s].window_embeddings, cfg.normalise_members)
                        for s in ("dev", "test")}
        self._bases: dict[tuple[str, bool], StackedBases] = {}

    def bases(self, split: str, include_mean: bool) -> StackedBases:
        key = (split, include_mean)
        if key not in self._bases:
            self._bases[key] = window_subspaces(self.windows[split], self.data[split].window_offsets, self.cfg,
                                              include_mean)
        return self._bases[key]

    def distances(self, stats_from: str, include_mean: bool) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if stats_from == "train":
            classes = class_subspaces(self.fused["train"], self.data["train"].labels, cfg, include_mean)
            return {s: manifold_distances(self.bases(s, include_mean), classes) for s in ("dev", "test")}
        dev_labels = self.data["dev"].labels
        folds = stratified_folds(dev_labels, cfg.cv_folds)
        dev_bases = self.bases("dev", include_mean)
        dev = np.empty((len(dev_labels), NUM_KNOWN))
        for f in range(cfg.cv_folds):
            held = folds == f
            if not held.any():
                continue
            classes = class_subspaces(self.fused["dev"][~held], dev_labels[~held], cfg, include_mean)
            dev[held] = manifold_distances(dev_bases.subset(held), classes)
        classes = class_subspaces(self.fused["dev"], dev_labels, cfg, include_mean)
        return {"dev": dev, "test": manifold_distances(self.bases("test", include_mean), classes)}


def stratified_folds(labels: np.ndarray, k: int) -> np.ndarray:
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(0)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = np.arange(len(idx)) % k
    return folds
