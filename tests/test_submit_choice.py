"""`submit_method: auto`: the fusion stage submits, of the methods over all members, the first in
registry order within one bootstrap SE of the best dev F1 at τ (the best with se = 0); dev F1 checked
against sklearn's precision and recall of the written dev decisions, the bootstrap against
core.metrics.open_set_scores on the same resamples and the SE against numpy's."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.metrics import precision_score, recall_score

from core.errors import KitError
from core.label_files import read_label_file
from core.labels import KNOWN_CLASSES, NO_LABEL
from core.scores import write_scores
from fusion.calibrate import Threshold, dev_f1_at_tau
from fusion.config import FusionConfig, load_fusion_config
from core.metrics import open_set_scores
from fusion.auto_select import AutoConfig, bootstrap_open_set_f1, choose_submission, resample_indices
from fusion.run import run_fusion

from .conftest import ROOT


def write_noisy_exports(exp, systems, seed):
    """Members that confuse classes often enough on dev for the fusion methods' dev F1 to differ."""
    rng = np.random.default_rng(seed)
    for i, s in enumerate(systems):
        for split, n_per in (("train", 20), ("dev", 10), ("test", 5)):
            labels = np.repeat(np.arange(7), n_per)
            emb = rng.standard_normal((len(labels), 16)) + 1.5 * np.eye(7, 16, k=i)[labels]
            logits = (1.0 + i) * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
            ids = [f"{split}_{j:03d}" for j in range(len(labels))]
            windows = split != "train"
            write_scores(exp / s / "scores" / split, ids, labels if split != "test" else np.full(len(ids), NO_LABEL),
                         logits, emb, emb if windows else None, np.arange(len(ids) + 1) if windows else None)


def sklearn_open_set_f1(truth: dict[str, int], pred: dict[str, int]) -> float:
    """The open-set macro F1 (harmonic mean of macro P and R over the known classes) of sklearn's
    per-class precision and recall: a 7 prediction counts only against the true class's recall."""
    ids = sorted(truth)
    y, p = [truth[u] for u in ids], [pred[u] for u in ids]
    labels = [c for c in KNOWN_CLASSES if c in set(y)]
    P = precision_score(y, p, labels=labels, average="macro", zero_division=0)
    R = recall_score(y, p, labels=labels, average="macro", zero_division=0)
    return 2 * P * R / (P + R)


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_submits_the_fused_method_with_the_best_dev_f1(tmp_path, seed):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a", "b"), seed)
    cfg = FusionConfig(auto=AutoConfig(se=0.0))
    assert cfg.submit_method == "auto"
    cfg.feature.d, cfg.feature.k = 3, 3
    summary = run_fusion(exp, ["a", "b"], cfg)
    truth = read_label_file(exp / "fusion" / "dev_key.txt")
    # the methods over both members that give class shares: not two_stage (gate column), not label
    fused = [m for m in summary["methods"] if ":" not in m and m not in ("two_stage", "label")]
    assert {"score", "score_aug", "feature", "feature_softmax"} <= set(fused)
    f1 = {m: sklearn_open_set_f1(truth, read_label_file(exp / "fusion" / m.replace(":", "__") / "dev_pred.txt"))
          for m in summary["methods"]}
    for m, info in summary["methods"].items():
        assert info["dev_f1_at_tau"] == pytest.approx(f1[m], abs=1e-12), m
    assert len({round(f1[m], 9) for m in fused}) > 2  # the data leave a choice to make
    best = max(f1[m] for m in fused)
    assert summary["submit_method"] == next(m for m in fused if f1[m] == best)  # first in registry order on ties
    assert summary["submit_choice"].startswith("auto")
    # what a new test set re-runs with: the resolved method, not `auto`
    assert yaml.safe_load((exp / "fusion" / "config.yaml").read_text())["submit_method"] == summary["submit_method"]


def test_a_named_method_is_submitted_as_configured(tmp_path):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a", "b"), 0)
    cfg = FusionConfig(submit_method="feature")
    cfg.feature.d, cfg.feature.k = 3, 3
    summary = run_fusion(exp, ["a", "b"], cfg)
    assert summary["submit_method"] == "feature" and summary["submit_choice"] == "configured"


def test_auto_with_one_system_submits_its_softmax(tmp_path, capsys):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a",), 0)
    summary = run_fusion(exp, ["a"], FusionConfig())
    assert summary["submit_method"] == "softmax:a"
    assert "one system: submitting softmax:a instead of auto" in capsys.readouterr().out


def test_leave_one_out_selects_on_the_mean_fold_f1_at_tau():
    # the curve holds the mean pseudo-unknown F1 per τ; τ = 0.3 is the chosen grid point
    th = Threshold(0.3, "leave-one-out", np.array([-np.inf, 0.1, 0.3, 0.5, np.inf]), np.array([0.2, 0.4, 0.7, 0.6, 0.1]))
    assert dev_f1_at_tau(th, "leave-one-out", np.zeros(3), np.zeros(3)) == 0.7
    assert dev_f1_at_tau(None, "leave-one-out", np.zeros(3), np.zeros(3)) is None  # label fusion: no curve


def test_quantile_selects_on_the_dev_f1_of_the_decisions():
    # hand-worked: class 0 P 1/2 R 1/2, class 1 P 1 R 1/2 -> P 3/4, R 1/2, F1 = 2·(3/8)/(5/4) = 0.6
    assert dev_f1_at_tau(None, "quantile", np.array([0, 0, 1, 1]), np.array([0, 7, 1, 0])) == pytest.approx(0.6)


def test_choose_submission_ties_and_gaps():
    methods = {"score": {"dev_f1_at_tau": 0.8}, "two_stage": {"dev_f1_at_tau": 0.9},
               "feature": {"dev_f1_at_tau": 0.9}, "label": {"dev_f1_at_tau": None}}
    assert choose_submission(methods, ["score", "two_stage", "feature", "label"]) == ("two_stage", None,
                                                                                     ["two_stage", "feature"])
    assert choose_submission(methods, ["feature", "two_stage"])[0] == "feature"
    assert choose_submission(methods, ["missing", "score"])[0] == "score"  # a skipped optional method
    with pytest.raises(KitError, match="no fused method has a dev F1"):
        choose_submission(methods, ["label"])


def test_the_bootstrap_f1_is_open_set_scores_on_each_resample():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 60)
    preds = {"a": np.where(rng.random(60) < 0.7, labels, rng.integers(0, 8, 60)), "b": rng.integers(0, 8, 60)}
    draws = resample_indices(60, 40, seed=5)
    assert draws.shape == (40, 60) and draws.min() >= 0 and draws.max() < 60
    for pred in preds.values():
        expected = [open_set_scores(labels[d], pred[d])["f1"] for d in draws]
        np.testing.assert_allclose(bootstrap_open_set_f1(labels, pred, draws), expected, rtol=0, atol=1e-12)


def dev_with_decisions(n_per_class: int, seed: int):
    """A dev set and a first method that is right on 80 % of it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7), n_per_class)
    first = np.where(rng.random(len(labels)) < 0.8, labels, (labels + 1) % 7)
    return labels, first


def f1_of(labels, pred):
    return {"dev_f1_at_tau": open_set_scores(labels, pred)["f1"]}


def bootstrap_se(labels, pred, cfg):
    """numpy's sample std of the F1 (open_set_scores) over the configured resamples, one at a time."""
    draws = np.random.default_rng(cfg.seed).integers(0, len(labels), size=(cfg.bootstrap, len(labels)))
    return float(np.std([open_set_scores(labels[d], pred[d])["f1"] for d in draws], ddof=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_utterance_better_is_a_tie_that_goes_to_the_first(seed):
    labels, first = dev_with_decisions(20, seed)
    better = first.copy()
    wrong = np.flatnonzero(first != labels)[0]
    better[wrong] = labels[wrong]  # one error fixed
    methods = {"score": f1_of(labels, first), "stack": f1_of(labels, better)}
    assert methods["stack"]["dev_f1_at_tau"] > methods["score"]["dev_f1_at_tau"]
    decisions = {"score": first, "stack": better}
    cfg = AutoConfig(bootstrap=300)
    chosen, se, tied = choose_submission(methods, ["score", "stack"], labels, decisions, cfg)
    assert (chosen, tied) == ("score", ["score", "stack"])
    assert se == pytest.approx(bootstrap_se(labels, better, cfg), abs=1e-12) and 0.01 < se < 0.06
    # se = 0 is the plain best; so is a call without decisions
    assert choose_submission(methods, ["score", "stack"], labels, decisions, AutoConfig(se=0.0))[0] == "stack"
    assert choose_submission(methods, ["score", "stack"])[0] == "stack"
    # ... and the tie reaches only as far as se × SE
    gap = methods["stack"]["dev_f1_at_tau"] - methods["score"]["dev_f1_at_tau"]
    narrow = AutoConfig(se=0.99 * gap / se, bootstrap=300)
    assert choose_submission(methods, ["score", "stack"], labels, decisions, narrow)[0] == "stack"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clearly_better_method_wins(seed):
    labels, first = dev_with_decisions(20, seed)
    better = labels.copy()
    better[:3] = 7  # right but for three rejected utterances: F1 ~0.98 against ~0.8
    methods = {"score": f1_of(labels, first), "stack": f1_of(labels, better)}
    chosen, se, tied = choose_submission(methods, ["score", "stack"], labels, {"score": first, "stack": better},
                                         AutoConfig())
    gap = methods["stack"]["dev_f1_at_tau"] - methods["score"]["dev_f1_at_tau"]
    assert chosen == "stack" and tied == ["stack"] and gap > 3 * se


def test_auto_with_the_default_se_submits_a_method_within_one_se_of_the_best(tmp_path):
    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a", "b"), 0)
    cfg = FusionConfig()
    assert cfg.auto.se == 1.0
    cfg.feature.d, cfg.feature.k = 3, 3
    summary = run_fusion(exp, ["a", "b"], cfg)
    methods = summary["methods"]
    candidates = ["score", "score_aug", "feature", "feature_softmax", "feature_paper", "feature_devstats", "stack"]
    f1 = {m: methods[m]["dev_f1_at_tau"] for m in candidates if m in methods}
    best = max(f1, key=f1.get)
    truth = read_label_file(exp / "fusion" / "dev_key.txt")
    best_pred = read_label_file(exp / "fusion" / best / "dev_pred.txt")
    ids = sorted(truth)
    se = bootstrap_se(np.array([truth[u] for u in ids]), np.array([best_pred[u] for u in ids]), cfg.auto)
    assert summary["auto_dev_f1_se"] == pytest.approx(se, abs=1e-12)  # the exports list dev in id order
    tied = [m for m in f1 if f1[best] - f1[m] <= summary["auto_dev_f1_se"]]
    assert summary["auto_tied"] == tied and summary["submit_method"] == tied[0]
    assert "bootstrap SE" in summary["submit_choice"]


@pytest.mark.parametrize("text, problem", [("auto: {se: -1}", "auto.se -1"), ("auto: {bootstrap: 1}", "bootstrap 1"),
                                           ("auto: {tries: 3}", "unknown key")])
def test_a_bad_auto_section_is_one_line(tmp_path, text, problem):
    path = tmp_path / "fusion.yaml"
    path.write_text(text + "\n")
    with pytest.raises(KitError, match=problem) as err:
        load_fusion_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_shipped_fusion_config_submits_auto():
    assert load_fusion_config(ROOT / "fusion" / "conf" / "fusion.yaml").submit_method == "auto"


def test_scorers_that_claim_class_shares_give_rows_summing_to_one(tmp_path):
    from fusion.members import load_members
    from fusion.scorers import FusionContext, build_scorers

    exp = tmp_path / "exp"
    write_noisy_exports(exp, ("a", "b"), 0)
    cfg = FusionConfig()
    cfg.feature.d, cfg.feature.k = 3, 3
    scorers = build_scorers(FusionContext(load_members(exp, ["a", "b"]), ["a", "b"], cfg))
    claimed = {s.name for s in scorers if s.class_shares}
    assert {"softmax:a", "score", "score_aug", "feature", "feature_softmax"} <= claimed
    assert not claimed & {"two_stage", "label", "openmax:a", "maxlogit:a"}
    for s in scorers:
        if s.class_shares:
            rows = s.scores("test")
            assert np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0), s.name
