"""Fusion maths against independent oracles (scipy, literal re-implementations)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from fusion.calibrate import choose_tau, decide_labels
from fusion.config import FusionConfig
from fusion.logit_fusion import augmented_softmax, label_fusion, score_fusion, softmax
from fusion.manifold import geodesic_distance, nearest_columns, onpe, orthonormal_columns, principal_axes
from fusion.manifold_fusion import (
    FeatureFusionConfig,
    class_subspaces,
    distance_scores,
    manifold_distances,
    window_subspaces,
)
from fusion.members import SplitScores
from fusion.openmax import fit_openmax, openmax_scores
from fusion.scorers import FusionContext, build_scorers


def build_methods(data, systems, cfg):
    return build_scorers(FusionContext(data, systems, cfg))


class FixedScores:
    """A scorer over given logits, for the threshold rules."""
    unknown_column = False

    def __init__(self, logits):
        self.logits = logits

    def scores(self, split, held_out=None):
        return softmax(np.delete(self.logits, [held_out], axis=1) if held_out is not None else self.logits)


def random_basis(rng, D, d):
    return orthonormal_columns(rng.standard_normal((D, d)))


@pytest.mark.parametrize("da, db", [(1, 1), (3, 5), (10, 10), (7, 2), (4, 9)])
def test_geodesic_distance_equals_scipy(da, db):
    rng = np.random.default_rng(da * 10 + db)
    for _ in range(5):
        A, B = random_basis(rng, 40, da), random_basis(rng, 40, db)
        assert geodesic_distance(A, B) == pytest.approx(np.linalg.norm(scipy.linalg.subspace_angles(A, B)), abs=1e-6)
    A = random_basis(rng, 40, da)
    near = orthonormal_columns(A + 1e-6 * rng.standard_normal(A.shape))
    assert geodesic_distance(A, near) == pytest.approx(np.linalg.norm(scipy.linalg.subspace_angles(A, near)), abs=1e-6)


def literal_onpe(Z, d, k=5, pca_ratio=0.99, pca_max=128, alpha=1e-3):
    """The spec's steps one by one, with loops and explicit matrices (slow reference)."""
    n, D = Z.shape
    Zc = Z - Z.mean(axis=0)
    U, s, Vt = np.linalg.svd(Zc, full_matrices=False)
    total = np.sum(s ** 2)
    r = 1
    while np.sum(s[:r] ** 2) / total < pca_ratio:
        r += 1
    r = max(d, min(r, n - 1, D, pca_max))
    V = Vt[:r].T
    Y = Zc @ V
    W = np.zeros((n, n))
    for i in range(n):
        dists = [(np.sum((Y[j] - Y[i]) ** 2), j) for j in range(n) if j != i]
        nbrs = [j for _, j in sorted(dists)[:k]]
        G = np.array([[np.dot(Y[a] - Y[i], Y[b] - Y[i]) for b in nbrs] for a in nbrs])
        G += (1e-3 if k > r else 1e-12) * np.trace(G) * np.eye(k)
        w = np.linalg.solve(G, np.ones(k))
        for a, j in enumerate(nbrs):
            W[i, j] = w[a] / w.sum()
    M = (np.eye(n) - W).T @ (np.eye(n) - W)
    S = Y.T @ Y
    T = Y.T @ M @ Y
    T = T + alpha * np.trace(T) / r * np.eye(r)
    Ti = np.linalg.inv(T)
    cols = []
    for step in range(d):
        if step == 0:
            A = Ti @ S
        else:
            P = np.column_stack(cols)
            A = (np.eye(r) - Ti @ P @ np.linalg.inv(P.T @ Ti @ P) @ P.T) @ Ti @ S
        vals, vecs = np.linalg.eig(A)
        v = np.real(vecs[:, np.argmax(np.real(vals))])
        cols.append(v / np.linalg.norm(v))
    B = V @ np.column_stack(cols)
    return B / np.linalg.norm(B, axis=0)


def noisy_patch(rng, n=200, D=64, dim=4, noise=0.01):
    basis = random_basis(rng, D, dim)
    Z = (rng.standard_normal((n, dim)) * np.arange(dim + 1, 1, -1)) @ basis.T + noise * rng.standard_normal((n, D))
    return Z + rng.standard_normal(D), basis


def test_onpe_orthonormal_recovers_patch_and_ignores_row_order():
    rng = np.random.default_rng(0)
    Z, basis = noisy_patch(rng)
    B = onpe(Z, 4)
    assert B.shape == (64, 4)
    np.testing.assert_allclose(B.T @ B, np.eye(4), atol=1e-6)
    assert np.max(scipy.linalg.subspace_angles(B, basis)) < 0.05
    B2 = onpe(Z[rng.permutation(len(Z))], 4)
    assert geodesic_distance(B, B2) < 1e-6


@pytest.mark.parametrize("n, D", [(60, 30), (25, 80)])  # PCA through ZᵀZ, and through ZZᵀ
def test_onpe_matches_literal_reference(n, D):
    rng = np.random.default_rng(1)
    Z, _ = noisy_patch(rng, n=n, D=D, dim=3, noise=0.3)
    ours, ref = onpe(Z, 3), literal_onpe(Z, 3)
    assert geodesic_distance(ours, orthonormal_columns(ref)) < 1e-6
    np.testing.assert_allclose(np.abs(np.sum(ours * ref, axis=0)), 1.0, atol=1e-6)  # same columns up to sign


@pytest.mark.parametrize("n, D, spread", [(300, 40, 10.0), (30, 200, 10.0), (300, 40, 1e8), (30, 200, 1e8)])
def test_principal_axes_against_lapack_svd(n, D, spread):
    """Both Gram sides, and singular values spanning 10⁸ (beyond GRAM_TRUST: the SVD route)."""
    rng = np.random.default_rng(n + D)
    rank = min(n, D) // 2
    scales = np.geomspace(spread, 1.0, rank)
    Zc = (rng.standard_normal((n, rank)) * scales) @ random_basis(rng, D, rank).T
    Zc -= Zc.mean(axis=0)
    _, s, vt = np.linalg.svd(Zc, full_matrices=False)
    total, var, axes = principal_axes(Zc, 12)
    assert total == pytest.approx(np.sum(s ** 2), rel=1e-12)
    np.testing.assert_allclose(var, s[:12] ** 2, rtol=1e-9)
    # each axis is the SVD's up to sign: |cos| = 1
    np.testing.assert_allclose(np.abs(np.sum(axes * vt[:12].T, axis=0)), 1.0, atol=1e-9)
    np.testing.assert_allclose(axes.T @ axes, np.eye(12), atol=1e-9)


def test_nearest_columns_equals_stable_argsort():
    """Random rows, and small integer rows full of ties (at the k-th place too)."""
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(2, 40))
        k = int(rng.integers(1, n + 1))
        dist = rng.integers(0, 4, (n, n)).astype(float) if trial % 2 else rng.standard_normal((n, n))
        np.fill_diagonal(dist, np.inf)
        np.testing.assert_array_equal(nearest_columns(dist, k), np.argsort(dist, axis=1, kind="stable")[:, :k])


def scipy_utterance_basis(Wi, cfg, include_mean):
    if include_mean or len(Wi) == 1:
        return scipy.linalg.orth(Wi.T, rcond=1e-6)[:, :cfg.d] if len(Wi) > 1 else (Wi.T / np.linalg.norm(Wi))
    if np.allclose(Wi, Wi[0], rtol=0, atol=1e-12):
        return Wi[:1].T / np.linalg.norm(Wi[0])
    if len(Wi) >= cfg.k + 2:
        return onpe(Wi, cfg.d, cfg.k)
    return scipy.linalg.orth((Wi - Wi.mean(0)).T, rcond=1e-6)[:, :cfg.d]  # the kit's rank tolerance


def awkward_windows(rng, counts, D, class_basis):
    """Window sets that exercise every path: random, repeated (rank 1), nearly parallel (the SVD
    route), and lying inside a class subspace (angles 0)."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    windows = rng.standard_normal((offsets[-1], D))
    for i, n in enumerate(counts):
        rows = slice(offsets[i], offsets[i + 1])
        kind = i % 4
        if kind == 1:
            windows[rows] = windows[offsets[i]]
        elif kind == 2 and n > 1:
            windows[rows] = windows[offsets[i]] + 1e-5 * rng.standard_normal((n, D))
        elif kind == 3:
            windows[rows] = rng.standard_normal((n, class_basis.shape[1])) @ class_basis.T
    return windows, offsets


@pytest.mark.parametrize("block_bytes", [64 << 20, 3000])  # one block, and a block per few utterances
def test_batched_manifold_fusion_matches_scipy_per_utterance(monkeypatch, block_bytes):
    import fusion.manifold_fusion as mf

    monkeypatch.setattr(mf, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(2)
    D, cfg = 48, FeatureFusionConfig(d=4, k=3)
    labels = np.repeat(np.arange(7), 12)
    labels[labels == 6] = np.r_[6, 6, np.full(10, 5)]  # class 6: two utterances, a 1-d subspace
    train = rng.standard_normal((len(labels), D)) + 3 * np.eye(7, D)[labels]
    counts = rng.integers(1, 9, size=48)
    for include_mean in (True, False):
        classes = class_subspaces(train, labels, cfg, include_mean)
        windows, offsets = awkward_windows(rng, counts, D, classes[0])
        bases = window_subspaces(windows, offsets, cfg, include_mean)
        batched = manifold_distances(bases, windows, offsets, classes)
        for i in range(len(counts)):
            U = scipy_utterance_basis(windows[offsets[i]:offsets[i + 1]], cfg, include_mean)
            for c in range(7):
                expected = np.linalg.norm(scipy.linalg.subspace_angles(U, classes[c]))
                assert batched[i, c] == pytest.approx(expected, abs=1e-6), (include_mean, i, c)


def test_fusion_reads_window_exports_in_blocks_with_the_same_distances(tmp_path, monkeypatch):
    """Window embeddings read from the members' .npy exports block by block (aligned by position)
    give the distances of the same windows held in memory."""
    import fusion.manifold_fusion as mf
    from core.stage_files import NpyRows
    from fusion.members import align_windows

    rng = np.random.default_rng(3)
    counts_a = rng.integers(1, 6, size=30)
    counts_b = np.maximum(counts_a - rng.integers(0, 2, size=30), 1)  # member b: a window fewer at times
    members = {}
    for name, counts, D in (("a", counts_a, 12), ("b", counts_b, 20)):
        offsets = np.concatenate([[0], np.cumsum(counts)])
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((offsets[-1], D)).astype(np.float32))
        members[name] = type("Export", (), {"window_embeddings": NpyRows(tmp_path / f"{name}.npy"),
                                            "window_offsets": offsets})()
    rows, offsets = align_windows(members)
    in_memory = {s: np.load(tmp_path / f"{s}.npy")[r.index] for s, r in rows.items()}
    cfg = FeatureFusionConfig(d=3, k=3)
    classes = {c: orthonormal_columns(rng.standard_normal((32, 3))) for c in range(7)}
    expected_source = mf.WindowSource(in_memory, offsets, True)
    expected = manifold_distances(window_subspaces(expected_source, offsets, cfg, True), expected_source, offsets, classes)
    monkeypatch.setattr(mf, "BLOCK_BYTES", 2000)
    streamed_source = mf.WindowSource(rows, offsets, True)
    streamed = manifold_distances(window_subspaces(streamed_source, offsets, cfg, True), streamed_source, offsets,
                                  classes)
    np.testing.assert_allclose(streamed, expected, atol=1e-12)


def test_distance_scores_eq_2_to_4():
    d = np.array([[1.0, 2.0, 4.0]])
    s = -d
    expected = (s - s.min()) / np.sum(s - s.min())
    np.testing.assert_allclose(distance_scores(d, "normalised"), expected)
    np.testing.assert_allclose(distance_scores(d, "softmax", 0.5), softmax(s / 0.5))


def test_score_fusion_and_inference_augmentation():
    logits = {"a": np.array([[30.0, 0, -30, 0, 0, 0, 0]]), "b": np.array([[0.0, 2, 0, 0, 0, 0, 0]])}
    plain = score_fusion(logits, None, False)
    np.testing.assert_allclose(plain, (softmax(logits["a"]) + softmax(logits["b"])) / 2)
    aug = augmented_softmax(logits["a"], 20, 0.1)
    np.testing.assert_allclose(aug, softmax(np.array([[2.0, 0, -2, 0, 0, 0, 0]])))
    weighted = score_fusion(logits, {"a": 3.0, "b": 1.0}, True)
    np.testing.assert_allclose(weighted, 0.75 * aug + 0.25 * augmented_softmax(logits["b"], 20, 0.1))


def test_label_fusion_mode_and_tie_break():
    members = {"rawnet2": np.array([1, 2, 3, 7]), "se_res2net50": np.array([1, 4, 5, 7]),
               "hubert_ft": np.array([2, 4, 6, 0])}
    fused = label_fusion(members, "hubert_ft")
    np.testing.assert_array_equal(fused, [1, 4, 6, 7])
    np.testing.assert_array_equal(label_fusion(members, "rawnet2"), [1, 4, 3, 7])


def test_label_fusion_tie_break_finds_a_seed_ensembles_members():
    """Members of a seed ensemble are `<system>_seed<N>`: the tie-break list names systems, so the
    first member of the most preferred system decides, not merely the first member."""
    from fusion.scorers import LabelFusion

    systems = ["rawnet2_seed4", "lfcc_resnet18_seed4", "rawnet2_seed5", "lfcc_resnet18_seed5"]
    scorer = LabelFusion(FusionContext({}, systems, FusionConfig()))
    scorer.fit()
    assert scorer.tie_break == "lfcc_resnet18_seed4"  # the default list prefers lfcc_resnet18 to rawnet2
    cfg = FusionConfig()
    cfg.label.tie_break = ["rawnet2"]
    scorer = LabelFusion(FusionContext({}, ["lfcc_resnet18", "rawnet2"], cfg))
    scorer.fit()
    assert scorer.tie_break == "rawnet2"


def test_openmax_sends_far_points_to_unknown():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(7), 30)
    logits = 8 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
    model = fit_openmax(logits, labels)
    near = openmax_scores(model, 8 * np.eye(7)[[2]] + 0.1)
    far = openmax_scores(model, np.array([[60.0, 55, -40, 50, -30, 45, 0]]))
    assert near.argmax() == 2
    assert far.argmax() == 7 and decide_labels(far, 0.0, unknown_column=True)[0] == 7


def fake_members(rng):
    def split(n_per, windows=True):
        labels = np.repeat(np.arange(7), n_per)
        emb = {s: rng.standard_normal((len(labels), 16)) + 4 * np.eye(7, 16)[labels] for s in ("a", "b")}
        logits = {s: 5 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7)) for s in ("a", "b")}
        offsets = np.arange(len(labels) + 1) * 2
        win = {s: np.repeat(emb[s], 2, axis=0) + 0.1 * rng.standard_normal((2 * len(labels), 16)) for s in ("a", "b")}
        return SplitScores([f"u{i}" for i in range(len(labels))], labels, logits, emb,
                           win if windows else {}, offsets if windows else None)
    return {"train": split(12, windows=False), "dev": split(6), "test": split(4)}


def test_leave_one_out_never_sees_the_held_out_class():
    rng = np.random.default_rng(4)
    data = fake_members(rng)
    cfg = FusionConfig()
    cfg.feature.d, cfg.feature.k = 3, 3
    before = {m.name: m for m in build_methods(data, ["a", "b"], cfg)}
    c = 4
    held = {name: m.scores("dev", c) for name, m in before.items() if "devstats" not in name and name != "label"}
    changed = data["train"]
    sel = changed.labels == c
    for s in ("a", "b"):
        changed.embeddings[s][sel] = rng.standard_normal((sel.sum(), 16)) * 50
        changed.logits[s][sel] = rng.standard_normal((sel.sum(), 7)) * 50
    after = {m.name: m for m in build_methods(data, ["a", "b"], cfg)}
    for name, scores in held.items():
        np.testing.assert_allclose(after[name].scores("dev", c), scores, err_msg=name)
    # ... while with the class kept, the statistics do depend on it
    assert not np.allclose(after["feature"].scores("dev", None), before["feature"].scores("dev", None))


def test_leave_one_out_threshold_beats_accepting_everything():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(7), 20)
    logits = 6 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
    m = FixedScores(logits)
    th = choose_tau(m, labels, "leave-one-out")
    assert 0.0 < th.tau < 1.0
    assert th.curve_tau[0] == -np.inf  # accepting everything: unknowns all misattributed
    assert th.curve_f1[th.curve_tau == th.tau][0] > th.curve_f1[0] + 0.05
    q = choose_tau(m, labels, "quantile", q=0.1)
    assert np.mean(softmax(logits).max(1) < q.tau) == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("held_out,unknown_column", [(None, False), (3, False), (None, True), (5, True)])
def test_f1_curve_equals_deciding_and_scoring_each_tau(held_out, unknown_column):
    """The counting curve against its definition, decide_labels then open_set_scores at every τ:
    equal bit for bit, with scores rounded so that many rows tie with each other and with τ."""
    from core.labels import UNKNOWN
    from core.metrics import open_set_scores
    from fusion.calibrate import f1_curve, known_max, tau_grid

    rng = np.random.default_rng(11)
    n, columns = 3000, 6 + unknown_column if held_out is not None else 7 + unknown_column
    scores = np.round(rng.random((n, columns)), 2)
    truth = rng.integers(0, 8, n)
    truth[:40] = 2  # a class with few predictions, so that its precision hits 0 / 0 at high τ
    if held_out is not None:
        truth = np.where(truth == held_out, UNKNOWN, truth)
    grid = np.unique(np.concatenate([tau_grid(known_max(scores, unknown_column)), scores[:50, 0]]))
    expected = [open_set_scores(truth, decide_labels(scores, t, held_out, unknown_column))["f1"] for t in grid]
    np.testing.assert_array_equal(f1_curve(scores, truth, grid, held_out, unknown_column), expected)
    assert len(set(expected)) > 20  # the curve moves: the check compares more than a constant


def test_openmax_batch_equals_row_by_row():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(7), 25)
    logits = 6 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
    model = fit_openmax(logits, labels)
    batch = rng.standard_normal((9, 7)) * 4
    rows = np.concatenate([openmax_scores(model, batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(openmax_scores(model, batch), rows, atol=1e-12)
    # clean training-like utterances are mostly kept as known
    assert np.mean(openmax_scores(model, logits).argmax(1) == 7) < 0.5


def test_fusion_refuses_splits_scored_with_two_checkpoints(tmp_path):
    """A member whose dev and test scores come from two trainings is refused, naming both
    checkpoints; the same checkpoint spelt relative or absolute (an earlier kit's stamp, a new
    test set's link) is one; a split scored outside the kit (no stamp) is not judged."""
    from core.errors import KitError
    from core.scores import write_scores
    from core.stamps import write_stamp
    from fusion.members import load_members

    exp, rng = tmp_path / "exp", np.random.default_rng(0)
    ids, labels = [f"u{i}" for i in range(14)], np.arange(14) % 7

    def export(split, checkpoint):
        folder = exp / "sys" / "scores" / split
        write_scores(folder, ids, labels, rng.standard_normal((14, 7)), rng.standard_normal((14, 4)))
        if checkpoint is not None:
            write_stamp(folder, {"checkpoint": {"path": checkpoint, "size": 100, "mtime_ns": 5}})

    export("train", "ckpt/CKPT+1/model.ckpt")
    export("dev", str(exp / "sys" / "ckpt" / "CKPT+1" / "model.ckpt"))
    export("test", None)
    assert set(load_members(exp, ["sys"])) == {"train", "dev", "test"}
    export("test", "ckpt/CKPT+2/model.ckpt")
    with pytest.raises(KitError, match=r"train was scored with CKPT\+1/model.ckpt and test with CKPT\+2/model.ckpt"):
        load_members(exp, ["sys"])
    assert set(load_members(exp, ["sys"], splits=("train", "dev"))) == {"train", "dev"}
