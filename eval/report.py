"""The evaluate stage: a results report over every single system and every fusion method.

    python -m eval.report --exp exp --test_manifest exp/data/test [--key keys/test_label.txt]
                          [--conditions meta.tsv]

Reads `EXP/fusion/` (summary.json and each method's predictions and scores). Dev metrics need no
key; test metrics are computed on exactly what would be submitted (unreadable test files as 7)
against the key when one is given, with each scored method's unknown-vs-known AUROC and FPR95
(known-ness = the max known-class score τ is compared with) and real-vs-fake EER (fake-ness =
1 − the real class's share) over the readable test utterances. With conditions (`--conditions`,
or the demo corpus's meta.tsv found beside its keys/ folder) the submitted method gets a
per-condition table (`conditions.json`); with a key, a per-class table of the submitted method
(`classes.json`: which classes it confuses, where the unknowns go). Writes `EXP/report/README.md`,
`results.json` and figures:
  max_scores.png   histograms of the max known-class score, known vs unknown (seed 004 Fig. 1)
  f1_vs_tau.png    open-set F1 against τ per method, the chosen τ marked (seed 000 Fig. 3)
  tsne.png         t-SNE of the fused embeddings coloured by class (seed 004 Fig. 3)
  confusion.png    confusion matrix of the submitted method
  roc_det.png      with a key: unknown-vs-known ROC (FPR95 marked) and real-vs-fake DET (EER marked)
                   of the submitted method and the methods of highest test AUROC
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_path, ensure_dir, remove_stale_temporaries, write_text_atomic
from core.errors import ArgumentParser, fail, run_cli, yaml_error_text
from core.label_files import key_labels_exactly, read_label_file
from core.labels import ALL_LABELS, LABEL_NAMES, REAL, UNKNOWN
from core.metrics import (
    auroc,
    equal_error_rate,
    fpr_at_tpr,
    full_report,
    per_class,
    per_condition,
    per_generator,
    require_known_class,
)
from core.prepared_split import PreparedSplit
from core.provenance import RESULT_PACKAGES, TRAIN_ENVIRONMENT, environment, machine_line, package_versions
from core.stage_files import load_npy, read_ids, read_json
from core.stamps import (
    file_signature,
    folder_listing,
    output_files,
    read_stamp,
    source_digest,
    stage_is_current,
    write_stamp,
)
from core.utt_tables import read_condition_file, values_for
from fusion.calibrate import f1_curve, known_max, tau_grid
from fusion.logit_fusion import softmax
from submit.write import audio_folders_of, check_fusion_is_current, checked_test_split, submission_labels


def method_dir(fusion: Path, name: str) -> Path:
    return fusion / name.replace(":", "__")


STAGE = "fusion"  # writes everything the report reads: the stage to re-run when a file is damaged
METHOD_KEYS = {"description": str, "rule": str, "tau": (int, float, type(None)), "unknown_column": bool}
# what a method's score columns are (fusion/scorers.py); experiments fused before it was recorded
# hold only probability-like shares
SCORE_KINDS = ("probability", "shifted_logits")


def read_pairs(path: Path) -> dict[str, int]:
    return read_label_file(path, ALL_LABELS, "prediction file")


def read_dev_key(fusion: Path) -> dict[str, int]:
    path = fusion / "dev_key.txt"
    if not path.is_file():
        fail(f"{path}: dev answer key is missing; re-run the {STAGE} stage")
    return read_label_file(path, ALL_LABELS, "dev answer key")


def read_summary(fusion: Path) -> dict:
    """EXP/fusion/summary.json, checked for everything the report reads from it."""
    path = fusion / "summary.json"
    summary = read_json(path, "fusion summary", STAGE, keys={"systems": list, "rule": str, "submit_method": str,
                                                            "methods": dict})
    for name, info in summary["methods"].items():
        if not isinstance(info, dict):
            fail(f"{path}: method {name!r} is not a JSON object; re-run the {STAGE} stage")
        for key, kind in METHOD_KEYS.items():
            if not isinstance(info.get(key, ...), kind):
                fail(f"{path}: method {name!r} has no valid {key!r}; re-run the {STAGE} stage")
        if info.get("score_kind", "probability") not in SCORE_KINDS:
            fail(f"{path}: method {name!r} has score_kind {info['score_kind']!r}, not one of {SCORE_KINDS}; "
                 f"re-run the {STAGE} stage")
    if summary["submit_method"] not in summary["methods"]:
        fail(f"{path}: submit_method {summary['submit_method']!r} is not among its methods; re-run the {STAGE} stage")
    return summary


def same_ids(pred: dict[str, int], pred_path: Path, key: dict[str, int], key_path: Path) -> None:
    """A method's predictions cover exactly the ids of its key."""
    missing, extra = sorted(set(key) - set(pred)), sorted(set(pred) - set(key))
    if missing:
        fail(f"{pred_path}: no prediction for {len(missing)} id(s) of {key_path}, e.g. {missing[0]}; "
             f"re-run the {STAGE} stage")
    if extra:
        fail(f"{pred_path}: {len(extra)} id(s) not in {key_path}, e.g. {extra[0]}; re-run the {STAGE} stage")


def submitted_labels(folder: Path, test: PreparedSplit, key: dict[str, int]) -> dict[str, int]:
    """A method's test labels exactly as submitted (`test` from checked_test_split, which lists the
    test folder: once per report, not once per method or table): unreadable test files count as 7."""
    sub, _ = submission_labels(folder / "test_pred.txt", test)
    missing = sorted(set(key) - set(sub))
    if missing or set(sub) - set(key):
        fail(f"answer key and test folder disagree (e.g. {(missing or sorted(set(sub) - set(key)))[0]})")
    return sub


def fake_scores(scores: np.ndarray, score_kind: str) -> np.ndarray:
    """1 − the real class's share: the columns themselves for probability-like scores, their
    softmax for shifted logits (= the member's softmax, since the shift is per row)."""
    shares = softmax(scores) if score_kind == "shifted_logits" else scores
    return 1.0 - shares[:, REAL]


def judged_scores(info: dict, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a method's AUROC, FPR95 and EER are computed from, per utterance: its known-ness (the
    max known-class score τ is compared with) and its fake-ness (1 − the real class's share)."""
    return (known_max(scores, info["unknown_column"]).astype(np.float64),
            fake_scores(scores, info.get("score_kind", "probability")).astype(np.float64))


def score_metrics(info: dict, scores: np.ndarray, truth: np.ndarray) -> dict:
    """Unknown-vs-known AUROC and FPR95, real-vs-fake EER; None where the key lacks one side."""
    known, fake = judged_scores(info, scores)
    is_known, is_fake = truth != UNKNOWN, truth != REAL
    both_known = is_known.any() and not is_known.all()
    both_fake = is_fake.any() and not is_fake.all()
    return {"test_auroc": auroc(known, is_known) if both_known else None,
            "test_fpr95": fpr_at_tpr(known, is_known, 0.95) if both_known else None,
            "test_eer": equal_error_rate(fake, is_fake) if both_fake else None}


def evaluate_methods(fusion: Path, test: PreparedSplit | None, key: dict[str, int] | None,
                     summary: dict | None = None) -> list[dict]:
    summary = summary or read_summary(fusion)
    dev_key = read_dev_key(fusion)
    truth = test_truth(fusion, key)[1] if key is not None else None
    rows = []
    for name, info in summary["methods"].items():
        folder = method_dir(fusion, name)
        dev_pred = read_pairs(folder / "dev_pred.txt")
        same_ids(dev_pred, folder / "dev_pred.txt", dev_key, fusion / "dev_key.txt")
        ids = sorted(dev_key)
        dev = full_report([dev_key[u] for u in ids], [dev_pred[u] for u in ids])
        row = {"method": name, "description": info["description"], "rule": info["rule"], "tau": info["tau"],
               "dev_precision": dev["open_set"]["precision"], "dev_recall": dev["open_set"]["recall"],
               "dev_f1": dev["open_set"]["f1"], "dev_sklearn_f1": dev["sklearn_macro_f1"],
               "submitted": name == summary["submit_method"]}
        if key is not None:
            # scored exactly as submitted: unreadable test files count as 7, as in the submission
            sub = submitted_labels(folder, test, key)
            tids = sorted(key)
            rep = full_report([key[u] for u in tids], [sub[u] for u in tids])
            o = rep["open_set"]
            row.update(test_precision=o["precision"], test_recall=o["recall"], test_f1=o["f1"],
                       test_unknown_recall=o["unknown_recall"], test_sklearn_f1=rep["sklearn_macro_f1"],
                       test_confusion=rep["confusion"], test_auroc=None, test_fpr95=None, test_eer=None)
            if (folder / "test_scores.npy").is_file():  # label fusion has labels, no scores
                row.update(score_metrics(info, method_scores(folder, "test", len(truth)), truth))
        row["dev_confusion"] = dev["confusion"]
        rows.append(row)
    return rows


@dataclass
class SubmittedTest:
    """The submitted method on the key's test ids (sorted): the key's labels, the submitted labels
    and, when the method has scores, its class decision before the unknown rule (-1 for an
    unreadable file: always wrong). Read once for the per-condition and per-class tables."""
    ids: list[str]
    truth: list[int]
    pred: list[int]
    closed: list[int] | None


def submitted_decisions(fusion: Path, test: PreparedSplit, key: dict[str, int], summary: dict) -> SubmittedTest:
    name = summary["submit_method"]
    folder = method_dir(fusion, name)
    sub = submitted_labels(folder, test, key)
    tids = sorted(key)
    closed = None
    if (folder / "test_scores.npy").is_file():
        ids, truth = test_truth(fusion, key)
        scores = method_scores(folder, "test", len(truth))
        argmax = (scores[:, :-1] if summary["methods"][name]["unknown_column"] else scores).argmax(axis=1)
        by_id = dict(zip(ids, argmax.tolist()))
        closed = [by_id.get(u, -1) for u in tids]
    return SubmittedTest(tids, [key[u] for u in tids], [sub[u] for u in tids], closed)


def condition_table(submitted: SubmittedTest, conditions: dict[str, str], conditions_path: Path) -> list[dict]:
    """The submitted method per condition: its submitted labels, and, when it has scores, the class
    decision before the unknown rule (closed-set accuracy; unreadable files count as wrong)."""
    return per_condition(submitted.truth, submitted.pred, values_for(submitted.ids, conditions, conditions_path, "condition"),
                         submitted.closed)


def generator_table(fusion: Path, summary: dict, rows: list[dict], submitted: SubmittedTest,
                    key: dict[str, int], generators: dict[str, str], generators_path: Path) -> list[dict]:
    """The unknown class per generator (the condition file's generator column): the submitted
    method's decisions and AUROC / FPR95, and beside them the AUROC of the method with the highest
    test AUROC overall (`best_*`), each against every known-class utterance."""
    names = values_for(submitted.ids, generators, generators_path, "generator")
    ids = test_truth(fusion, key)[0]

    def known_ness(method: str) -> list[float] | None:
        """The method's known-ness in the key's order; NaN for an unreadable file (no score)."""
        folder = method_dir(fusion, method)
        if not (folder / "test_scores.npy").is_file():
            return None
        known = judged_scores(summary["methods"][method], method_scores(folder, "test", len(ids)))[0]
        by_id = dict(zip(ids, known.tolist()))
        return [by_id.get(u, float("nan")) for u in submitted.ids]

    table = per_generator(submitted.truth, submitted.pred, names, known_ness(summary["submit_method"]))
    scored = [r for r in rows if r.get("test_auroc") is not None]
    if scored:
        best = max(scored, key=lambda r: r["test_auroc"])["method"]
        for row, other in zip(table, per_generator(submitted.truth, submitted.pred, names, known_ness(best))):
            row.update(best_method=best, best_auroc=other["auroc"], best_fpr95=other["fpr95"])
    return table


def generators_markdown(rows: list[dict]) -> str:
    best = next((r["best_method"] for r in rows if "best_method" in r), None)
    head = "| generator | n | unknown recall | most often labelled | AUROC | FPR95 |" + (
        f" AUROC of {best} | FPR95 of {best} |" if best else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        taken = f"{LABEL_NAMES[r['taken_for']]} ({r['taken_share']:.0%})" if r["taken_for"] is not None else "–"
        line = (f"| {r['generator']} | {r['n']} | {fmt(r['unknown_recall'])} | {taken} | {fmt(r.get('auroc'))} |"
                f" {fmt(r.get('fpr95'))} |")
        lines.append(line + (f" {fmt(r['best_auroc'])} | {fmt(r['best_fpr95'])} |" if best else ""))
    return "\n".join(lines)


def demo_conditions(key_path: str | None) -> Path | None:
    """The demo corpus keeps meta.tsv (with a condition column) beside its keys/ folder."""
    if key_path is None:
        return None
    meta = Path(key_path).resolve().parent.parent / "meta.tsv"
    return meta if Path(key_path).resolve().parent.name == "keys" and meta.is_file() else None


def fmt(v, digits=4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not np.isfinite(v):
        return "−∞" if v < 0 else "∞"
    return f"{v:.{digits}f}"


def results_table(rows: list[dict]) -> str:
    test = any("test_f1" in r for r in rows)
    head = "| method | τ | dev P | dev R | dev F1 |" + (
        " test P | test R | test F1 | unknown recall | test sklearn F1 | AUROC | FPR95 | EER |" if test else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = f"**{r['method']}** (submitted)" if r["submitted"] else r["method"]
        line = f"| {name} | {fmt(r['tau'])} | {fmt(r['dev_precision'])} | {fmt(r['dev_recall'])} | {fmt(r['dev_f1'])} |"
        if test:
            line += (f" {fmt(r['test_precision'])} | {fmt(r['test_recall'])} | {fmt(r['test_f1'])} |"
                     f" {fmt(r['test_unknown_recall'])} | {fmt(r['test_sklearn_f1'])} |"
                     f" {fmt(r['test_auroc'])} | {fmt(r['test_fpr95'])} | {fmt(r['test_eer'])} |")
        lines.append(line)
    return "\n".join(lines)


def conditions_markdown(rows: list[dict]) -> str:
    closed = "closed_set_accuracy" in rows[0]
    head = "| condition | n | known | unknown | open-set F1 | known-class accuracy | unknown recall |" + (
        " closed-set accuracy |" if closed else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['condition']} | {r['n']} | {r['known']} | {r['unknown']} | {fmt(r['open_set_f1'])} |"
                f" {fmt(r['known_accuracy'])} | {fmt(r['unknown_recall'])} |")
        lines.append(line + (f" {fmt(r['closed_set_accuracy'])} |" if closed else ""))
    return "\n".join(lines)


def classes_markdown(rows: list[dict]) -> str:
    closed = any("closed_set_recall" in r for r in rows)
    head = "| class | n | precision | recall |" + (" closed-set recall |" if closed else "") + " most often taken for |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        taken = (f"{LABEL_NAMES[r['mistaken_for']]} ({r['mistaken_share']:.0%})" if r["mistaken_for"] is not None
                 else "–")
        line = f"| {r['label']} {LABEL_NAMES[r['label']]} | {r['n']} | {fmt(r['precision'])} | {fmt(r['recall'])} |"
        lines.append(line + (f" {fmt(r.get('closed_set_recall'))} |" if closed else "") + f" {taken} |")
    return "\n".join(lines)


def scored_methods(fusion: Path, summary: dict) -> list[tuple[str, dict, Path]]:
    out = []
    for name, info in summary["methods"].items():
        folder = method_dir(fusion, name)
        if (folder / "test_scores.npy").is_file():  # label fusion has labels, no scores to plot
            out.append((name, info, folder))
    return out


def test_truth(fusion: Path, key: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """Key labels in the order of the fusion's test ids (readable utterances)."""
    ids = read_ids(fusion / "test_ids.txt", "test id list", STAGE)
    missing = [u for u in ids if u not in key]
    if missing:
        fail(f"{fusion / 'test_ids.txt'}: {len(missing)} id(s) not in the answer key, e.g. {missing[0]}; "
             f"re-run the {STAGE} stage")
    return ids, np.array([key[u] for u in ids])


def method_scores(folder: Path, split: str, n: int | None = None) -> np.ndarray:
    """A method's (utterances, classes) scores of a split, checked against its id count."""
    path = folder / f"{split}_scores.npy"
    scores = load_npy(path, "score array", STAGE, ndim=2, finite=True)
    if n is not None and len(scores) != n:
        fail(f"{path}: {len(scores)} rows for {n} utterances; re-run the {STAGE} stage")
    return scores


def read_curve(path: Path) -> np.ndarray:
    """A method's dev F1-vs-τ curve (curve.tsv: header, then τ and F1 per line)."""
    try:
        curve = np.loadtxt(path, skiprows=1, ndmin=2, delimiter="\t")
    except OSError as err:
        fail(f"{path}: dev F1 curve is unreadable ({err.strerror or err}); re-run the {STAGE} stage")
    except ValueError as err:
        fail(f"{path}: dev F1 curve is corrupt ({str(err).splitlines()[0]}); re-run the {STAGE} stage")
    if curve.size and curve.shape[1] != 2:
        fail(f"{path}: dev F1 curve has {curve.shape[1]} columns, expected 2 (tau, dev_f1); re-run the {STAGE} stage")
    return curve.reshape(-1, 2)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def method_grid(fusion: Path, summary: dict, key, out_file: Path, draw) -> None:
    """One panel per scored method; `draw(ax, info, folder, truth)` fills a panel, the chosen τ is
    marked and named in the panel's title, and unused panels are hidden. The panels draw the same
    kinds of line, so one legend above them names those; fixed margins instead of tight_layout,
    which measured every label of every panel (a quarter of the figure's time with 29 panels)."""
    import matplotlib.pyplot as plt

    methods = scored_methods(fusion, summary)
    cols = min(4, len(methods))
    rows = int(np.ceil(len(methods) / cols))
    width, height = 4.0 * cols, 3.0 * rows + 0.4
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    # margins in inches: tick labels on the left and below, the shared legend on top
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                        top=1 - 0.75 / height, wspace=0.3, hspace=0.55)
    truth = test_truth(fusion, key)[1] if key is not None else None
    legend = {}
    for ax, (name, info, folder) in zip(axes.flat, methods):
        draw(ax, info, folder, truth)
        title = name
        if info["tau"] is not None and np.isfinite(info["tau"]):
            ax.axvline(info["tau"], color="k", ls="--", lw=1, label="chosen τ")
            title += f" (τ = {info['tau']:.3f})"
        ax.set_title(title, fontsize=9)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=len(legend), fontsize=9,
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.1 / height))
    save_figure(fig, out_file)


def score_span(values: np.ndarray) -> tuple[float, float]:
    """A histogram range around unbounded scores, wide enough for 30 bins even when all are equal."""
    lo, hi = float(values.min()), float(values.max())
    # at least 1e-4 relative: 30 bins must stay wider than float32's resolution
    pad = max(0.02 * (hi - lo), 1e-4 * max(1.0, abs(lo), abs(hi)))
    return lo - pad, hi + pad


def filled_histogram(ax, values: np.ndarray, span: tuple[float, float], label: str) -> None:
    """A 30-bin histogram as one filled step outline: what ax.hist draws as 30 bars, in one artist
    (a quarter of the panel's drawing time with 29 panels)."""
    counts, edges = np.histogram(values, bins=30, range=span)
    ax.stairs(counts, edges, fill=True, alpha=0.6, label=label)


def plot_max_scores(fusion: Path, summary: dict, key, out: Path) -> None:
    def draw(ax, info, folder, truth):
        unknown_col = info["unknown_column"]
        probability = info.get("score_kind", "probability") == "probability"
        # with a key, known and unknown test utterances side by side show how separable they are
        # (seed 004 Fig. 1); without one, dev (all known) shows where τ cuts
        if truth is not None:
            m = known_max(method_scores(folder, "test", len(truth)), unknown_col).astype(np.float64)
            span = (0, 1) if probability else score_span(m)
            filled_histogram(ax, m[truth != UNKNOWN], span, "known (test)")
            filled_histogram(ax, m[truth == UNKNOWN], span, "unknown (test)")
        else:
            m = known_max(method_scores(folder, "dev"), unknown_col).astype(np.float64)
            span = (0, 1) if probability else score_span(m)
            filled_histogram(ax, m, span, "dev (known)")
        ax.set_xlabel("max known-class score" if probability else "known-ness score")

    method_grid(fusion, summary, key, out / "max_scores.png", draw)


def plot_f1_vs_tau(fusion: Path, summary: dict, key, out: Path) -> None:
    dev_label = "dev, pseudo-unknown folds" if summary["rule"] == "leave-one-out" else "dev (known only)"

    def draw(ax, info, folder, truth):
        curve = read_curve(folder / "curve.tsv")
        ax.plot(curve[:, 0], curve[:, 1], label=dev_label)
        # the test curve is for reading only (seed 000 Fig. 3): τ was chosen on the dev curve
        if truth is not None:
            unknown_col = info["unknown_column"]
            scores = method_scores(folder, "test", len(truth))
            grid = tau_grid(known_max(scores, unknown_col))
            grid = grid[np.isfinite(grid)]
            ax.plot(grid, f1_curve(scores, truth, grid, None, unknown_col), label="test")
        ax.set_xlabel("τ")
        ax.set_ylabel("open-set F1")
        ax.set_ylim(0, 1)

    method_grid(fusion, summary, key, out / "f1_vs_tau.png", draw)


# methods drawn in roc_det.png besides the submitted one: more curves than this are unreadable
ROC_DET_METHODS = 5


@dataclass
class ErrorCurves:
    """One method's test curves (sklearn's roc_curve and det_curve): unknown-vs-known ROC with
    known utterances positive, and real-vs-fake DET with fakes (1–7) positive."""
    method: str
    auroc: float
    fpr95: float
    eer: float | None
    fpr: np.ndarray
    tpr: np.ndarray
    false_alarm: np.ndarray | None
    miss: np.ndarray | None


def error_curves(rows: list[dict], fusion: Path, summary: dict, truth: np.ndarray) -> list[ErrorCurves]:
    """The submitted method, then up to ROC_DET_METHODS others by test AUROC (ties by name), each
    from the scores the table's AUROC, FPR95 and EER were computed from."""
    from sklearn.metrics import det_curve, roc_curve

    scored = [r for r in rows if r.get("test_auroc") is not None]
    others = sorted((r for r in scored if not r["submitted"]), key=lambda r: (-r["test_auroc"], r["method"]))
    is_known, is_fake = truth != UNKNOWN, truth != REAL
    out = []
    for row in [r for r in scored if r["submitted"]] + others[:ROC_DET_METHODS]:
        scores = method_scores(method_dir(fusion, row["method"]), "test", len(truth))
        known, fake = judged_scores(summary["methods"][row["method"]], scores)
        fpr, tpr, _ = roc_curve(is_known, known)
        false_alarm = miss = None
        if row["test_eer"] is not None:
            false_alarm, miss, _ = det_curve(is_fake, fake)
        out.append(ErrorCurves(row["method"], row["test_auroc"], row["test_fpr95"], row["test_eer"],
                               fpr, tpr, false_alarm, miss))
    return out


def plot_roc_det(curves: list[ErrorCurves], out: Path) -> None:
    """roc_det.png: the ROC on linear axes, the DET on normal-deviate axes (the ASVspoof convention)."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, (roc, det) = plt.subplots(1, 2, figsize=(11, 4.8))
    for c in curves:
        line, = roc.plot(c.fpr, c.tpr, lw=1.2, label=f"{c.method} (AUROC {c.auroc:.3f}, FPR95 {c.fpr95:.3f})")
        roc.plot([c.fpr95], [0.95], "o", color=line.get_color(), ms=4)
        if c.miss is not None:
            # the rates 0 and 1 have no normal deviate: clipped just inside the axes
            fa, miss = (norm.ppf(np.clip(v, 1e-4, 1 - 1e-4)) for v in (c.false_alarm, c.miss))
            det.plot(fa, miss, lw=1.2, color=line.get_color(), label=f"{c.method} (EER {100 * c.eer:.1f} %)")
            det.plot([norm.ppf(c.eer)], [norm.ppf(c.eer)], "o", color=line.get_color(), ms=4)
    roc.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    roc.set(xlabel="unknown utterances accepted as known (FPR)", ylabel="known utterances kept (TPR)",
            title="unknown (7) vs known (0–6), test", xlim=(0, 1), ylim=(0, 1.01))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    det.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    det.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    det.plot(norm.ppf([1e-4, 1 - 1e-4]), norm.ppf([1e-4, 1 - 1e-4]), color="0.7", lw=0.8, ls=":")
    det.set(xlabel="real taken for fake (false alarm, %)", ylabel="fakes missed (miss, %)",
            title="real (0) vs fake (1–7), test: DET", xlim=norm.ppf([5e-4, 0.99]), ylim=norm.ppf([5e-4, 0.99]))
    roc.legend(fontsize=7, loc="lower right")
    det.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out / "roc_det.png")


def fused_embeddings(fusion: Path, split: str, n: int) -> np.ndarray:
    path = fusion / f"fused_embeddings_{split}.npy"
    emb = load_npy(path, "fused embeddings", STAGE, ndim=2, finite=True)
    if len(emb) != n:
        fail(f"{path}: {len(emb)} rows for {n} utterances; re-run the {STAGE} stage")
    return emb


# t-SNE points per split: at the challenge's sizes (8,400 dev, 79,490 test) all of them took 18 min
# on 2 cores (README) and draw an unreadable cloud; a random sample keeps the class shares
TSNE_POINTS_PER_SPLIT = 4000


def tsne_sample(n: int, cap: int | None = None) -> np.ndarray:
    """Sorted row indices of a split for the t-SNE figure: all n rows, or `cap` (default
    TSNE_POINTS_PER_SPLIT) drawn at random without replacement (seed 0: the same figure every run)."""
    cap = TSNE_POINTS_PER_SPLIT if cap is None else cap
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=cap, replace=False))


def plot_tsne(fusion: Path, key, out: Path) -> bool:
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    dev_file = fusion / "fused_embeddings_dev.npy"
    if not dev_file.is_file():
        return False
    dev_key = read_dev_key(fusion)
    dev_ids = read_ids(fusion / "dev_ids.txt", "dev id list", STAGE)
    same_ids(dict.fromkeys(dev_ids, 0), fusion / "dev_ids.txt", dev_key, fusion / "dev_key.txt")
    parts, labels, markers = [fused_embeddings(fusion, "dev", len(dev_ids))], \
        [np.array([dev_key[u] for u in dev_ids])], ["dev"]
    if key is not None:
        truth = test_truth(fusion, key)[1]
        parts.append(fused_embeddings(fusion, "test", len(truth)))
        labels.append(truth)
        markers.append("test")
    titles = []
    for i, (emb, name) in enumerate(zip(parts, markers)):
        rows = tsne_sample(len(emb))
        titles.append(f"fused embeddings, {name}" if len(rows) == len(emb) else
                      f"fused embeddings, {name} ({len(rows):,} of {len(emb):,} at random)")
        parts[i], labels[i] = emb[rows], labels[i][rows]
    Z = np.concatenate(parts)
    if len(Z) < 10:  # t-SNE needs a perplexity below a third of the points
        return False
    xy = TSNE(n_components=2, perplexity=min(30, (len(Z) - 1) // 3), init="pca", random_state=0).fit_transform(Z)
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 5), squeeze=False)
    start = 0
    cmap = plt.get_cmap("tab10")
    for ax, lab, title in zip(axes.flat, labels, titles):
        seg = xy[start:start + len(lab)]
        start += len(lab)
        for c in ALL_LABELS:
            sel = lab == c
            if sel.any():
                ax.scatter(seg[sel, 0], seg[sel, 1], s=8, color=cmap(c), label=f"{c} {LABEL_NAMES[c]}",
                           marker="x" if c == UNKNOWN else "o")
        ax.set_title(title)
        ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    save_figure(fig, out / "tsne.png")
    return True


def plot_confusion(row: dict, out: Path) -> str:
    import matplotlib.pyplot as plt

    which = "test" if "test_confusion" in row else "dev"
    cm = np.array(row[f"{which}_confusion"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    for i in ALL_LABELS:
        for j in ALL_LABELS:
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(ALL_LABELS)
    ax.set_yticks(ALL_LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{row['method']} on {which}")
    fig.tight_layout()
    save_figure(fig, out / "confusion.png")
    return which


def random_frontend_systems(exp: Path, systems: list[str]) -> list[str]:
    """Systems whose SSL front-end was randomly initialised (no checkpoint): their scores mean nothing."""
    import yaml

    flagged = []
    for s in systems:
        cfg_path = exp / s / "config.yaml"
        if not cfg_path.is_file():
            continue
        try:
            raw = yaml.safe_load(cfg_path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError:
            fail(f"{cfg_path}: not a valid system config (not UTF-8 text); re-run the train stage for {s}")
        except yaml.YAMLError as err:
            fail(f"{cfg_path}: not a valid system config ({yaml_error_text(err)}); re-run the train stage for {s}")
        model = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(model, dict):
            fail(f"{cfg_path}: not a valid system config (no 'model' mapping); re-run the train stage for {s}")
        if "ssl_ckpt" in model and not model.get("ssl_ckpt"):
            flagged.append(s)
    return flagged


def key_matches_test_set(key: dict[str, int], key_path: str, test: PreparedSplit) -> None:
    """The answer key labels exactly the prepared test utterances: else one line naming the key."""
    key_labels_exactly(key, key_path, test.ids, "utterance(s)", f"the test set {test.folder}")


def training_record(exp: Path, system: str) -> Path:
    """Where a system's training record is: in its folder, or beside the config.yaml it links."""
    path = exp / system / TRAIN_ENVIRONMENT
    return path if path.is_file() else (exp / system / "config.yaml").resolve().parent / TRAIN_ENVIRONMENT


def training_environments(exp: Path, systems: list[str]) -> dict[str, list | None]:
    """Each system's training calls as stage 3 recorded them (None: trained before the record
    existed, or the record is unreadable). A seed ensemble's or a new test set's system folder
    links the trained folder's config.yaml, beside which the record lies."""
    found = {}
    for system in systems:
        path = training_record(exp, system)
        try:
            records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError, UnicodeDecodeError):
            records = None
        found[system] = records if isinstance(records, list) else None
    return found


def environment_markdown(made_with: dict) -> list[str]:
    def versions(record: dict) -> str:
        text = (f"commit {record.get('commit')}, Python {record.get('python')}; "
                + ", ".join(f"{n} {v}" for n, v in dict(record.get("packages", {})).items()))
        box = record.get("machine")
        if isinstance(box, dict):  # records made before 2026-12-06's evening have none
            text += f"; {machine_line(box)}"
        return text

    lines = ["## Environment", "",
             "The same commit trains other members under other package builds and on other CPUs "
             "(training amplifies their rounding), so compare figures made with the same versions "
             "on the same kind of machine.", "",
             f"- this report: {versions(made_with['report'])}"]
    for system, records in made_with["training"].items():
        if not records:
            lines.append(f"- {system}: no record of its training environment")
        for r in records or []:
            lines.append(f"- {system}, training from epoch {r.get('first_epoch')} on {r.get('device')} "
                         f"({r.get('processes')} process(es)): {versions(r)}")
    return lines + [""]


def read_fusion_summary(fusion: Path) -> dict:
    """read_summary, with the fusion stage named when the experiment has not been fused."""
    if not (fusion / "summary.json").is_file():
        fail(f"{fusion}: no summary.json; run the fusion stage")
    return read_summary(fusion)


def conditions_need_a_key(key_path: str | None, conditions_path: str | None) -> None:
    if conditions_path and not key_path:
        fail(f"--conditions {conditions_path}: the per-condition table scores the test set; give --key too")


def write_report(exp: Path, test_manifest: Path, key_path: str | None,
                 conditions_path: str | None = None) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    fusion = exp / "fusion"
    summary = read_fusion_summary(fusion)
    conditions_need_a_key(key_path, conditions_path)
    key = read_label_file(key_path, ALL_LABELS, "answer key") if key_path else None
    # the test manifest is read and its folder listed once, for the key's check, every method's row
    # and the submitted method's tables
    test = None
    if key is not None:
        require_known_class(list(key.values()), key_path)
        test = checked_test_split(test_manifest)
        key_matches_test_set(key, key_path, test)
    rows = evaluate_methods(fusion, test, key, summary)
    out = ensure_dir(exp / "report")
    remove_stale_temporaries(out)  # what a killed earlier run's atomic writes left
    plot_max_scores(fusion, summary, key, out)
    plot_f1_vs_tau(fusion, summary, key, out)
    has_tsne = plot_tsne(fusion, key, out)
    if not has_tsne:  # as roc_det.png below: no earlier run's figure beside a report that leaves it out
        (out / "tsne.png").unlink(missing_ok=True)
    submitted = next(r for r in rows if r["submitted"])
    cm_split = plot_confusion(submitted, out)
    curves = error_curves(rows, fusion, summary, test_truth(fusion, key)[1]) if key is not None else []
    if curves:
        plot_roc_det(curves, out)
    else:  # no earlier run's figure left beside a report that does not describe it
        (out / "roc_det.png").unlink(missing_ok=True)
    table = results_table(rows)
    conditions_path = Path(conditions_path) if conditions_path else demo_conditions(key_path)
    submitted_test = submitted_decisions(fusion, test, key, summary) if key is not None else None
    conditions, generators = (read_condition_file(conditions_path)
                              if submitted_test is not None and conditions_path is not None else (None, None))
    by_condition = condition_table(submitted_test, conditions, conditions_path) if conditions is not None else None
    by_class = (per_class(submitted_test.truth, submitted_test.pred, submitted_test.closed)
                if submitted_test is not None else None)
    by_generator = (generator_table(fusion, summary, rows, submitted_test, key, generators, conditions_path)
                    if generators is not None else None)
    random = random_frontend_systems(exp, summary["systems"])
    warning = ([f"> **WARNING: {', '.join(random)} used a randomly initialised SSL front-end (no checkpoint "
                "given); their scores, and every fusion that includes them, are NOT meaningful.**", ""]
               if random else [])
    for s in random:
        print(f"[evaluate] WARNING: {s} has a randomly initialised SSL front-end; its results are NOT meaningful")
    text = [f"# Results: {', '.join(summary['systems'])}", "", *warning,
            f"Threshold rule: **{summary['rule']}** (chosen on dev only). Submitted method: "
            f"**{summary['submit_method']}** ({summary.get('submit_choice', 'configured')})."
            + ("" if key else " No test answer key: test columns are absent."), "",
            "Dev holds known classes only, so dev F1 measures closed-set accuracy under each τ; the test "
            "split adds the unknown class (7).", "", table, ""]
    if key is not None:
        text += ["AUROC and FPR95: unknown (7) vs known (0–6) test utterances by the max known-class score that "
                 "τ is compared with (known positive; FPR95 = share of unknown utterances accepted when 95 % of "
                 "known ones are). EER: real (0) vs fake (1–7) by 1 − the real class's share (its softmax for the "
                 "logit-based scores). Over the readable test utterances; label fusion has no scores.", ""]
    if by_condition is not None:
        text += [f"## Per condition ({summary['submit_method']}, test; conditions from {conditions_path})", "",
                 "An utterance counts in each part of its condition (noise and codec together: both). "
                 "Known-class accuracy: known utterances given exactly their class, unknown rule included; "
                 "closed-set accuracy: the class decision before the unknown rule.", "",
                 conditions_markdown(by_condition), ""]
    if by_class is not None:
        text += [f"## Per class ({summary['submit_method']}, test)", "",
                 "Precision and recall of the submitted labels (for unknown: of the unknown rule); closed-set "
                 "recall: the class decision before the unknown rule; most often taken for: the most frequent "
                 "wrong label, as a share of the class's utterances.", "", classes_markdown(by_class), ""]
    if by_generator:
        text += [f"## The unknown class per generator ({summary['submit_method']}, test; generators from "
                 f"{conditions_path})", "",
                 "Each generator's unknown (7) utterances: the share the submitted labels call unknown, the "
                 "label they most often get instead, and unknown-vs-known AUROC and FPR95 against every "
                 "known-class test utterance, for the submitted method and for the method of highest test "
                 "AUROC overall.", "", generators_markdown(by_generator), ""]
    text += ["## Max known-class scores", "", "![max scores](max_scores.png)", "",
             "## Open-set F1 against τ", "", "![F1 vs tau](f1_vs_tau.png)", ""]
    if has_tsne:
        text += ["## t-SNE of the fused embeddings", "", "![t-SNE](tsne.png)", ""]
    text += [f"## Confusion matrix ({submitted['method']}, {cm_split})", "", "![confusion](confusion.png)", ""]
    if curves:
        text += ["## Unknown-vs-known ROC and real-vs-fake DET (test)", "",
                 f"{', '.join(c.method for c in curves)}: the submitted method (when it has scores) and the "
                 f"{ROC_DET_METHODS} others of highest test AUROC, from the scores of the table above. Dots: FPR95 "
                 "on the ROC, the EER on the DET.", "", "![ROC and DET](roc_det.png)", ""]
    made_with = {"report": environment(), "training": training_environments(exp, summary["systems"])}
    text += environment_markdown(made_with)
    write_text_atomic(out / "README.md", "\n".join(text))
    write_text_atomic(out / "environment.json", json.dumps(made_with, indent=2) + "\n")
    write_text_atomic(out / "results.json", json.dumps(
        [{k: v for k, v in r.items() if not k.endswith("confusion")} for r in rows], indent=2) + "\n")
    # a table this run cannot make leaves no earlier run's file behind for eval.seeds to read
    for name, table_rows in (("conditions.json", by_condition), ("classes.json", by_class),
                             ("generators.json", by_generator or None)):
        if table_rows is not None:
            write_text_atomic(out / name, json.dumps(table_rows, indent=2) + "\n")
        else:
            (out / name).unlink(missing_ok=True)
    return rows


def signature_or_none(path: Path, relative_to: Path | None = None) -> dict | None:
    return file_signature(path, relative_to) if path.is_file() else None


def report_options(exp: Path, test_manifest: Path, key_path: str | None, conditions_path: str | None) -> dict:
    """The stamp of a report: the code and packages that draw it and a signature of every file it
    reads (the fusion folder, the key, the conditions, the test manifest and the audio folders it
    names, each system's config and training record), so that a re-run with nothing changed is
    skipped and any change redraws it."""
    conditions_need_a_key(key_path, conditions_path)  # an error, not a report skipped as up to date
    fusion = exp / "fusion"
    systems = read_fusion_summary(fusion)["systems"]
    options = {"version": 1, "code": source_digest("core", "fusion", "submit", "eval"),
               "python": platform.python_version(), "packages": package_versions((*RESULT_PACKAGES, "matplotlib")),
               "fusion": folder_listing(fusion), "key": None, "conditions": None, "test": None,
               "systems": {s: [signature_or_none(p, exp) for p in (training_record(exp, s), exp / s / "config.yaml")]
                           for s in systems}}
    if key_path is not None:
        options["key"] = signature_or_none(Path(key_path))
        conditions = Path(conditions_path) if conditions_path else demo_conditions(key_path)
        options["conditions"] = signature_or_none(conditions) if conditions is not None else None
        manifest = test_manifest / "manifest.tsv"
        # a folder's modification time moves when a file in it is added, removed or renamed
        folders = audio_folders_of(PreparedSplit(test_manifest)) if manifest.is_file() else []
        options["test"] = {"manifest": signature_or_none(manifest, exp),
                           "folders": {f: os.stat(f).st_mtime_ns if os.path.isdir(f) else None for f in folders}}
    return options


def stamped_rows(report: Path, options: dict) -> list[dict] | None:
    """The rows of a report drawn earlier from exactly these inputs; None when it must be drawn
    (no stamp, another input, or a results.json that no longer reads as the table's rows)."""
    if not stage_is_current(report, options):
        return None
    try:
        rows = json.loads((report / "results.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    table_keys = {"method", "submitted", "tau", "dev_precision", "dev_recall", "dev_f1"}
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and table_keys <= r.keys() for r in rows)):
        return None
    return rows


def print_results(rows: list[dict], exp: Path) -> None:
    print(results_table(rows))
    best_dev = max(rows, key=lambda r: r["dev_f1"])
    print(f"[evaluate] best on dev: {best_dev['method']} ({best_dev['dev_f1']:.4f})")
    if any("test_f1" in r for r in rows):
        best_test = max(rows, key=lambda r: r["test_f1"])
        print(f"[evaluate] best on test: {best_test['method']} ({best_test['test_f1']:.4f})")
    print(f"[evaluate] report: {exp / 'report' / 'README.md'}")


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--test_manifest", required=True, help="prepared test split folder (exp/data/test)")
    ap.add_argument("--key", default=None, help="test answer key; without it only dev is reported")
    ap.add_argument("--conditions", default=None,
                    help="test conditions: <id> <condition> lines or a TSV with utt_id and condition columns "
                         "(default: the demo corpus's meta.tsv beside the key's keys/ folder)")
    args = ap.parse_args()
    exp, test_manifest = Path(args.exp), Path(args.test_manifest)
    # a fusion older than what it stands for is reported no more than it is submitted. Read as it
    # is: a fusion without a stamp (its stage killed after the folder was in place), and one kept
    # without its members' score files (the report reads only the fusion)
    if read_stamp(exp / "fusion") is not None:
        check_fusion_is_current(exp / "fusion", test_manifest, "reporting", scores_needed=False)
    options = report_options(exp, test_manifest, args.key, args.conditions)
    rows = stamped_rows(exp / "report", options)
    if rows is not None:
        print(f"[evaluate] {exp / 'report'}: up to date, skipped")
    else:
        rows = write_report(exp, test_manifest, args.key, args.conditions)
        write_stamp(exp / "report", options, outputs=output_files(exp / "report"))
    print_results(rows, exp)


if __name__ == "__main__":
    run_cli(main)
