"""Benchmark: batched feature-level fusion against a per-utterance loop.

    python -m fusion.bench_manifold [--utterances 79490] [--dim 768] [--loop_sample 1000]

Synthetic data of the real test set's size: 79,490 utterances with 1–8 window embeddings each
(3 s windows every 1 s of 3–10 s utterances), three 256-d members (768-d), 7 class subspaces of
dimension 10. Times the kit's batched path (spans by SVD grouped by window count, stacked SVDs of
the products with each class basis) and a per-utterance, per-class loop on a sample, and prints
both and their ratio measured in this one run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from core.labels import KNOWN_CLASSES, NUM_KNOWN
from fusion.manifold import geodesic_distance, orthonormal_columns
from fusion.manifold_fusion import FeatureFusionConfig, manifold_distances, window_subspaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=79490)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--loop_sample", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, size=args.utterances)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    windows = rng.standard_normal((int(offsets[-1]), args.dim)).astype(np.float32)
    classes = {c: orthonormal_columns(rng.standard_normal((args.dim, args.d))) for c in KNOWN_CLASSES}
    cfg = FeatureFusionConfig(d=args.d)

    t0 = time.perf_counter()
    bases = window_subspaces(windows, offsets, cfg, include_mean=True)
    t1 = time.perf_counter()
    batched = manifold_distances(bases, classes)
    t2 = time.perf_counter()

    sample = rng.choice(args.utterances, size=min(args.loop_sample, args.utterances), replace=False)
    t3 = time.perf_counter()
    looped = np.empty((len(sample), NUM_KNOWN))
    for row, i in enumerate(sample):
        W = windows[offsets[i]:offsets[i + 1]].astype(np.float64)
        _, s, vt = np.linalg.svd(W, full_matrices=False)
        rank = int(np.sum(s[: args.d] > 1e-8 * s[0])) or 1
        basis = vt[:rank].T
        for c in KNOWN_CLASSES:
            looped[row, c] = geodesic_distance(basis, classes[c])
    t4 = time.perf_counter()
    err = float(np.max(np.abs(looped - batched[sample])))
    batched_s = t2 - t0
    loop_s = (t4 - t3) * args.utterances / len(sample)
    print(f"utterances {args.utterances}, windows {int(offsets[-1])}, dim {args.dim}, 7 classes, d {args.d}")
    print(f"batched: {batched_s:.2f} s (subspaces {t1 - t0:.2f} s, distances {t2 - t1:.2f} s)")
    print(f"per-utterance loop: {t4 - t3:.2f} s for {len(sample)} utterances -> {loop_s:.1f} s extrapolated")
    print(f"speed-up {loop_s / batched_s:.1f}x; max |difference| on the sample {err:.2e}")


if __name__ == "__main__":
    main()
