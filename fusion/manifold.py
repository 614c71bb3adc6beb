"""Subspaces and their distances for feature-level (manifold) fusion (seed 004 §3.4, spec fusion.md).

`onpe(Z, d)`: orthogonal neighbourhood preserving projections (Kokiopoulou & Saad's ONPP / Liu et
al.'s ONPE: NPE weights + orthogonal basis), following the spec's steps: centre, PCA pre-step,
NPE reconstruction weights on k nearest neighbours, orthogonal iteration in the maximisation form.
`geodesic_distance(A, B)`: the Grassmann distance ‖θ‖₂ from the principal angles θ.
`UtteranceSubspaces` holds one basis per utterance as coefficients on its own window embeddings
(basisᵀ = C·W), so the D-dimensional bases are never formed: the distances need only the windows'
projections onto the class bases (one streamed GEMM) and small r × r eigenproblems.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from core.errors import fail

# singular values below this fraction of the largest are dropped from a window span
RANK_TOL = 1e-6
# below this fraction of the largest, the Gram route's eigenvectors lose accuracy (error ~ eps·(σ₁/σ)²):
# such stacks (and such ONPE inputs) are decomposed by an SVD instead
GRAM_TRUST = 1e-3
# utterances per batched distance computation: bounded temporaries (~8 MB per class set at r = d = 10)
DISTANCE_CHUNK = 4096


def orthonormal_columns(A: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(A)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def nearest_columns(dist: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the k smallest entries, nearest first, ties in column order: exactly
    np.argsort(dist, axis=1, kind="stable")[:, :k], through a partition (2.8× faster at 3,200 × 3,200).
    A row whose k-th and (k+1)-th smallest entries tie is sorted whole: the partition may pick
    either of the tied columns."""
    if k >= dist.shape[1]:
        return np.argsort(dist, axis=1, kind="stable")[:, :k]
    part = np.argpartition(dist, k, axis=1)[:, :k + 1]
    chosen = np.sort(part[:, :k], axis=1)  # column order first, so the stable sort breaks ties by it
    values = np.take_along_axis(dist, chosen, axis=1)
    out = np.take_along_axis(chosen, np.argsort(values, axis=1, kind="stable"), axis=1)
    tied = np.flatnonzero(values.max(axis=1) >= np.take_along_axis(dist, part[:, k:], axis=1)[:, 0])
    out[tied] = np.argsort(dist[tied], axis=1, kind="stable")[:, :k]
    return out


def npe_weights(Y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row of Y: its k nearest neighbours (n, k) and the weights (n, k), summing to 1,
    that best reconstruct it from them (the non-zeros of the NPE matrix W)."""
    n, r = Y.shape
    k = min(k, n - 1)
    sq = np.sum(Y ** 2, axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * Y @ Y.T
    np.fill_diagonal(dist, np.inf)
    neighbours = nearest_columns(dist, k)
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


def principal_axes(Zc: np.ndarray, count: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Total variance ‖Zc‖²_F, the `count` largest squared singular values (descending) and their
    right singular vectors (D, count) of the centred rows Zc.

    Through the smaller of the Gram matrices ZcᵀZc and ZcZcᵀ and a partial symmetric
    eigendecomposition (the top `count` pairs only): at 3,200 × 1,792 about 6× faster than an SVD
    of Zc. Squaring costs accuracy in the small singular values, so when the kept ones span more
    than 1/GRAM_TRUST the SVD decides, as in span_coefficients."""
    n, D = Zc.shape
    count = min(count, n, D)
    total = float(np.einsum("ij,ij->", Zc, Zc))
    small_side = min(n, D)
    gram = Zc.T @ Zc if D <= n else Zc @ Zc.T
    vals, vecs = scipy.linalg.eigh(gram, subset_by_index=[small_side - count, small_side - 1])
    vals, vecs = np.clip(vals[::-1], 0.0, None), vecs[:, ::-1]
    sv = np.sqrt(vals)
    if total > 0 and sv[-1] >= GRAM_TRUST * sv[0]:
        axes = vecs if D <= n else (Zc.T @ vecs) / sv
        return total, vals, axes
    _, s, vt = np.linalg.svd(Zc, full_matrices=False)
    return total, s[:count] ** 2, vt[:count].T


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
    cap = min(n - 1, D, pca_max)
    total, var, axes = principal_axes(Zc, max(d, cap))
    if total <= 0:
        fail("onpe: all samples are identical")
    explained = np.cumsum(var) / total
    r = int(np.searchsorted(explained, pca_ratio - 1e-12) + 1)
    r = max(d, min(r, cap))
    V = axes[:, :r]  # (D, r)
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


def span_coefficients(X: np.ndarray, dmax: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For stacked window sets X (G, n, D): orthonormal bases of their spans (rank r ≤ min(n, dmax))
    as coefficients C (G', r, n) with basisᵀ = C·X, grouped by r: [(positions in the stack, C)].

    Through the n × n Gram matrices (an eigendecomposition per set instead of an SVD of n × D);
    sets whose kept singular values span more than 1/GRAM_TRUST go through an SVD of X instead."""
    G, n, _ = X.shape
    keep = min(n, dmax)
    evals, evecs = np.linalg.eigh(X @ X.transpose(0, 2, 1))  # ascending
    sv = np.sqrt(np.clip(evals[:, ::-1][:, :keep], 0.0, None))  # descending
    U = evecs[:, :, ::-1][:, :, :keep]  # (G, n, keep)
    shaky = np.flatnonzero(sv[:, keep - 1] < GRAM_TRUST * sv[:, 0])
    if len(shaky):
        u, s, _ = np.linalg.svd(X[shaky], full_matrices=False)
        U[shaky], sv[shaky] = u[:, :, :keep], s[:, :keep]
    ranks = np.maximum(np.sum(sv > RANK_TOL * np.maximum(sv[:, :1], 1e-300), axis=1), 1)
    groups = []
    for r in np.unique(ranks):
        pos = np.flatnonzero(ranks == r)
        C = U[pos][:, :, :r].transpose(0, 2, 1) / np.maximum(sv[pos][:, :r], 1e-300)[:, :, None]
        groups.append((pos, np.ascontiguousarray(C)))
    return groups


@dataclass
class SubspaceGroup:
    """Bases of utterances `index` (G,), all of rank r: basis_gᵀ = coef[g] @ W[rows[g]] (coef (G, r, m),
    rows (G, m) into the split's window rows) or, when `explicit` is given, explicit[g] (r, D)."""

    index: np.ndarray
    coef: np.ndarray | None = None
    rows: np.ndarray | None = None
    explicit: np.ndarray | None = None


@dataclass
class UtteranceSubspaces:
    n: int
    groups: list[SubspaceGroup] = field(default_factory=list)


def class_columns(class_sets: list[list[np.ndarray]]) -> tuple[np.ndarray, list[list[slice]]]:
    """All class bases side by side (D, total) and, per set and class, its columns."""
    blocks, slices, at = [], [], 0
    for classes in class_sets:
        per = []
        for S in classes:
            blocks.append(S)
            per.append(slice(at, at + S.shape[1]))
            at += S.shape[1]
        slices.append(per)
    return np.concatenate(blocks, axis=1), slices


def grouped_distances(M: np.ndarray, widths: list[int]) -> np.ndarray:
    """Geodesic distances (G, C) from the products M (G, r, Σ b_c) = basisᵀ·[S_1 … S_C] of rank-r
    utterance bases with C class bases of widths b_c.

    The principal angles are arccos of the singular values of each (r × b_c) block; their squares
    are the eigenvalues of the r × r block·blockᵀ, of which the largest min(r, b_c) count."""
    G, r, _ = M.shape
    edges = np.concatenate([[0], np.cumsum(widths)])
    blocks = np.zeros((G, len(widths), r, max(widths)))
    for c, b in enumerate(widths):
        blocks[:, c, :, :b] = M[:, :, edges[c]:edges[c + 1]]  # zero columns leave block·blockᵀ unchanged
    if r == 1:
        cos2 = np.sum(blocks ** 2, axis=3)
    elif r == 2:
        # closed form of the 2 × 2 symmetric eigenvalues: no per-matrix LAPACK call
        a, b, c = (np.sum(blocks[:, :, i] * blocks[:, :, j], axis=2) for i, j in ((0, 0), (0, 1), (1, 1)))
        half, spread = (a + c) / 2, np.hypot((a - c) / 2, b)
        cos2 = np.stack([half + spread, half - spread], axis=2)
    else:
        grams = blocks @ blocks.transpose(0, 1, 3, 2)
        cos2 = np.linalg.eigvalsh(grams)[..., ::-1]  # (G, C, r), descending
    cos2 = np.clip(cos2, 0.0, 1.0)
    theta = np.arccos(np.sqrt(cos2))
    counted = np.arange(r)[None, None, :] < np.minimum(r, np.asarray(widths))[None, :, None]
    return np.sqrt(np.sum(np.where(counted, theta, 0.0) ** 2, axis=2))


def subspace_distances(subspaces: UtteranceSubspaces, projections: np.ndarray | None,
                       class_sets: list[list[np.ndarray]], threads: int = 1) -> list[np.ndarray]:
    """Per class set, (N, C) geodesic distances of every utterance basis to each class basis, from
    `projections` = W·[all class bases] (the split's window rows times class_columns(class_sets)).
    Chunks of DISTANCE_CHUNK utterances run on `threads` threads (numpy's batched eigvalsh and
    matmul release the GIL; each chunk writes its own rows)."""
    S_all, slices = class_columns(class_sets)
    out = [np.empty((subspaces.n, len(classes))) for classes in class_sets]

    def one_chunk(g: SubspaceGroup, part: slice) -> None:
        if g.explicit is not None:
            products = g.explicit[part] @ S_all  # (G, r, total)
        else:
            products = g.coef[part] @ projections[g.rows[part]]  # (G, r, m) @ (G, m, total)
        for k, per in enumerate(slices):
            M = products[:, :, per[0].start:per[-1].stop]
            out[k][g.index[part]] = grouped_distances(M, [sl.stop - sl.start for sl in per])

    chunks = [(g, slice(start, start + DISTANCE_CHUNK)) for g in subspaces.groups
              for start in range(0, len(g.index), DISTANCE_CHUNK)]
    with threadpool_limits(1), ThreadPoolExecutor(max(1, threads)) as pool:
        for done in [pool.submit(one_chunk, g, part) for g, part in chunks]:
            done.result()
    return out


def project(X: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """X @ basis for many rows X (m, D) and few columns basis (D, k), computed as (basisᵀ·Xᵀ)ᵀ:
    OpenBLAS runs the product with the long dimension last 1.3× faster at this shape (eval.bench)."""
    return (basis.T @ X.T).T


def stream_blocks(offsets: np.ndarray, max_rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive utterance ranges [u0, u1) whose windows number at most `max_rows` (or one utterance)."""
    u0, n = 0, len(offsets) - 1
    while u0 < n:
        u1 = int(np.searchsorted(offsets, offsets[u0] + max_rows, side="right")) - 1
        u1 = max(u1, u0 + 1)
        yield u0, u1
        u0 = u1

