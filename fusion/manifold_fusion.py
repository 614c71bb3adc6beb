"""Feature-level (manifold) fusion, seed 004 §3.5.3 and shared/spec/fusion.md.

Members' embeddings L2-normalised and concatenated; class subspaces from training (or dev)
embeddings by ONPE, optionally with the class mean direction; each utterance's subspace spanned by
its window embeddings; geodesic distance from the principal angles; scores by the paper's eq. 2–4
or a temperature softmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import os
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from core.errors import fail
from core.labels import NUM_KNOWN
from fusion.logit_fusion import softmax
from fusion.manifold import (
    SubspaceGroup,
    UtteranceSubspaces,
    class_columns,
    onpe,
    orthonormal_columns,
    project,
    span_coefficients,
    stream_blocks,
    subspace_distances,
)
from fusion.members import SplitScores, WindowRows

# window rows are streamed in blocks of about this many bytes of float64 (64 MB: the GEMM runs at
# full rate, and a 1792-d fusion of 79,490 test utterances stays far below 2 GB)
BLOCK_BYTES = 64 << 20
# blocks (and distance chunks) processed at a time, each with one BLAS thread
FUSION_THREADS = max(1, min(4, os.cpu_count() or 1))


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
    """Members' embeddings side by side in float64 (each L2-normalised first when `normalise`),
    each member converted and scaled in one pass straight into the output."""
    parts = [np.asarray(p) for p in parts.values()]
    out = np.empty((len(parts[0]), sum(p.shape[1] for p in parts)))
    at = 0
    for emb in parts:
        block = out[:, at:at + emb.shape[1]]
        if normalise:
            # in the stored precision (pairwise summation): the embeddings carry no more digits
            norms = np.sqrt(np.square(emb).sum(axis=1, dtype=emb.dtype if emb.dtype.kind == "f" else None),
                            dtype=np.float64)
            np.multiply(emb, (1.0 / np.maximum(norms, 1e-12))[:, None], out=block)
        else:
            block[...] = emb
        at += emb.shape[1]
    return out


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


class WindowSource:
    """One split's fused window embeddings (the members' side by side, each L2-normalised when
    `normalise`), read in blocks of consecutive utterances: never the whole split at once."""

    def __init__(self, members: dict, offsets: np.ndarray, normalise: bool):
        self.members = {s: m if isinstance(m, WindowRows) else WindowRows(m) for s, m in members.items()}
        self.offsets, self.normalise = np.asarray(offsets, dtype=np.int64), normalise
        self.width = sum(m.width for m in self.members.values())

    def raw(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Each member's rows start:stop as stored (float32)."""
        return {s: m.block(start, stop) for s, m in self.members.items()}

    def fuse(self, raw: dict[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """The fused float64 rows (of `rows` of the raw block, all by default)."""
        return concat_embeddings(raw if rows is None else {s: r[rows] for s, r in raw.items()}, self.normalise)

    @classmethod
    def of(cls, windows, offsets: np.ndarray) -> "WindowSource":
        """`windows` as a source: a WindowSource as it is, an (M, D) array as one unnormalised member."""
        return windows if isinstance(windows, cls) else cls({"w": windows}, offsets, False)

    def utterance_blocks(self):
        return stream_blocks(self.offsets, max(1, BLOCK_BYTES // (8 * self.width)))


def _block_subspaces(X: np.ndarray, rows: np.ndarray, index: np.ndarray, cfg: FeatureFusionConfig,
                     include_mean: bool) -> list[SubspaceGroup]:
    """Bases of the utterances `index` whose windows (G, n, D) are X, found at window `rows` (G, n).

    include_mean: span of the windows (≤ d dims), through the origin. Otherwise (paper-literal):
    ONPE of the centred windows when n ≥ k + 2, else the span of the centred windows; the
    windows' direction for a single window or identical ones."""
    n = X.shape[1]
    if include_mean or n == 1:
        return [SubspaceGroup(index[pos], coef, rows[pos]) for pos, coef in span_coefficients(X, cfg.d)]
    mean = X.mean(axis=1, keepdims=True)
    centred = X - mean
    # windows that are all the same have no centred span: their direction stands for them
    flat = np.linalg.norm(centred, axis=(1, 2)) <= 1e-9 * np.linalg.norm(X, axis=(1, 2))
    groups = [SubspaceGroup(index[flat][pos], np.repeat(coef / n, n, axis=2), rows[flat][pos])
              for pos, coef in span_coefficients(mean[flat], 1)] if flat.any() else []
    keep = ~flat
    if not keep.any():
        return groups
    if n >= cfg.k + 2:
        bases = [onpe(Z, cfg.d, cfg.k, cfg.pca_ratio, cfg.pca_max, cfg.alpha).T for Z in X[keep]]
        ranks = np.array([len(b) for b in bases])
        return groups + [SubspaceGroup(index[keep][ranks == r], explicit=np.stack([b for b in bases if len(b) == r]))
                         for r in np.unique(ranks)]
    for pos, coef in span_coefficients(centred[keep], min(cfg.d, n - 1)):
        # centring is C·(I − 11ᵀ/n) on the raw windows: the coefficients absorb it
        groups.append(SubspaceGroup(index[keep][pos], coef - coef.sum(axis=2, keepdims=True) / n, rows[keep][pos]))
    return groups


def merge_groups(groups: list[SubspaceGroup]) -> list[SubspaceGroup]:
    """Groups of equal shape from different blocks as one (fewer, larger batched calls)."""
    by_shape: dict[tuple, list[SubspaceGroup]] = {}
    for g in groups:
        shape = ("explicit",) + g.explicit.shape[1:] if g.explicit is not None else ("coef",) + g.coef.shape[1:]
        by_shape.setdefault(shape, []).append(g)
    merged = []
    for shape, gs in by_shape.items():
        index = np.concatenate([g.index for g in gs])
        if shape[0] == "explicit":
            merged.append(SubspaceGroup(index, explicit=np.concatenate([g.explicit for g in gs])))
        else:
            merged.append(SubspaceGroup(index, np.concatenate([g.coef for g in gs]), np.concatenate([g.rows for g in gs])))
    return merged


def scan_windows(source: WindowSource, cfg: FeatureFusionConfig, include_mean: bool | None,
                 class_basis: np.ndarray | None) -> tuple[UtteranceSubspaces | None, np.ndarray | None]:
    """One streamed pass over a split's windows: each utterance's basis (unless include_mean is
    None) and the windows' projections W·class_basis (unless class_basis is None).

    Blocks of consecutive utterances are read as stored (float32) and, per window count, gathered
    and converted to float64 once; FUSION_THREADS blocks run at a time (one BLAS thread each: the
    gathers, conversions and small eigenproblems are single-threaded in numpy). Memory: the blocks
    in flight (≤ BLOCK_BYTES of float64 each), the coefficients (≤ d per window) and the projections."""
    offsets = source.offsets
    n_utt = len(offsets) - 1
    projections = None if class_basis is None else np.empty((int(offsets[-1]), class_basis.shape[1]))

    def one_block(u0: int, u1: int) -> list[SubspaceGroup]:
        r0, r1 = int(offsets[u0]), int(offsets[u1])
        raw = source.raw(r0, r1)
        if include_mean is None:
            projections[r0:r1] = project(source.fuse(raw), class_basis)
            return []
        groups = []
        counts = np.diff(offsets[u0:u1 + 1])
        for n in np.unique(counts):
            idx = np.flatnonzero(counts == n) + u0
            rows = offsets[idx][:, None] + np.arange(n)
            X = source.fuse(raw, (rows - r0).ravel())
            if projections is not None:
                projections[rows.ravel()] = project(X, class_basis)
            groups += _block_subspaces(X.reshape(len(idx), n, -1), rows, idx, cfg, include_mean)
        return groups

    blocks = list(source.utterance_blocks())
    groups: list[SubspaceGroup] = []
    with threadpool_limits(1), ThreadPoolExecutor(FUSION_THREADS) as pool:
        done = [pool.submit(one_block, u0, u1) for u0, u1 in blocks]
        for future in tqdm(as_completed(done), total=len(done), desc="feature fusion windows", unit="block",
                           disable=len(done) < 8, leave=False):
            groups += future.result()
    subspaces = None if include_mean is None else UtteranceSubspaces(n_utt, merge_groups(groups))
    return subspaces, projections


def window_subspaces(windows, offsets: np.ndarray, cfg: FeatureFusionConfig, include_mean: bool
                     ) -> UtteranceSubspaces:
    """One basis per utterance from its window embeddings (an (M, D) array, or a WindowSource)."""
    return scan_windows(WindowSource.of(windows, offsets), cfg, include_mean, None)[0]


def manifold_distances(subspaces: UtteranceSubspaces, windows, offsets: np.ndarray, classes: dict[int, np.ndarray]
                       ) -> np.ndarray:
    """(N, C) geodesic distances of the utterance bases to the class bases (one pass over `windows`)."""
    class_list = [classes[c] for c in sorted(classes)]
    basis, _ = class_columns([class_list])
    projections = scan_windows(WindowSource.of(windows, offsets), FeatureFusionConfig(), None, basis)[1]
    return subspace_distances(subspaces, projections, [class_list], FUSION_THREADS)[0]


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
    """Geodesic distances (N, 7) of dev and test utterances to the class subspaces, per variant,
    each computed once (feature and feature_softmax share them).

    Statistics from train: one set of class subspaces. From dev: the dev distances are out-of-fold
    (class subspaces rebuilt without the fold), so τ is never chosen on the utterances that built
    the statistics; test uses subspaces from all of dev. Window embeddings are streamed from the
    members' exports: memory does not grow with their width × count."""

    def __init__(self, data: dict[str, SplitScores], cfg: FeatureFusionConfig):
        self.data, self.cfg = data, cfg
        # utterance embeddings build the class subspaces: train and dev only
        self.fused = {s: concat_embeddings(data[s].embeddings, cfg.normalise_members) for s in ("train", "dev")}
        self.sources = {s: WindowSource(data[s].window_embeddings, data[s].window_offsets, cfg.normalise_members)
                        for s in ("dev", "test")}
        self._subspaces: dict[tuple[str, bool], UtteranceSubspaces] = {}
        self._distances: dict[tuple[str, bool], dict[str, np.ndarray]] = {}

    def split_distances(self, split: str, include_mean: bool, class_sets: list[list[np.ndarray]]
                        ) -> list[np.ndarray]:
        key = (split, include_mean)
        basis, _ = class_columns(class_sets)
        subspaces, projections = scan_windows(self.sources[split], self.cfg,
                                              None if key in self._subspaces else include_mean, basis)
        if subspaces is not None:
            self._subspaces[key] = subspaces
        return subspace_distances(self._subspaces[key], projections, class_sets, FUSION_THREADS)

    def distances(self, stats_from: str, include_mean: bool) -> dict[str, np.ndarray]:
        key = (stats_from, include_mean)
        if key not in self._distances:
            self._distances[key] = self._compute(stats_from, include_mean)
        return self._distances[key]

    def _compute(self, stats_from: str, include_mean: bool) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if stats_from == "train":
            classes = class_subspaces(self.fused["train"], self.data["train"].labels, cfg, include_mean)
            class_list = [classes[c] for c in range(NUM_KNOWN)]
            return {s: self.split_distances(s, include_mean, [class_list])[0] for s in ("dev", "test")}
        dev_labels = self.data["dev"].labels
        folds = stratified_folds(dev_labels, cfg.cv_folds)
        used = [f for f in range(cfg.cv_folds) if np.any(folds == f)]
        fold_sets = []
        for f in used:
            held = folds == f
            classes = class_subspaces(self.fused["dev"][~held], dev_labels[~held], cfg, include_mean)
            fold_sets.append([classes[c] for c in range(NUM_KNOWN)])
        per_fold = self.split_distances("dev", include_mean, fold_sets)
        dev = np.empty((len(dev_labels), NUM_KNOWN))
        for f, dist in zip(used, per_fold):
            dev[folds == f] = dist[folds == f]
        classes = class_subspaces(self.fused["dev"], dev_labels, cfg, include_mean)
        test = self.split_distances("test", include_mean, [[classes[c] for c in range(NUM_KNOWN)]])[0]
        return {"dev": dev, "test": test}


def stratified_folds(labels: np.ndarray, k: int) -> np.ndarray:
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(0)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = np.arange(len(idx)) % k
    return folds
