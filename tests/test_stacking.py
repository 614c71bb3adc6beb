"""Stacked fusion (fusion/stacking.py, the `stack` scorer) against sklearn's own cross-validation
and metric, and the choices it makes on dev alone."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from core.errors import KitError
from core.labels import FAKE_CLASSES
from fusion import stacking
from fusion.config import FusionConfig, load_fusion_config
from fusion.manifold_fusion import concat_embeddings, stratified_folds
from fusion.members import SplitScores
from fusion.scorers import FusionContext, build_scorer
from fusion.stacking import StackConfig, choose_c, leave_class_out_auroc, out_of_fold_proba


def members(rng, n_per=(12, 10, 6), width=16, spread=2.5):
    """Two members' embeddings of 7 classes, one split per entry of n_per (train, dev, test)."""
    out = {}
    for split, n in zip(("train", "dev", "test"), n_per):
        labels = np.repeat(np.arange(7), n)
        emb = {s: rng.standard_normal((len(labels), width)) + spread * np.eye(7, width)[labels] for s in ("a", "b")}
        logits = {s: 3 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7)) for s in ("a", "b")}
        out[split] = SplitScores([f"{split}{i}" for i in range(len(labels))], labels, logits, emb)
    return out


def dev_features(data):
    return concat_embeddings(data["dev"].embeddings, True), data["dev"].labels


def test_out_of_fold_probabilities_equal_sklearns_cross_val_predict():
    data = members(np.random.default_rng(0))
    X, y = dev_features(data)
    cfg = StackConfig()
    ours = out_of_fold_proba(X, y, 0.1, cfg, None)
    folds = PredefinedSplit(stratified_folds(y, cfg.folds))
    oracle = cross_val_predict(LogisticRegression(C=0.1, max_iter=cfg.max_iter), X, y, cv=folds, method="predict_proba")
    np.testing.assert_allclose(ours, oracle, atol=1e-8)
    # each row comes from a classifier that did not see it: not what a fit on all of dev gives
    full = LogisticRegression(C=0.1, max_iter=cfg.max_iter).fit(X, y).predict_proba(X)
    assert np.max(np.abs(ours - full)) > 1e-3


def test_a_held_out_class_is_scored_but_never_fitted():
    rng = np.random.default_rng(1)
    data = members(rng)
    X, y = dev_features(data)
    c = 3
    before = out_of_fold_proba(X, y, 0.3, StackConfig(), c)
    assert before.shape == (len(y), 6)
    moved = X.copy()
    moved[y == c] = 50 * rng.standard_normal(((y == c).sum(), X.shape[1]))
    after = out_of_fold_proba(moved, y, 0.3, StackConfig(), c)
    np.testing.assert_allclose(after[y != c], before[y != c], atol=1e-10)
    assert not np.allclose(after[y == c], before[y == c])


def test_leave_class_out_auroc_against_sklearn_per_fold_and_class():
    data = members(np.random.default_rng(2))
    X, y = dev_features(data)
    cfg = StackConfig(select_folds=2)
    folds = stratified_folds(y, 2)
    values = []
    for f in (0, 1):
        held = folds == f
        for c in FAKE_CLASSES:
            fit_rows = ~held & (y != c)
            model = LogisticRegression(C=0.03, max_iter=cfg.max_iter).fit(X[fit_rows], y[fit_rows])
            values.append(roc_auc_score(y[held] != c, model.predict_proba(X[held]).max(axis=1)))
    assert leave_class_out_auroc(X, y, 0.03, cfg) == pytest.approx(np.mean(values), abs=1e-12)


def test_choose_c_takes_the_best_dev_auroc_and_the_smallest_c_of_a_tie(monkeypatch):
    data = members(np.random.default_rng(3))
    X, y = dev_features(data)
    cfg = StackConfig(c_grid=[1.0, 0.01, 0.1])
    best, per_c = choose_c(X, y, cfg)
    assert list(per_c) == [0.01, 0.1, 1.0]
    assert per_c[best] == max(per_c.values())
    # on a tie the smallest C (the least confident classifier) wins
    monkeypatch.setattr(stacking, "leave_class_out_auroc", lambda X, y, C, cfg: 0.5)
    assert choose_c(X, y, cfg)[0] == 0.01


def test_stack_scorer_scores_dev_out_of_fold_and_test_from_all_of_dev():
    data = members(np.random.default_rng(4))
    cfg = FusionConfig()
    scorer = build_scorer(FusionContext(data, ["a", "b"], cfg), "stack")
    dev = scorer.scores("dev")
    X, y = dev_features(data)
    C = scorer.model_c()
    assert C in cfg.stack.c_grid
    np.testing.assert_allclose(dev, out_of_fold_proba(X, y, C, cfg.stack, None))
    oracle = LogisticRegression(C=C, max_iter=cfg.stack.max_iter).fit(X, y).predict_proba(
        concat_embeddings(data["test"].embeddings, True))
    np.testing.assert_allclose(scorer.scores("test"), oracle, atol=1e-10)
    # the training split plays no part
    data["train"].embeddings["a"][:] = 0.0
    again = build_scorer(FusionContext(data, ["a", "b"], cfg), "stack")
    np.testing.assert_allclose(again.scores("test"), scorer.scores("test"))


def test_predict_reuses_the_stored_c_without_choosing_again(monkeypatch):
    data = members(np.random.default_rng(5))
    cfg = FusionConfig()
    fitted = build_scorer(FusionContext(data, ["a", "b"], cfg), "stack")
    th = fitted.choose_threshold(data["dev"].labels)
    info = {"tau": th.tau, "rule": th.rule, **fitted.info()}

    def refuse(*args):
        raise AssertionError("C chosen again")

    monkeypatch.setattr("fusion.scorers.choose_c", refuse)
    restored = build_scorer(FusionContext(data, ["a", "b"], cfg), "stack")
    again = restored.restore_threshold(info)
    assert again.tau == th.tau
    np.testing.assert_array_equal(restored.decide("test", again), fitted.decide("test", th))


def test_a_dev_too_small_for_the_folds_is_a_one_line_error_of_an_optional_method():
    data = members(np.random.default_rng(6), n_per=(12, 1, 4))
    scorer = build_scorer(FusionContext(data, ["a", "b"], FusionConfig()), "stack")
    assert scorer.optional  # the fusion stage skips it with this message and goes on
    with pytest.raises(KitError, match="stack: no dev utterance of class") as err:
        scorer.choose_threshold(data["dev"].labels)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("stack: {c_grid: []}", "c_grid"),
    ("stack: {c_grid: [0.1, -1]}", "c_grid"),
    ("stack: {folds: 1}", "at least 2"),
    ("stack: {select_folds: 0}", "at least 2"),
    ("stack: {max_iter: 0}", "max_iter"),
    ("stack: {c: 1}", "unknown key"),
])
def test_bad_stack_settings_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "fusion.yaml"
    path.write_text(text + "\n")
    with pytest.raises(KitError, match=message) as err:
        load_fusion_config(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
