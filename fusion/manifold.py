"""Subspaces and their distances for feature-level (manifold) fusion (seed 004 §3.4, spec fusion.md).

`onpe(Z, d)`: orthogonal neighbourhood preserving projections (Kokiopoulou & Saad's ONPP / Liu et
al.'s ONPE: NPE weights + orthogonal basis), following the spec's steps: centre, PCA pre-step,
NPE reconstruction weights on k nearest neighbours, orthogonal iteration in the maximisation form.
`geodesic_distance(A, B)`: the Grassmann distance ‖θ‖₂ from the principal angles θ.
The batched functions compute the distances of many test subspaces to every class subspace with
stacked SVDs, grouped by subspace dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import fail


def orthonormal_columns(A: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(A)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def npe_weights(Y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of Y: its k nearest neighbours (n, k) and the weights (n, k), summing to 1,
    that best reconstruct it from them (the non-zeros of the NPE matrix W)."""
    n, r = Y.shape
    k = min(k, n - 1)
    sq = np.sum(Y ** 2, axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * Y @ Y.T
    np.fill_diagonal(dist, np.inf)
    neighbours = np.argsort(dist, axis=1, kind="stable")[:, :k]
    tol = 1e-3 if k > r else 1e-12
    diff = Y[neighbours] - Y[:, None, :]  # (n, k, r)
    G = diff @ diff.transpose(0, 2, 1)  # (n, k, k) local Gram matrices
    G = G + tol * np.maximum(np.trace(G, axis1=1, axis2=2), 1e-300)[:, None, None] * np.eye(k)
    w = np.linalg.solve(G, np.ones((n, k, 1)))[..., 0]
    return neighbours, w / w.sum(axis=1, keepdims=True)


def _top_eigenvector(A: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(A)
    v = np.real(vecs[:, np.argmax(np.real(vals))])
    return v / np.linalg.norm(v)


def onpe(Z: np.ndarray, d: int, k: int = 5, pca_ratio: float = 0.99, pca_max: int = 128,
         alpha: float = 1e-3) -> np.ndarray:
    """Orthonormal (D, d') basis of the ONPE subspace of the rows of Z (d' = min(d, n − 1)).

    1. centre the rows; 2. PCA to the smallest r explaining `pca_ratio` of the variance, with
    d ≤ r ≤ min(n − 1, D, pca_max) — without it the eigenproblem reaches the null vectors of M and
    returns noise directions; 3. NPE weights W, M = (I − W)ᵀ(I − W); 4. with S = YᵀY and
    T = YᵀMY + α·trace(T)/r·I, a₁ = top eigenvector of T⁻¹S and, for P = [a₁ … a_{k−1}],
    a_k = top eigenvector of (I − T⁻¹P(PᵀT⁻¹P)⁻¹Pᵀ)T⁻¹S; 5. basis = V_r[a₁ … a_d].
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2:
        fail(f"onpe: Z must be 2-D (n × D), got shape {Z.shape}")
    n, D = Z.shape
    if n < 2:
        fail(f"onpe: needs at least 2 samples, got {n}")
    d = min(d, n - 1, D)
    Zc = Z - Z.mean(axis=0)
    _, s, vt = np.linalg.svd(Zc, full_matrices=False)
    var = s ** 2
    if var.sum() <= 0:
        fail("onpe: all samples are identical")
    explained = np.cumsum(var) / var.sum()
    r = int(np.searchsorted(explained, pca_ratio - 1e-12) + 1)
    r = max(d, min(r, n - 1, D, pca_max))
    V = vt[:r].T  # (D, r)
    Y = Zc @ V  # (n, r)
    neighbours, w = npe_weights(Y, k)
    # YᵀMY with M = (I − W)ᵀ(I − W) is EᵀE for the reconstruction errors E = (I − W)Y; W is
    # never formed (n × n is too large for real class sizes)
    E = Y - np.einsum("nk,nkr->nr", w, Y[neighbours])
    S = Y.T @ Y
    T = E.T @ E
    T = T + alpha * (np.trace(T) / r) * np.eye(r)
    Tinv = np.linalg.inv(T)
    TinvS = Tinv @ S
    vectors = [_top_eigenvector(TinvS)]
    for _ in range(1, d):
        P = np.stack(vectors, axis=1)
        TinvP = Tinv @ P
        Q = np.eye(r) - TinvP @ np.linalg.solve(P.T @ TinvP, P.T)
        vectors.append(_top_eigenvector(Q @ TinvS))
    basis = V @ np.stack(vectors, axis=1)
    basis /= np.linalg.norm(basis, axis=0, keepdims=True)
    return orthonormal_columns(basis)


def principal_angles_from_bases(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Principal angles (ascending) of two orthonormal bases; small angles from sines for accuracy
    (arccos loses precision near cos = 1, the way scipy.linalg.subspace_angles avoids it)."""
    if A.shape[1] < B.shape[1]:
        A, B = B, A
    cos = np.clip(np.linalg.svd(A.T @ B, compute_uv=False), -1.0, 1.0)  # descending
    theta = np.arccos(cos)
    small = cos ** 2 >= 0.5
    if small.any():
        residual = B - A @ (A.T @ B)
        sin = np.clip(np.linalg.svd(residual, compute_uv=False), -1.0, 1.0)  # descending
        sin_asc = np.sort(sin)  # ascending, pairs with descending cos
        theta = np.where(small, np.arcsin(sin_asc[: len(theta)]), theta)
    return np.sort(theta)


def geodesic_distance(A: np.ndarray, B: np.ndarray) -> float:
    """Grassmann geodesic distance ‖θ‖₂ between span(A) and span(B) (A, B with orthonormal columns)."""
    return float(np.linalg.norm(principal_angles_from_bases(np.asarray(A, float), np.asarray(B, float))))


def batched_distances(tests: np.ndarray, classes: list[np.ndarray]) -> np.ndarray:
    """(N, C) geodesic distances from N test bases of one dimension a, stacked as rows (N, a, D),
    to each class basis (D, b_j): one GEMM against all class bases, then stacked small SVDs."""
    n, a, D = tests.shape
    widths = [S.shape[1] for S in classes]
    edges = np.concatenate([[0], np.cumsum(widths)])
    products = (tests.reshape(n * a, D) @ np.concatenate(classes, axis=1)).reshape(n, a, -1)
    out = np.empty((n, len(classes)))
    for j, S in enumerate(classes):
        prod = products[:, :, edges[j]:edges[j + 1]]  # (N, a, b) = TᵀS
        cos = np.clip(np.linalg.svd(prod, compute_uv=False), -1.0, 1.0)  # (N, min(a, b)), descending
        theta = np.arccos(cos)
        small = cos ** 2 >= 0.5
        rows = np.flatnonzero(small.any(axis=1))
        if len(rows):
            # sines of the angles from the part of the smaller basis outside the larger one
            t, p = tests[rows], prod[rows]
            if a <= S.shape[1]:
                residual = t - p @ S.T  # (R, a, D)
            else:
                residual = S.T[None] - p.transpose(0, 2, 1) @ t  # (R, b, D)
            sin = np.sort(np.clip(np.linalg.svd(residual, compute_uv=False), -1.0, 1.0), axis=1)
            theta[rows] = np.where(small[rows], np.arcsin(sin[:, : theta.shape[1]]), theta[rows])
        out[:, j] = np.linalg.norm(theta, axis=1)
    return out


@dataclass
class StackedBases:
    """Orthonormal bases of many utterances, stored in groups of equal dimension a as rows
    (G, a, D) with the utterance index of each; the batched distances work group by group."""

    n: int
    groups: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, index: np.ndarray, rows: np.ndarray) -> None:
        if len(index):
            self.groups.append((np.asarray(index), rows))

    def basis(self, i: int) -> np.ndarray:
        for index, rows in self.groups:
            hit = np.flatnonzero(index == i)
            if len(hit):
                return rows[hit[0]].T
        raise IndexError(i)

    def subset(self, mask: np.ndarray) -> "StackedBases":
        """The bases of the utterances where `mask` holds, renumbered 0.. in order."""
        new_index = np.cumsum(mask) - 1
        out = StackedBases(int(mask.sum()))
        for index, rows in self.groups:
            keep = mask[index]
            out.add(new_index[index[keep]], rows[keep])
        return out

    @classmethod
    def from_list(cls, bases: list[np.ndarray]) -> "StackedBases":
        out = cls(len(bases))
        dims = np.array([b.shape[1] for b in bases])
        for a in np.unique(dims):
            idx = np.flatnonzero(dims == a)
            out.add(idx, np.stack([bases[i].T for i in idx]))
        return out


def span_bases(windows: np.ndarray, d: int, rank_tol: float = 1e-6) -> list[tuple[np.ndarray, np.ndarray]]:
    """Orthonormal bases of the spans of stacked window sets (N, n, D), r ≤ min(n, d), as groups
    (positions in the stack, rows (G, r, D)) of equal rank r.

    Through the n × n Gram matrices (an eigendecomposition per set instead of an SVD of n × D),
    keeping directions whose singular value exceeds `rank_tol` times the largest."""
    windows = np.asarray(windows, dtype=np.float64)
    gram = windows @ windows.transpose(0, 2, 1)  # (N, n, n)
    evals, evecs = np.linalg.eigh(gram)  # ascending
    keep = min(windows.shape[1], d)
    evals, evecs = evals[:, ::-1][:, :keep], evecs[:, :, ::-1][:, :, :keep]
    sv = np.sqrt(np.clip(evals, 0.0, None))  # singular values, descending
    ranks = np.maximum(np.sum(sv > rank_tol * np.maximum(sv[:, :1], 1e-300), axis=1), 1)
    groups = []
    for r in np.unique(ranks):
        pos = np.flatnonzero(ranks == r)
        u_t = np.ascontiguousarray(evecs[pos][:, :, :r].transpose(0, 2, 1))  # contiguous: BLAS path
        rows = u_t @ windows[pos]  # (G, r, D) = Σ Vᵀ
        rows /= np.maximum(sv[pos][:, :r], 1e-300)[:, :, None]
        # the Gram route loses orthogonality as (σ_max / σ_min)²·eps: re-orthonormalise only where
        # that could exceed ~1e-10
        shaky = sv[pos, r - 1] < 1e-3 * sv[pos, 0]
        if shaky.any():
            q, rr = np.linalg.qr(rows[shaky].transpose(0, 2, 1))  # (S, D, r)
            signs = np.sign(np.diagonal(rr, axis1=1, axis2=2))
            signs[signs == 0] = 1.0
            rows[shaky] = (q * signs[:, None, :]).transpose(0, 2, 1)
        groups.append((pos, rows))
    return groups
