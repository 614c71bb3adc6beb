"""eval/score.py: the spec's worked example, an independent re-implementation, malformed inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.metrics import open_set_scores

from .conftest import ROOT

WORKED_TRUE = [0, 0, 0, 0, 1, 1, 1, 1, 7, 7]
WORKED_PRED = [0, 0, 0, 1, 1, 1, 7, 7, 0, 7]


def score_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "eval" / "score.py"), *map(str, args)],
                          capture_output=True, text=True)


def write_pairs(path, ids, labels, wav=True):
    path.write_text("".join(f"{u}{'.wav' if wav else ''} {lab}\n" for u, lab in zip(ids, labels)))
    return path


def test_worked_example(tmp_path):
    ids = [f"ADD2023_T3_E_{i:08d}" for i in range(10)]
    key = write_pairs(tmp_path / "key.txt", ids, WORKED_TRUE)
    pred = write_pairs(tmp_path / "pred.txt", ids[::-1], WORKED_PRED[::-1], wav=False)
    proc = score_cli(pred, key)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "P 0.7083" in first and "R 0.6250" in first and "F1 0.6641" in first
    assert "0.5738" in proc.stdout
    rep = json.loads(score_cli(pred, key, "--json").stdout)
    assert round(rep["open_set"]["f1"], 4) == 0.6641
    assert round(rep["sklearn_macro_f1"], 4) == 0.5738
    assert rep["confusion"][7][0] == 1 and rep["confusion"][1][7] == 2


def reference_open_set_f1(y_true, y_pred):
    """Written from the confusion matrix, independently of eval.metrics."""
    cm = np.zeros((8, 8), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    known = [c for c in range(7) if cm[c].sum() > 0]
    prec = [cm[c, c] / cm[:, c].sum() if cm[:, c].sum() else 0.0 for c in known]
    rec = [cm[c, c] / cm[c].sum() for c in known]
    p, r = np.mean(prec), np.mean(rec)
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y_true = rng.integers(0, 8, size=n)
    y_true[0] = 0  # at least one known class
    noise = rng.random(n) < rng.uniform(0, 1)
    y_pred = np.where(noise, rng.integers(0, 8, size=n), y_true)
    assert open_set_scores(y_true, y_pred)["f1"] == pytest.approx(reference_open_set_f1(y_true, y_pred), abs=1e-12)


@pytest.mark.parametrize("pred_text, key_text, message", [
    ("a 0\nb 1\n", "a 0\n", "not in the answer key"),
    ("a 0\n", "a 0\nb 1\n", "has no prediction"),
    ("a 0\na.wav 1\n", "a 0\n", "duplicate id a"),
    ("a zero\n", "a 0\n", "not an integer"),
    ("a 0_3\n", "a 0\n", "not an integer"),
    ("a \u0663\n", "a 0\n", "not an integer"),
    ("a --3\n", "a 0\n", "not an integer"),
    ("a +-3\n", "a 0\n", "not an integer"),
    ("a 8\n", "a 0\n", "outside 0–7"),
    ("", "a 0\n", "is empty"),
    ("a 0 extra\n", "a 0\n", "expected"),
])
def test_malformed_inputs_are_one_line_errors(tmp_path, pred_text, key_text, message):
    pred, key = tmp_path / "pred.txt", tmp_path / "key.txt"
    pred.write_text(pred_text)
    key.write_text(key_text)
    proc = score_cli(pred, key)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "\n" not in err and message in err and "Traceback" not in err
    assert str(tmp_path) in err


def test_missing_file(tmp_path):
    proc = score_cli(tmp_path / "nope.txt", tmp_path / "key.txt")
    assert proc.returncode != 0 and "does not exist" in proc.stderr


# ----------------------------------------------------------------------------- --scores and --conditions

def scored_case(tmp_path):
    """10 utterances: true 0 0 0 0 1 1 1 1 7 7, the worked example's predictions."""
    ids = [f"E_{i:02d}" for i in range(10)]
    key = write_pairs(tmp_path / "key.txt", ids, WORKED_TRUE)
    pred = write_pairs(tmp_path / "pred.txt", ids, WORKED_PRED)
    return ids, key, pred


def test_scores_and_conditions_options(tmp_path):
    from sklearn.metrics import roc_auc_score

    ids, key, pred = scored_case(tmp_path)
    known = [0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4, 0.3, 0.25, 0.1]
    p0 = [0.9, 0.6, 0.8, 0.3, 0.2, 0.1, 0.4, 0.05, 0.1, 0.2]
    # submit.predict's columns: unknown_score and p_0 (ids without .wav, extra columns ignored)
    scores = tmp_path / "pred.tsv"
    scores.write_text("utt_id\tpath\tp_0\tunknown_score\n" + "".join(
        f"{u}\t/x/{u}.wav\t{p}\t{1 - k}\n" for u, p, k in zip(ids, p0, known)))
    meta = tmp_path / "meta.tsv"
    conds = ["clean", "clean", "codec:mp3", "noise:music:10", "clean", "noise:babble:5+codec:gsm",
             "clean", "codec:aac", "clean", "noise:effects:7"]
    meta.write_text("utt_id\tcondition\n" + "".join(f"{u}.wav\t{c}\n" for u, c in zip(ids, conds)))
    proc = score_cli(pred, key, "--scores", scores, "--conditions", meta, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    truth = np.array(WORKED_TRUE)
    m = rep["scores"]["unknown_vs_known"]
    assert m["auroc"] == pytest.approx(roc_auc_score(truth != 7, known))
    # 8 known: 95 % of them needs all 8, τ = 0.2 accepts the unknown at 0.25
    assert m["fpr95"] == pytest.approx(0.5)
    # fake-ness 1 − p_0: reals at .1 .4 .2 .7, fakes at .8 .9 .6 .95 .9 .8; the rates come closest at
    # τ = .7: fakes missed 1/6 (.6), reals accepted 1/4 (.7) → (1/6 + 1/4) / 2
    assert rep["scores"]["real_vs_fake"]["eer"] == pytest.approx(5 / 24)
    rows = {r["condition"]: r for r in rep["conditions"]}
    assert rows["clean"]["n"] == 5 and rows["codec"]["n"] == 3 and rows["babble"]["n"] == 1
    assert rows["all"]["open_set_f1"] == pytest.approx(rep["open_set"]["f1"])
    text = score_cli(pred, key, "--scores", scores, "--conditions", meta).stdout
    assert "AUROC" in text and "FPR95 0.5000" in text and "EER 0.2083" in text and "\ncodec " in text


def test_a_generator_column_splits_the_unknown_class(tmp_path):
    """WORKED_TRUE's two unknowns (ids 8, 9) from two generators: each one's decision, and its AUROC
    against the 8 known utterances by −unknown_score (sklearn as the oracle); an empty generator
    cell is a one-line error."""
    from sklearn.metrics import roc_auc_score

    ids, key, pred = scored_case(tmp_path)
    known = [0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4, 0.3, 0.25, 0.1]
    scores = tmp_path / "pred.tsv"
    scores.write_text("utt_id\tunknown_score\n" + "".join(f"{u}\t{1 - k}\n" for u, k in zip(ids, known)))
    generators = ["real"] * 4 + ["tts"] * 4 + ["vocoder", "klatt"]
    meta = tmp_path / "meta.tsv"
    meta.write_text("utt_id\tcondition\tgenerator\n" + "".join(
        f"{u}\tclean\t{g}\n" for u, g in zip(ids, generators)))
    proc = score_cli(pred, key, "--scores", scores, "--conditions", meta, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["generator"]: r for r in json.loads(proc.stdout)["generators"]}
    assert list(rows) == ["klatt", "vocoder"]
    assert rows["vocoder"]["unknown_recall"] == 0.0 and rows["vocoder"]["taken_for"] == 0  # WORKED_PRED[8] = 0
    assert rows["klatt"]["unknown_recall"] == 1.0 and rows["klatt"]["taken_for"] is None
    for name, i in (("vocoder", 8), ("klatt", 9)):
        sel = list(range(8)) + [i]
        assert rows[name]["auroc"] == pytest.approx(roc_auc_score(np.array(WORKED_TRUE)[sel] != 7,
                                                                   np.array(known)[sel]))
    assert "klatt" in score_cli(pred, key, "--conditions", meta).stdout  # without scores: the decisions
    meta.write_text("utt_id\tcondition\tgenerator\n" + "".join(f"{u}\tclean\t{g}\n" for u, g in zip(ids, generators))
                    .replace("\tklatt", "\t "))
    proc = score_cli(pred, key, "--conditions", meta)
    assert proc.returncode == 2 and "\n" not in proc.stderr.strip()
    assert f"{meta}:11: empty generator for id E_09" in proc.stderr


def test_a_key_from_a_pipe_and_a_header_with_stray_spaces(tmp_path):
    """`score.py preds <(sort key)` reads the pipe; `known_score ` (a trailing space, as a
    spreadsheet may leave) is the column known_score, not an unknown column passed over."""
    ids, key, pred = scored_case(tmp_path)
    scores = tmp_path / "s.tsv"
    scores.write_text("utt_id \tknown_score \n" + "".join(f"{u}\t{0.9 - 0.1 * i}\n" for i, u in enumerate(ids)))
    proc = subprocess.run(["bash", "-c", f'"{sys.executable}" "{ROOT / "eval" / "score.py"}" "{pred}" <(cat "{key}") '
                          f'--scores "{scores}" --json'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "unknown_vs_known" in json.loads(proc.stdout)["scores"]


def test_predict_rows_with_an_error_are_left_out_of_the_score_figures(tmp_path):
    """submit.predict gives a file it cannot read label 7, empty scores and a reason in `error`:
    AUROC, FPR95 and EER are over the other rows, P / R / F1 over all of them."""
    from sklearn.metrics import roc_auc_score

    ids, key, pred = scored_case(tmp_path)
    known = [0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4, 0.3, 0.25, 0.1]
    bad = 3
    rows = [f"{u}\t\t\tcorrupt wav header" if i == bad else f"{u}\t{1 - known[i]}\t{known[i]}\t"
            for i, u in enumerate(ids)]
    scores = tmp_path / "pred.tsv"
    scores.write_text("utt_id\tunknown_score\tp_0\terror\n" + "".join(r + "\n" for r in rows))
    proc = score_cli(pred, key, "--scores", scores, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    keep = [i for i in range(10) if i != bad]
    truth = np.array(WORKED_TRUE)[keep]
    assert rep["scores"]["unscored"] == 1
    assert rep["scores"]["unknown_vs_known"]["known"] == 7
    assert rep["scores"]["unknown_vs_known"]["auroc"] == pytest.approx(roc_auc_score(truth != 7, np.array(known)[keep]))
    assert rep["open_set"]["f1"] == pytest.approx(open_set_scores(WORKED_TRUE, WORKED_PRED)["f1"])
    assert "1 utterance(s) with an error" in score_cli(pred, key, "--scores", scores).stdout
    # an empty score without a reason stays an error
    scores.write_text("utt_id\tunknown_score\terror\n" + "".join(
        f"{u}\t{'' if i == bad else 0.5}\t\n" for i, u in enumerate(ids)))
    proc = score_cli(pred, key, "--scores", scores)
    assert proc.returncode == 2 and "not a finite number" in proc.stderr, proc.stderr


@pytest.mark.parametrize("scores_text, message", [
    ("utt_id\tknown_score\nE_00\t0.5\n", "no score for id E_01"),
    ("utt_id\tother\n" + "".join(f"E_{i:02d}\t1\n" for i in range(10)), "none of the columns"),
    ("id\tknown_score\n", "first column is utt_id"),
    ("utt_id\tknown_score\n" + "".join(f"E_{i:02d}\t1\n" for i in range(9)) + "E_09\tnan\n", "not a finite number"),
    ("utt_id\tknown_score\n" + "".join(f"E_{i:02d}\t1\n" for i in range(9)) + "E_09\t0_9\n", "not a finite number"),
    ("utt_id\tknown_score\tknown_score\n" + "".join(f"E_{i:02d}\t1\t2\n" for i in range(10)), "known_score twice"),
    ("utt_id\tknown_score\n" + "".join(f"E_{i:02d}\t1\n" for i in range(10)) + "E_00\t2\n", "duplicate id E_00"),
    ("utt_id\tknown_score\n" + "".join(f"E_{i:02d}\t1\n" for i in range(11)), "not in the answer key"),
])
def test_bad_score_files_are_one_line_errors(tmp_path, scores_text, message):
    _, key, pred = scored_case(tmp_path)
    scores = tmp_path / "scores.tsv"
    scores.write_text(scores_text)
    proc = score_cli(pred, key, "--scores", scores)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and message in err and str(scores) in err, err


def test_bad_condition_files_and_one_sided_keys(tmp_path):
    ids, key, pred = scored_case(tmp_path)
    cond = tmp_path / "cond.txt"
    cond.write_text("".join(f"{u} clean\n" for u in ids[:-1]))
    proc = score_cli(pred, key, "--conditions", cond)
    assert proc.returncode == 2 and "no condition for id E_09" in proc.stderr
    cond.write_text("E_00 clean extra\n")
    proc = score_cli(pred, key, "--conditions", cond)
    assert proc.returncode == 2 and f"{cond}:1" in proc.stderr
    # a key without unknown utterances has no AUROC
    only_known = write_pairs(tmp_path / "k2.txt", ids[:8], WORKED_TRUE[:8])
    pred2 = write_pairs(tmp_path / "p2.txt", ids[:8], WORKED_PRED[:8])
    scores = tmp_path / "s.tsv"
    scores.write_text("utt_id\tknown_score\n" + "".join(f"{u}\t0.5\n" for u in ids[:8]))
    proc = score_cli(pred2, only_known, "--scores", scores)
    assert proc.returncode == 2 and "need known (0–6) and unknown (7)" in proc.stderr
