"""Post-hoc unknown-class scores (fusion/ood_scores.py) against scipy, sklearn and hand-worked
cases, their leave-one-class-out behaviour, and the scorers through the fusion stage and `predict`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import yaml
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors

import fusion.ood_scores as ood
from core.errors import KitError
from core.label_files import read_label_file
from core.labels import NO_LABEL, UNKNOWN, kept_classes
from core.scores import SystemScores, write_scores
from fusion.config import FusionConfig, load_fusion_config
from fusion.members import SplitScores
from fusion.run import run_fusion
from fusion.scorers import FusionContext, build_scorer, build_scorers

from .conftest import ROOT

NEW_KINDS = ("maxlogit", "energy", "gen", "knn", "nsd", "mahalanobis", "vim")
# GEN's authors' score on fixed logits; fixtures/gen_reference/README.md says how it was produced
GEN_REFERENCE = Path(__file__).parent / "fixtures" / "gen_reference" / "gen_reference.npz"


# ----------------------------------------------------------------------------- the score matrix

def test_score_matrix_keeps_argmax_and_puts_the_score_at_the_top():
    logits = np.array([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]])
    known = np.array([-7.0, 4.0])
    m = ood.score_matrix(logits, known)
    np.testing.assert_allclose(m, [[-9.0, -7.0, -8.0], [4.0, 4.0, 2.5]])
    np.testing.assert_array_equal(m.argmax(1), logits.argmax(1))  # a tie keeps the first, as argmax does
    np.testing.assert_allclose(scipy.special.softmax(m, axis=1), scipy.special.softmax(logits, axis=1))
    # a score so large that the logit gaps vanish in rounding: the argmax column still wins strictly
    huge = ood.score_matrix(np.array([[0.0, 1e-9, 0.5]]), np.array([1e20]))
    assert huge.argmax() == 2 and huge.max() == 1e20 and np.sum(huge == 1e20) == 1


# ----------------------------------------------------------------------------- logit scores

def test_max_logit_and_energy_hand_worked_and_against_scipy():
    logits = np.array([[0.0, np.log(3.0)], [2.0, -1.0]])
    np.testing.assert_allclose(ood.max_logit(logits), [np.log(3.0), 2.0])
    np.testing.assert_allclose(ood.energy(logits)[0], np.log(4.0))  # log(1 + 3)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((50, 7)) * 300  # overflows a naive exp
    np.testing.assert_allclose(ood.energy(big), scipy.special.logsumexp(big, axis=1), rtol=1e-12)


# ----------------------------------------------------------------------------- GEN

def test_gen_hand_worked():
    logits = np.log([[2.0, 1.0, 1.0]])  # p = (1/2, 1/4, 1/4)
    # γ = 1: Σ p(1 − p) = 1/4 + 3/16 + 3/16 = 5/8; the top one alone: 1/4; the top two: 7/16
    assert ood.gen(logits, 1.0)[0] == pytest.approx(-5 / 8)
    assert ood.gen(logits, 1.0, top=1)[0] == pytest.approx(-1 / 4)
    assert ood.gen(logits, 1.0, top=2)[0] == pytest.approx(-7 / 16)
    # γ = 0.5: √(1/2 · 1/2) + 2 √(1/4 · 3/4) = 1/2 + √3/2
    assert ood.gen(logits, 0.5)[0] == pytest.approx(-(0.5 + np.sqrt(3.0) / 2))
    # the default γ = 0.1: (1/4)^0.1 + 2 (3/16)^0.1; a top above the 3 classes keeps all 3
    expected = -(0.25 ** 0.1 + 2 * 0.1875 ** 0.1)
    assert ood.gen(logits, 0.1)[0] == pytest.approx(expected, rel=1e-12)
    assert ood.gen(logits, 0.1, top=10)[0] == pytest.approx(expected, rel=1e-12)
    # higher = more like the known classes: a confident softmax above a flat one
    confident, flat = ood.gen(np.array([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), 0.1)
    assert flat == pytest.approx(-3 * (1 / 3) ** 0.1 * (2 / 3) ** 0.1)
    assert confident > flat
    # saturated rows: the exp never overflows, and p = 1 or an underflowed p = 0 adds 0 (the first
    # row's score is the two (e^-600)^0.1 = e^-60 terms, about −2e-26)
    saturated = ood.gen(np.array([[300.0, -300.0, -300.0], [-1000.0, 1000.0, 0.0]]), 0.1)
    assert np.all(np.isfinite(saturated)) and np.all(saturated <= 0) and saturated[0] > -1e-25


def test_gen_equals_the_authors_code():
    with np.load(GEN_REFERENCE) as ref:
        logits, gammas, tops, expected = ref["logits"], ref["gamma"], ref["top"], ref["scores"]
    assert logits.shape == (45, 7) and list(tops) == [7, 3] and expected.shape == (2, 45)
    for gamma, top, scores in zip(gammas, tops, expected):
        np.testing.assert_allclose(ood.gen(logits, float(gamma), int(top)), scores, rtol=0, atol=1e-10)
    # the (γ 0.5, M 3) case tells the top 3 from all 7
    assert np.abs(ood.gen(logits, 0.5, None) - expected[1]).max() > 0.1


# ----------------------------------------------------------------------------- kNN

def test_knn_hand_worked_angles():
    angles = np.deg2rad([0.0, 10.0, 30.0, 90.0])
    train = 5 * np.column_stack([np.cos(angles), np.sin(angles)])  # lengths do not matter
    query = np.array([[2.0, 0.0]])
    # similarities 1, cos 10°, cos 30°, 0: the 3rd nearest is at 30°
    assert ood.knn_cosine(query, train, 3)[0] == pytest.approx(np.cos(np.deg2rad(30.0)), abs=1e-6)
    assert ood.knn_cosine(query, train, 1)[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(KitError, match="exceeds the 4 training"):
        ood.knn_cosine(query, train, 5)


@pytest.mark.parametrize("k", [1, 10])
def test_knn_equals_sklearn_cosine_neighbours_in_small_chunks(monkeypatch, k):
    rng = np.random.default_rng(k)
    train, query = rng.standard_normal((300, 24)), rng.standard_normal((97, 24))
    monkeypatch.setattr(ood, "CHUNK_ELEMENTS", 1000)  # 3 query rows per chunk: many chunks and a ragged last one
    dist, _ = NearestNeighbors(n_neighbors=k, metric="cosine").fit(train).kneighbors(query)
    np.testing.assert_allclose(ood.knn_cosine(query, train, k), 1.0 - dist[:, k - 1], atol=1e-5)


# ----------------------------------------------------------------------------- NSD

def test_nsd_hand_worked():
    train_emb = np.array([[3.0, 0.0], [0.0, 2.0]])
    train_logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])  # log-sum-exp: log 2, log 4
    query_emb, query_logits = np.array([[1.0, 1.0]]), np.array([[np.log(5.0), 0.0]])  # log 6
    cos = np.sqrt(0.5)  # to either training direction
    expected = (cos * np.log(2.0) + cos * np.log(4.0)) / 2 * np.log(6.0)
    assert ood.nsd(query_emb, query_logits, train_emb, train_logits)[0] == pytest.approx(expected)


# ----------------------------------------------------------------------------- Mahalanobis

def sklearn_mahalanobis(train, labels, classes, query):
    means = {c: train[labels == c].mean(0) for c in classes}
    centred = np.concatenate([train[labels == c] - means[c] for c in classes])
    cov = EmpiricalCovariance(assume_centered=True).fit(centred)  # pooled within-class covariance
    return -np.min([cov.mahalanobis(query - means[c]) for c in classes], axis=0)


# full rank, and 21 utterances in 40 dimensions (covariance of rank 14: the pseudo-inverse matters)
@pytest.mark.parametrize("n_per, D", [(15, 9), (3, 40)])
def test_mahalanobis_equals_sklearn_with_pooled_covariance(monkeypatch, n_per, D):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(7), n_per)
    train = rng.standard_normal((len(labels), D)) @ rng.standard_normal((D, D)) + 4 * np.eye(7, D)[labels]
    query = rng.standard_normal((40, D)) * 3
    classes = np.arange(7)
    monkeypatch.setattr(ood, "CHUNK_ELEMENTS", 50)
    model = ood.fit_class_gaussian(train, labels, classes)
    np.testing.assert_allclose(ood.mahalanobis(model, query), sklearn_mahalanobis(train, labels, classes, query),
                               rtol=1e-8)


def test_mahalanobis_hand_worked():
    # two classes at ±2 on x; within-class spread ±1 on x and ±2 on y → covariance diag(1, 4)
    train = np.array([[1.0, 0], [3, 0], [2, 2], [2, -2], [-1, 0], [-3, 0], [-2, 2], [-2, -2]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    model = ood.fit_class_gaussian(train, labels, np.array([0, 1]))
    np.testing.assert_allclose(model.precision, np.diag([2.0, 0.5]))  # covariance diag(0.5, 2)
    # (3, 2): to class 0, d = (1, 2) → 1·2 + 4·0.5 = 4
    assert ood.mahalanobis(model, np.array([[3.0, 2.0]]))[0] == pytest.approx(-4.0)


# ----------------------------------------------------------------------------- ViM

def test_vim_hand_worked_2d():
    # W = I, b = (−1, −1): the origin u = −W⁺b = (1, 1). Training embeddings about u: (±2, ±0.5),
    # principal direction x (D = 1), residual 0.5 each; logits = emb − 1, max logits 2, .5, 2, −.5
    # → mean 1, α = 1 / 0.5 = 2.
    about_u = np.array([[2.0, 0.5], [-2.0, 0.5], [2.0, -0.5], [-2.0, -0.5]])
    emb = about_u + 1.0
    logits = emb - 1.0
    fit = ood.fit_last_linear(emb, logits)
    np.testing.assert_allclose(fit.weight, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(fit.bias, [-1.0, -1.0], atol=1e-12)
    assert fit.relative_residual < 1e-12 and fit.determined
    model = ood.fit_vim(emb, logits, fit, 1)
    np.testing.assert_allclose(model.origin, [1.0, 1.0], atol=1e-12)
    assert model.alpha == pytest.approx(2.0)
    # query (2, 4): about u (1, 3), residual 3; logits (1, 3)
    score = ood.vim(model, np.array([[2.0, 4.0]]), np.array([[1.0, 3.0]]))[0]
    assert score == pytest.approx(np.log(np.e + np.e ** 3) - 2.0 * 3.0)
    with pytest.raises(KitError, match="vim_dim"):
        ood.fit_vim(emb, logits, fit, 2)


def test_last_layer_fit_finds_the_relu_head():
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((400, 12))
    W, b = rng.standard_normal((7, 12)), rng.standard_normal(7)
    linear = emb @ W.T + b
    name, fit = ood.fit_classifier_input(emb, linear)
    assert name == "embedding" and fit.relative_residual < 1e-10
    name, fit = ood.fit_classifier_input(emb, np.maximum(emb, 0) @ W.T + b)  # LFCC-ResNet18's head
    assert name == "relu(embedding)" and fit.relative_residual < 1e-10
    np.testing.assert_allclose(fit.weight, W, atol=1e-8)
    # fewer utterances than unknowns: exact by construction, flagged
    assert not ood.fit_last_linear(emb[:10], linear[:10]).determined


# ----------------------------------------------------------------------------- scorers, held-out class

def member_split(rng, n_per, D=16, labelled=True, unknown=0):
    labels = np.repeat(np.arange(7), n_per)
    emb = rng.standard_normal((len(labels), D)) + 4 * np.eye(7, D)[labels]
    logits = 5 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
    if unknown:  # far from every class, flat logits
        emb = np.concatenate([emb, rng.standard_normal((unknown, D)) - 4])
        logits = np.concatenate([logits, rng.standard_normal((unknown, 7))])
        labels = np.concatenate([labels, np.full(unknown, UNKNOWN)])
    return labels if labelled else np.full(len(labels), NO_LABEL), logits, emb


def fake_data(rng):
    out = {}
    for split, n_per in (("train", 12), ("dev", 6), ("test", 4)):
        labels, logits, emb = member_split(rng, n_per)
        out[split] = SplitScores([f"{split}{i}" for i in range(len(labels))], labels, {"a": logits}, {"a": emb})
    return out


def scorer(data, kind, cfg=None):
    found = {s.name: s for s in build_scorers(FusionContext(data, ["a"], cfg or FusionConfig()))}
    return found[f"{kind}:a"]


def gen_terms(p: np.ndarray, gamma: float) -> np.ndarray:
    """p^γ (1 − p)^γ entry by entry, written out as a loop."""
    out = np.empty_like(p)
    for i, j in np.ndindex(p.shape):
        out[i, j] = p[i, j] ** gamma * (1.0 - p[i, j]) ** gamma
    return out


def test_held_out_class_is_dropped_everywhere():
    data = fake_data(np.random.default_rng(3))
    c = 2
    kept = kept_classes(c)
    dev_logits, dev_emb = data["dev"].logits["a"], data["dev"].embeddings["a"]
    train = data["train"]
    keep = train.labels != c
    tr_emb, tr_labels = train.embeddings["a"][keep], train.labels[keep]
    oracle = {
        "maxlogit": dev_logits[:, kept].max(1),
        "energy": scipy.special.logsumexp(dev_logits[:, kept], axis=1),
        "gen": -np.sum(gen_terms(scipy.special.softmax(dev_logits[:, kept], axis=1), 0.1), axis=1),
        "knn": 1.0 - NearestNeighbors(n_neighbors=10, metric="cosine").fit(tr_emb).kneighbors(dev_emb)[0][:, 9],
        "mahalanobis": sklearn_mahalanobis(tr_emb, tr_labels, kept, dev_emb),
    }
    for kind, expected in oracle.items():
        m = scorer(data, kind)
        s = m.scores("dev", c)
        assert s.shape == (len(dev_emb), 6), kind
        np.testing.assert_allclose(s.max(1), expected, rtol=1e-5, atol=1e-5, err_msg=kind)
        np.testing.assert_array_equal(s.argmax(1), dev_logits[:, kept].argmax(1), err_msg=kind)
    # GEN reads both of its settings; a top M of 7 is capped to the 6 kept classes
    cfg = FusionConfig()
    cfg.ood.gen_gamma, cfg.ood.gen_top = 0.5, 7
    expected = -np.sum(gen_terms(scipy.special.softmax(dev_logits[:, kept], axis=1), 0.5), axis=1)
    np.testing.assert_allclose(scorer(data, "gen", cfg).scores("dev", c).max(1), expected, rtol=1e-12)
    # NSD and ViM: class c's training utterances and logit column no longer matter at all
    before = {k: scorer(data, k).scores("dev", c) for k in ("nsd", "vim")}
    train.embeddings["a"][~keep] = 100.0
    train.logits["a"][~keep] = np.random.default_rng(4).standard_normal(((~keep).sum(), 7)) * 50
    for kind, scores in before.items():
        np.testing.assert_allclose(scorer(data, kind).scores("dev", c), scores, rtol=1e-9, err_msg=kind)
        assert not np.allclose(scorer(data, kind).scores("dev", None).max(1),
                               scorer(fake_data(np.random.default_rng(3)), kind).scores("dev", None).max(1))


def test_decision_is_argmax_unless_below_tau():
    data = fake_data(np.random.default_rng(5))
    m = scorer(data, "energy")
    th = m.choose_threshold(data["dev"].labels)
    test_logits = data["test"].logits["a"]
    e = scipy.special.logsumexp(test_logits, axis=1)
    expected = np.where(e < th.tau, UNKNOWN, test_logits.argmax(1))
    np.testing.assert_array_equal(m.decide("test", th), expected)
    # quantile rule: q = 5 % of dev rejected
    assert np.mean(m.decide("dev", th) == UNKNOWN) == pytest.approx(0.05, abs=1 / len(data["dev"].labels) + 1e-9)


def test_ood_config_is_strict(tmp_path):
    cfg = load_fusion_config(ROOT / "fusion" / "conf" / "fusion.yaml")
    assert cfg.ood.knn_k == 10 and cfg.ood.vim_dim is None
    assert cfg.ood.gen_gamma == 0.1 and cfg.ood.gen_top is None
    path = tmp_path / "f.yaml"
    for bad, says in (({"knn_k": 0}, "knn_k"), ({"knn": 5}, "unknown key"), ({"knn_k": "ten"}, "knn_k"),
                      ({"vim_dim": 0}, "vim_dim"), ({"gen_gamma": 0}, "gen_gamma"),
                      ({"gen_gamma": 1.5}, "gen_gamma"), ({"gen_gamma": "low"}, "gen_gamma"),
                      ({"gen_top": 0}, "gen_top"), ({"gen_top": 2.5}, "gen_top")):
        path.write_text(yaml.safe_dump({"ood": bad}))
        with pytest.raises(KitError, match=says) as err:
            load_fusion_config(path)
        assert "\n" not in str(err.value), bad
    # the edges of the valid ranges
    path.write_text(yaml.safe_dump({"ood": {"gen_gamma": 1, "gen_top": 1}}))
    edges = load_fusion_config(path).ood
    assert edges.gen_gamma == 1 and edges.gen_top == 1


# ----------------------------------------------------------------------------- the fusion stage and predict

def write_exports(exp, systems=("a", "b")):
    for s in systems:
        for split, n_per, labelled, unknown in (("train", 12, True, 0), ("dev", 6, True, 0), ("test", 4, False, 10)):
            labels, logits, emb = member_split(np.random.default_rng([ord(s), len(split)]), n_per,
                                               labelled=labelled, unknown=unknown)
            ids = [f"{split}_{i:03d}" for i in range(len(labels))]
            windows = split != "train"
            write_scores(exp / s / "scores" / split, ids, labels, logits, emb,
                         emb if windows else None, np.arange(len(ids) + 1) if windows else None)


# two members with the default rule; one with leave-one-out (the fusion methods' folds are tested elsewhere)
@pytest.mark.parametrize("rule, systems", [("quantile", ("a", "b")), ("leave-one-out", ("a",))])
def test_scorers_run_through_the_fusion_stage_and_predict(tmp_path, rule, systems):
    from submit.predict import SystemOutputs, apply_method

    exp = tmp_path / "exp"
    write_exports(exp, systems)
    cfg = FusionConfig()
    cfg.threshold.rule = rule
    cfg.feature.d, cfg.feature.k = 3, 3
    summary = run_fusion(exp, list(systems), cfg)
    for s in systems:
        test = SystemScores(exp / s / "scores" / "test")
        outputs = {s: SystemOutputs(test.logits, test.embeddings, test.window_embeddings, test.window_offsets)}
        for kind in NEW_KINDS:
            name = f"{kind}:{s}"
            info = summary["methods"][name]
            folder = exp / "fusion" / name.replace(":", "__")
            assert json.loads((folder / "tau.json").read_text())["score_kind"] == "shifted_logits"
            pred = read_label_file(folder / "test_pred.txt")
            labels = np.array([pred[u] for u in test.ids])
            scores = np.load(folder / "test_scores.npy")
            # the decision: the member's argmax class unless the score is below τ
            expected = np.where(scores.max(1) < info["tau"], UNKNOWN, test.logits.argmax(1))
            np.testing.assert_array_equal(labels, expected, err_msg=name)
            # predict refits the scorer from the stored exports and restores τ: the same labels and scores
            again, again_scores = apply_method(exp, [s], name, info, outputs, len(test.ids))
            np.testing.assert_array_equal(again, labels, err_msg=name)
            np.testing.assert_allclose(again_scores, scores, rtol=1e-12, err_msg=name)
        # far-away unknowns (the last 10 test utterances) score below the known ones for the embedding scores
        for kind in ("knn", "mahalanobis"):
            s_ = np.load(exp / "fusion" / f"{kind}__{s}" / "test_scores.npy").max(1)
            assert s_[-10:].max() < np.median(s_[:-10]), kind
    if len(systems) > 1:  # the members' joint kNN: predict gives the fusion stage's labels and scores
        tests = {s: SystemScores(exp / s / "scores" / "test") for s in systems}
        outputs = {s: SystemOutputs(t.logits, t.embeddings, t.window_embeddings, t.window_offsets)
                   for s, t in tests.items()}
        pred = read_label_file(exp / "fusion" / "knn" / "test_pred.txt")
        labels = np.array([pred[u] for u in tests["a"].ids])
        scores = np.load(exp / "fusion" / "knn" / "test_scores.npy")
        again, again_scores = apply_method(exp, list(systems), "knn", summary["methods"]["knn"], outputs, len(labels))
        np.testing.assert_array_equal(again, labels)
        np.testing.assert_allclose(again_scores, scores, rtol=1e-12)
        assert scores.max(1)[-10:].max() < np.median(scores.max(1)[:-10])


def test_an_optional_scorer_that_fails_on_a_left_out_class_is_skipped(tmp_path, capsys):
    """Leave-one-out refits every scorer without each fake class in turn. Here the embeddings leave
    the 9-d subspace of the other classes only for class 6: ViM with a 10-d principal space fits on
    all classes but has no residual without class 6, so its row is left out with a message instead
    of the fusion stage failing; with the quantile rule (no folds) the same data give the row."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((16, 7))
    exp = tmp_path / "exp"
    for split, n_per in (("train", 12), ("dev", 6), ("test", 4)):
        labels = np.repeat(np.arange(7), n_per)
        emb = np.zeros((len(labels), 16))
        emb[:, :9] = rng.standard_normal((len(labels), 9)) + 4 * np.eye(7, 9)[labels]
        emb[labels == 6, 9:] = rng.standard_normal((int(np.sum(labels == 6)), 7))
        logits = emb @ weight  # a linear last layer: ViM fits it on the embedding itself
        ids = [f"{split}_{i:03d}" for i in range(len(labels))]
        windows = split != "train"
        write_scores(exp / "a" / "scores" / split, ids, labels if split != "test" else np.full(len(ids), NO_LABEL),
                     logits, emb, emb if windows else None, np.arange(len(ids) + 1) if windows else None)
    for rule, expect_vim in (("quantile", True), ("leave-one-out", False)):
        cfg = FusionConfig()
        cfg.threshold.rule = rule
        cfg.ood.vim_dim = 10
        summary = run_fusion(exp, ["a"], cfg)
        assert ("vim:a" in summary["methods"]) == expect_vim, rule
        assert "softmax:a" in summary["methods"] and "knn:a" in summary["methods"]
    assert "[fuse] vim:a skipped: " in capsys.readouterr().out


def test_joint_knn_equals_sklearn_on_the_normalised_members_side_by_side():
    """`knn` (both members): sklearn's cosine neighbours on each member's L2-normalised embedding
    set side by side (sklearn.preprocessing.normalize, np.hstack), the class from the mean softmax;
    with a held-out class its training utterances and its column leave every part."""
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(5)
    data = fake_data(rng)
    for split, part in data.items():  # member b: another embedding size and scale, its own logits
        labels, logits, emb = member_split(rng, {"train": 12, "dev": 6, "test": 4}[split], D=9)
        part.logits["b"], part.embeddings["b"] = logits, 30.0 * emb
    ctx = FusionContext(data, ["a", "b"], FusionConfig())
    found = {name: build_scorer(ctx, name) for name in ("knn", "knn:a", "knn:b")}
    joint = found["knn"]
    assert joint.score_kind == "shifted_logits" and not joint.class_shares
    side_by_side = {split: np.hstack([normalize(part.embeddings[m]) for m in ("a", "b")])
                    for split, part in data.items()}
    for held_out in (None, 4):
        kept = kept_classes(held_out)
        rows = np.isin(data["train"].labels, kept)
        nn = NearestNeighbors(n_neighbors=10, metric="cosine").fit(side_by_side["train"][rows])
        expected = 1.0 - nn.kneighbors(side_by_side["dev"])[0][:, 9]
        s = joint.scores("dev", held_out)
        assert s.shape == (len(expected), len(kept))
        np.testing.assert_allclose(s.max(1), expected, rtol=1e-5, atol=1e-5)
        mean_softmax = sum(scipy.special.softmax(data["dev"].logits[m][:, kept], axis=1) for m in ("a", "b")) / 2
        np.testing.assert_array_equal(s.argmax(1), mean_softmax.argmax(1))
    # a neighbour near in one member only is not near: the joint score is not either member's
    for m in ("a", "b"):
        assert not np.allclose(joint.scores("dev").max(1), found[f"knn:{m}"].scores("dev").max(1), atol=1e-3)
    # one member: no joint scorer
    with pytest.raises(KitError, match="not available"):
        build_scorer(FusionContext(data, ["a"], FusionConfig()), "knn")
