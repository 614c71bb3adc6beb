"""Unknown-vs-known AUROC / FPR95, real-vs-fake EER and the per-condition table (core/metrics.py)
against sklearn, brute-force sweeps and hand-worked cases; the report's new columns and table."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from core.labels import NO_LABEL, UNKNOWN
from core.metrics import (
    auroc,
    condition_groups,
    equal_error_rate,
    fpr_at_tpr,
    open_set_scores,
    per_class,
    per_condition,
    per_generator,
)
from core.prepared_split import PreparedSplitWriter
from core.utt_tables import read_conditions
from core.scores import write_scores
from fusion.config import FusionConfig
from fusion.run import run_fusion


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 200))
    positive = rng.random(n) < rng.uniform(0.2, 0.8)
    positive[:2] = [True, False]
    # coarse scores: many ties between and within the two kinds
    scores = np.round(rng.standard_normal(n) + positive * rng.uniform(0, 2), int(rng.integers(0, 3)))
    return scores, positive


@pytest.mark.parametrize("seed", range(12))
def test_auroc_equals_sklearn(seed):
    scores, positive = random_case(seed)
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_fpr95_equals_the_roc_curve_point(seed):
    scores, positive = random_case(seed)
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    assert fpr_at_tpr(scores, positive, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_fpr95_hand_worked():
    # 20 known at 1..20, unknown at 0.5, 2.5, 10.5, 30: keeping 19 of 20 known (95 %) needs τ = 2,
    # which accepts the unknowns at 2.5, 10.5 and 30
    known = np.arange(1.0, 21.0)
    unknown = np.array([0.5, 2.5, 10.5, 30.0])
    scores = np.concatenate([known, unknown])
    positive = np.r_[np.ones(20, bool), np.zeros(4, bool)]
    assert fpr_at_tpr(scores, positive) == pytest.approx(0.75)
    assert auroc(scores, positive) == pytest.approx((20 + 18 + 10 + 0) / 80)


def brute_force_eer(scores, positive):
    """Every threshold in turn, with loops: miss = positives below it, false alarm = negatives at or
    above it; the EER is the mean of the two where they are closest."""
    best = None
    for t in sorted(set(scores.tolist())) + [np.inf]:
        miss = sum(1 for s, p in zip(scores, positive) if p and s < t) / sum(positive)
        fa = sum(1 for s, p in zip(scores, positive) if not p and s >= t) / (len(positive) - sum(positive))
        if best is None or abs(miss - fa) < best[0]:
            best = (abs(miss - fa), (miss + fa) / 2)
    return best[1]


@pytest.mark.parametrize("seed", range(12))
def test_eer_equals_brute_force_sweep(seed):
    scores, positive = random_case(seed)
    assert equal_error_rate(scores, positive) == pytest.approx(brute_force_eer(scores, positive), abs=1e-12)


def test_eer_hand_worked_and_bounds():
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 0.0
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 1.0
    # fakes at 3, 5, 6, 8; reals at 1, 2, 4, 7: for τ in (4, 5] one fake of four is missed (3) and
    # one real of four accepted (7)
    fake = np.array([3.0, 5, 6, 8])
    real = np.array([1.0, 2, 4, 7])
    eer = equal_error_rate(np.r_[fake, real], np.r_[np.ones(4, bool), np.zeros(4, bool)])
    assert eer == pytest.approx(0.25)
    # roughly where sklearn's ROC crosses 1 − TPR = FPR
    fpr, tpr, _ = roc_curve(np.r_[np.ones(4), np.zeros(4)], np.r_[fake, real])
    i = np.argmin(np.abs(1 - tpr - fpr))
    assert eer == pytest.approx((1 - tpr[i] + fpr[i]) / 2)


def test_one_sided_inputs_are_refused():
    with pytest.raises(ValueError, match="both kinds"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="finite"):
        equal_error_rate([0.1, np.nan], [True, False])


def test_condition_groups_of_the_demo_corpus():
    assert condition_groups("clean") == ["clean"]
    assert condition_groups("noise:music:12.5") == ["music"]
    assert condition_groups("noise:effects:5.0+codec:amr-nb") == ["noise", "codec"]
    assert condition_groups("noise:babble:7.1") == ["babble"]
    assert condition_groups("reverb+codec:mp3") == ["reverb", "codec"]  # a user's own names stay


def test_per_condition_hand_worked():
    truth = [0, 1, 7, 0, 1, 7, 2]
    pred = [0, 7, 7, 1, 1, 0, 2]
    closed = [0, 1, 3, 1, 1, 0, 2]
    conds = ["clean", "clean", "clean", "noise:music:9+codec:gsm", "codec:mp3", "codec:opus", "noise:babble:5"]
    rows = {r["condition"]: r for r in per_condition(truth, pred, conds, closed)}
    assert list(rows) == ["all", "clean", "music", "babble", "codec"]
    assert rows["all"]["open_set_f1"] == pytest.approx(open_set_scores(truth, pred)["f1"])
    clean = rows["clean"]
    assert (clean["n"], clean["known"], clean["unknown"]) == (3, 2, 1)
    assert clean["known_accuracy"] == 0.5 and clean["unknown_recall"] == 1.0 and clean["closed_set_accuracy"] == 1.0
    codec = rows["codec"]  # truth 0, 1, 7; pred 1, 1, 0
    assert codec["known_accuracy"] == 0.5 and codec["unknown_recall"] == 0.0
    assert codec["open_set_f1"] == pytest.approx(open_set_scores([0, 1, 7], [1, 1, 0])["f1"])
    assert rows["babble"]["unknown_recall"] is None and rows["babble"]["known_accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_per_class_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 300))
    truth = rng.integers(0, 8, n)
    truth[:8] = np.arange(8)
    closed = np.where(rng.random(n) < 0.7, np.minimum(truth, 6), rng.integers(0, 7, n))
    pred = np.where(rng.random(n) < 0.2, UNKNOWN, closed)
    rows = per_class(truth, pred, closed)
    labels = list(range(8))
    p, r, _, support = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=np.nan)
    cm = confusion_matrix(truth, pred, labels=labels)
    closed_recall = np.diag(confusion_matrix(truth, closed, labels=labels)) / support
    assert [row["label"] for row in rows] == labels
    for row in rows:
        c = row["label"]
        assert row["n"] == support[c]
        assert row["recall"] == pytest.approx(r[c])
        assert row["precision"] == pytest.approx(p[c]) if row["precision"] is not None else np.isnan(p[c])
        off = cm[c].copy()
        off[c] = 0
        if off.sum():
            assert off[row["mistaken_for"]] == off.max()  # the most frequent wrong label
            assert row["mistaken_share"] == pytest.approx(off.max() / support[c])
        else:
            assert row["mistaken_for"] is None
        assert ("closed_set_recall" in row) == (c != UNKNOWN)
        if c != UNKNOWN:
            assert row["closed_set_recall"] == pytest.approx(closed_recall[c])


def test_per_class_hand_worked():
    truth = [0, 0, 0, 6, 7, 7, 7]
    pred = [6, 6, 0, 6, 6, 6, 7]
    rows = {r["label"]: r for r in per_class(truth, pred)}
    assert list(rows) == [0, 6, 7]  # labels absent from the key get no row
    assert rows[0]["recall"] == pytest.approx(1 / 3) and rows[0]["precision"] == 1.0
    assert rows[0]["mistaken_for"] == 6 and rows[0]["mistaken_share"] == pytest.approx(2 / 3)
    assert rows[6]["precision"] == pytest.approx(1 / 5) and rows[6]["recall"] == 1.0 and rows[6]["mistaken_for"] is None
    assert rows[7]["recall"] == pytest.approx(1 / 3) and rows[7]["mistaken_for"] == 6
    assert "closed_set_recall" not in rows[0]  # only with the closed-set decisions


def test_per_generator_hand_worked_and_against_sklearn():
    truth = [0, 1, 2, 7, 7, 7, 7, 7]
    pred = [0, 1, 7, 7, 6, 6, 7, 0]
    gens = ["real", "tts", "tts", "g1", "g1", "g1", "g2", "g2"]
    known = np.array([0.9, 0.8, 0.4, 0.3, 0.85, 0.6, np.nan, 0.5])  # g2's first file has no score
    rows = {r["generator"]: r for r in per_generator(truth, pred, gens, known)}
    assert list(rows) == ["g1", "g2"]  # the generators of the unknown class only
    g1 = rows["g1"]
    assert (g1["n"], g1["taken_for"]) == (3, 6)
    assert g1["unknown_recall"] == pytest.approx(1 / 3) and g1["taken_share"] == pytest.approx(2 / 3)
    is_known = np.array([True, True, True, False, False, False])
    assert g1["auroc"] == pytest.approx(roc_auc_score(is_known, known[:6]))
    # the file without a score counts in the decisions, not in the AUROC
    assert rows["g2"]["unknown_recall"] == 0.5 and rows["g2"]["taken_for"] == 0
    assert rows["g2"]["auroc"] == pytest.approx(roc_auc_score([True, True, True, False], known[[0, 1, 2, 7]]))
    assert rows["g2"]["fpr95"] == 1.0  # 0.5 is above the 0.4 that keeping every known file needs
    assert "auroc" not in per_generator(truth, pred, gens)[0]  # without scores: the decisions only


# ----------------------------------------------------------------------------- the report

def synthetic_experiment(root):
    """Two members' exports, their fusion, a prepared test split (empty audio) and a key with
    conditions: enough for the evaluate stage."""
    exp, key, conditions = root / "exp", {}, {}
    rng = np.random.default_rng(0)
    test_ids = [f"T_{i:04d}" for i in range(7 * 4 + 12)]
    truth = np.r_[np.repeat(np.arange(7), 4), np.full(12, UNKNOWN)]
    for s in ("a", "b"):
        for split, n_per in (("train", 10), ("dev", 5)):
            labels = np.repeat(np.arange(7), n_per)
            emb = rng.standard_normal((len(labels), 12)) + 3 * np.eye(7, 12)[labels]
            logits = 4 * np.eye(7)[labels] + rng.standard_normal((len(labels), 7))
            windows = split == "dev"
            write_scores(exp / s / "scores" / split, [f"{split}{i}" for i in range(len(labels))], labels, logits, emb,
                         emb if windows else None, np.arange(len(labels) + 1) if windows else None)
        known = truth != UNKNOWN
        centre = np.where(known[:, None], 3 * np.eye(7, 12)[np.minimum(truth, 6)], -3)  # unknowns far away
        emb = centre + rng.standard_normal((len(truth), 12))
        logits = np.where(known[:, None], 4 * np.eye(7)[np.minimum(truth, 6)], 0) + rng.standard_normal((len(truth), 7))
        write_scores(exp / s / "scores" / "test", test_ids, np.full(len(truth), NO_LABEL), logits, emb,
                     emb, np.arange(len(truth) + 1))
    cfg = FusionConfig()
    cfg.feature.d, cfg.feature.k = 3, 3
    run_fusion(exp, ["a", "b"], cfg)
    wav = root / "test" / "wav"
    wav.mkdir(parents=True)
    prepared = root / "prepared_test"
    prepared.mkdir()
    with PreparedSplitWriter(prepared) as split:  # the report reads only ids, paths and labels
        for u in test_ids:
            (wav / f"{u}.wav").write_bytes(b"")
            split.add(u, wav / f"{u}.wav", NO_LABEL, 16000, 0.0, np.zeros(0, dtype=np.float32))
    names = ["clean", "noise:music:10", "noise:effects:8+codec:mp3", "codec:gsm"]
    for i, (u, t) in enumerate(zip(test_ids, truth)):
        key[u] = int(t)
        conditions[u] = names[i % 4]
    (root / "keys").mkdir()
    (root / "keys" / "test_label.txt").write_text("".join(f"{u}.wav {t}\n" for u, t in key.items()))
    # the unknowns come from two generators, as the demo's meta.tsv names them
    generators = {u: (f"unseen_{i % 2}" if key[u] == UNKNOWN else f"known_{key[u]}") for i, u in enumerate(test_ids)}
    meta = "".join(f"{u}\ttest\t{c}\t{generators[u]}\n" for u, c in conditions.items())
    (root / "meta.tsv").write_text("utt_id\tsplit\tcondition\tgenerator\n" + meta
                                   + "D_1\tdev\tclean\tknown_0\n")  # other splits: ignored
    return exp, prepared, root / "keys" / "test_label.txt", key, conditions


def test_report_has_score_columns_and_the_condition_table(tmp_path):
    from eval.report import (
        condition_table,
        conditions_markdown,
        demo_conditions,
        evaluate_methods,
        results_table,
        submitted_decisions,
    )
    from submit.write import checked_test_split

    exp, prepared, key_path, key, conditions = synthetic_experiment(tmp_path)
    rows = {r["method"]: r for r in evaluate_methods(exp / "fusion", checked_test_split(prepared), key)}
    ids = (exp / "fusion" / "test_ids.txt").read_text().split()
    truth = np.array([key[u] for u in ids])
    for name in ("softmax:a", "energy:a", "knn:b", "feature", "openmax:a"):
        scores = np.load(exp / "fusion" / name.replace(":", "__") / "test_scores.npy")
        known = scores[:, :-1].max(1) if name.startswith("openmax") else scores.max(1)
        assert rows[name]["test_auroc"] == pytest.approx(roc_auc_score(truth != UNKNOWN, known)), name
    # real vs fake from the member's softmax for the logit-based scores: energy:a's EER is softmax:a's
    assert rows["energy:a"]["test_eer"] == pytest.approx(rows["softmax:a"]["test_eer"])
    p0 = np.load(exp / "fusion" / "softmax__a" / "test_scores.npy")[:, 0]
    assert rows["softmax:a"]["test_eer"] == pytest.approx(brute_force_eer(1 - p0, truth != 0))
    assert rows["label"]["test_auroc"] is None
    # the demo layout's meta.tsv (beside keys/) is found; the table is the submitted method's
    assert demo_conditions(str(key_path)) == (tmp_path / "meta.tsv").resolve()
    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    meta = tmp_path / "meta.tsv"
    table = condition_table(submitted_decisions(exp / "fusion", checked_test_split(prepared), key, summary),
                            read_conditions(meta), meta)
    assert "| closed-set accuracy |" in conditions_markdown(table)
    pred = {ln.split()[0][:-4]: int(ln.split()[1])
            for ln in (exp / "fusion" / summary["submit_method"].replace(":", "__") / "test_pred.txt").read_text().splitlines()}
    music = [u for u in key if conditions[u] == "noise:music:10"]
    row = next(r for r in table if r["condition"] == "music")
    assert row["n"] == len(music)
    assert row["open_set_f1"] == pytest.approx(open_set_scores([key[u] for u in music], [pred[u] for u in music])["f1"])
    assert "| AUROC | FPR95 | EER |" in results_table(list(rows.values()))


@pytest.fixture(scope="module")
def keyed_report(tmp_path_factory):
    """The synthetic experiment with its report written against the key, once for the tests that
    read it (drawing the report's figures is most of a report's time)."""
    from eval.report import write_report

    exp, prepared, key_path, key, _ = synthetic_experiment(tmp_path_factory.mktemp("keyed_report"))
    write_report(exp, prepared, str(key_path))
    return exp, prepared, key


def test_report_writes_the_per_class_table_of_the_submitted_method(keyed_report):
    exp, _, key = keyed_report
    classes = json.loads((exp / "report" / "classes.json").read_text())
    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    folder = exp / "fusion" / summary["submit_method"].replace(":", "__")
    pred = {ln.split()[0][:-4]: int(ln.split()[1]) for ln in (folder / "test_pred.txt").read_text().splitlines()}
    ids = (exp / "fusion" / "test_ids.txt").read_text().split()
    closed = dict(zip(ids, np.load(folder / "test_scores.npy").argmax(axis=1)))
    tids = sorted(key)
    _, r, _, support = precision_recall_fscore_support([key[u] for u in tids], [pred[u] for u in tids],
                                                       labels=range(8), zero_division=0)
    assert [c["label"] for c in classes] == list(range(8))
    for row in classes:
        assert row["n"] == support[row["label"]] and row["recall"] == pytest.approx(r[row["label"]])
        if row["label"] != UNKNOWN:
            mine = [u for u in tids if key[u] == row["label"]]
            assert row["closed_set_recall"] == pytest.approx(np.mean([closed[u] == row["label"] for u in mine]))
    assert "## Per class" in (exp / "report" / "README.md").read_text()


def test_report_splits_the_unknown_class_by_the_generator_column(keyed_report):
    exp, _, key = keyed_report
    table = json.loads((exp / "report" / "generators.json").read_text())
    meta = [ln.split("\t") for ln in (exp.parent / "meta.tsv").read_text().splitlines()[1:]]
    generator = {u: g for u, split, _, g in meta if split == "test"}
    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    ids = (exp / "fusion" / "test_ids.txt").read_text().split()
    truth = np.array([key[u] for u in ids])
    results = json.loads((exp / "report" / "results.json").read_text())
    best = max((r for r in results if r["test_auroc"] is not None), key=lambda r: r["test_auroc"])["method"]
    assert [r["generator"] for r in table] == ["unseen_0", "unseen_1"]
    for row in table:
        mine = np.array([generator[u] == row["generator"] for u in ids])
        sel = (truth != UNKNOWN) | mine
        for method, column in ((summary["submit_method"], "auroc"), (best, "best_auroc")):
            scores = np.load(exp / "fusion" / method.replace(":", "__") / "test_scores.npy")
            known = scores[:, :-1].max(1) if method.startswith("openmax") else scores.max(1)
            assert row[column] == pytest.approx(roc_auc_score(truth[sel] != UNKNOWN, known[sel])), (row, method)
        assert row["best_method"] == best and row["n"] == mine.sum()
    assert "## The unknown class per generator" in (exp / "report" / "README.md").read_text()


def test_roc_det_curves_carry_the_table_figures(keyed_report):
    from eval.report import ROC_DET_METHODS, error_curves

    exp, _, key = keyed_report
    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    rows = json.loads((exp / "report" / "results.json").read_text())
    ids = (exp / "fusion" / "test_ids.txt").read_text().split()
    truth = np.array([key[u] for u in ids])
    curves = error_curves(rows, exp / "fusion", summary, truth)
    by_name = {r["method"]: r for r in rows}
    # by test AUROC, ties by name
    scored = sorted((r for r in rows if r["test_auroc"] is not None and not r["submitted"]),
                    key=lambda r: (-r["test_auroc"], r["method"]))
    assert curves[0].method == summary["submit_method"]
    assert [c.method for c in curves[1:]] == [r["method"] for r in scored[:ROC_DET_METHODS]]
    for c in curves:
        row = by_name[c.method]
        # the area under the drawn ROC is the table's AUROC (ranks, ties one half), and its first
        # point keeping 95 % of the known utterances is the table's FPR95
        assert np.trapezoid(c.tpr, c.fpr) == pytest.approx(row["test_auroc"]), c.method
        assert c.fpr[np.argmax(c.tpr >= 0.95)] == pytest.approx(row["test_fpr95"]), c.method
        # the DET's closest approach of miss and false alarm is the table's EER
        i = np.argmin(np.abs(c.miss - c.false_alarm))
        assert (c.miss[i] + c.false_alarm[i]) / 2 == pytest.approx(row["test_eer"]), c.method
    assert (exp / "report" / "roc_det.png").stat().st_size > 1000
    assert "## Unknown-vs-known ROC and real-vs-fake DET" in (exp / "report" / "README.md").read_text()


def test_report_without_a_key_leaves_no_keyed_table_or_figure(keyed_report, tmp_path):
    import shutil

    from eval.report import write_report

    exp, prepared, _ = keyed_report
    shutil.copytree(exp, tmp_path / "exp", symlinks=True)
    write_report(tmp_path / "exp", prepared, None)
    report = tmp_path / "exp" / "report"
    # an earlier run's keyed outputs do not stay behind
    assert not (report / "classes.json").exists() and not (report / "roc_det.png").exists()
    text = (report / "README.md").read_text()
    assert "## Per class" not in text and "ROC" not in text


def test_report_is_skipped_only_while_every_input_is_unchanged(keyed_report, tmp_path):
    """The evaluate stage's stamp: a re-run with nothing changed prints the table without drawing;
    a change of any file the report reads (fusion output, key, conditions, a system's training
    record, the test manifest or its audio folder) or a damaged results.json draws it again. (That
    stage 7 writes the stamp and skips on it: the new-test-set test of test_predict.py.)"""
    import os
    import shutil
    import subprocess
    import sys

    from core.provenance import TRAIN_ENVIRONMENT
    from core.stamps import output_files, write_stamp
    from eval.report import report_options, results_table, stamped_rows

    from .conftest import ROOT

    source, prepared, _ = keyed_report
    root = tmp_path / "copy"
    shutil.copytree(source.parent, root, symlinks=True)
    exp, key_path = root / "exp", root / "keys" / "test_label.txt"
    prepared = root / prepared.relative_to(source.parent)
    manifest = prepared / "manifest.tsv"  # naming the copied audio folder
    manifest.write_text(manifest.read_text().replace(str(source.parent), str(root)))
    (exp / "a" / TRAIN_ENVIRONMENT).write_text("[]\n")
    report = exp / "report"
    # the report the fixture drew, stamped as stage 7 stamps what it draws
    write_stamp(report, report_options(exp, prepared, str(key_path), None), outputs=output_files(report))
    drawn = (report / "README.md").stat().st_mtime_ns
    argv = [sys.executable, "-m", "eval.report", "--exp", str(exp), "--test_manifest", str(prepared), "--key", str(key_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"[evaluate] {report}: up to date, skipped" in proc.stdout
    assert results_table(json.loads((report / "results.json").read_text())) in proc.stdout
    assert (report / "README.md").stat().st_mtime_ns == drawn

    def current():
        return stamped_rows(report, report_options(exp, prepared, str(key_path), None)) is not None

    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    scores = exp / "fusion" / summary["submit_method"].replace(":", "__") / "test_scores.npy"
    for changed in (scores, key_path, root / "meta.tsv", exp / "a" / TRAIN_ENVIRONMENT, manifest, root / "test" / "wav"):
        assert current()
        st = changed.stat()
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert not current(), changed
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    # results.json damaged at its size: the stamp holds, the rows do not read back
    results = report / "results.json"
    text = results.read_bytes()
    results.write_bytes(b"x" * len(text))
    assert not current()
    results.write_bytes(text)
    assert current()
    assert stamped_rows(report, report_options(exp, prepared, None, None)) is None  # another question
    # a keyless stamp does not turn --conditions without --key into a skipped stage
    write_stamp(report, report_options(exp, prepared, None, None), outputs=output_files(report))
    proc = subprocess.run(argv[:-2] + ["--conditions", str(root / "meta.tsv")], cwd=ROOT, capture_output=True, text=True)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "give --key too" in err, err
    # a test file gone from its folder is the usual one-line error, not a skipped stage
    (root / "test" / "wav" / "T_0000.wav").unlink()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and "gone: T_0000" in err, err
