"""Score predictions against an answer key with the ADD 2023 Track 3 metric.

    python eval/score.py preds.txt labels.txt [--json] [--scores FILE] [--conditions FILE]

Both files hold `<file> <label>` lines (ids with or without .wav). Prints the open-set macro
P / R / F1 first, then sklearn's macro-F1 over the labels present, the per-class table and the
8x8 confusion matrix (rows: true label, columns: predicted).

--scores FILE: a TSV of per-utterance scores (core/utt_tables.py: `utt_id` and known_score,
unknown_score, fake_score or p_0; `submit.predict --out` writes one) adds unknown-vs-known AUROC
and FPR at 95 % TPR (known classes 0–6 positive) and the real-vs-fake EER (1–7 positive). Rows
whose `error` column is filled (files predict could not read) have no scores and are left out of
these three figures, with a count; their labels still count in P / R / F1.
--conditions FILE: `<id> <condition>` lines or a TSV with utt_id and condition columns (the demo's
meta.tsv) adds open-set F1, known-class accuracy and unknown recall per condition. A TSV with a
`generator` column too splits the unknown class by generator: the share labelled unknown, the label
most often given instead and, with --scores, AUROC and FPR95 against every known-class utterance.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import ArgumentParser, fail, run_cli  # noqa: E402
from core.label_files import read_label_lines  # noqa: E402
from core.labels import ALL_LABELS, NUM_LABELS  # noqa: E402
from core.labels import REAL, UNKNOWN  # noqa: E402
from core.metrics import (  # noqa: E402
    auroc,
    equal_error_rate,
    fpr_at_tpr,
    full_report,
    per_condition,
    per_generator,
    require_known_class,
)
from core.utt_tables import read_condition_file, read_score_columns, values_for  # noqa: E402


def aligned_labels(pred_path: str, key_path: str) -> tuple[list[str], list[int], list[int]]:
    preds = read_label_lines(pred_path, ALL_LABELS, "prediction file")
    key = read_label_lines(key_path, ALL_LABELS, "answer key")
    pred_map = {u: (lab, line) for u, lab, line in preds}
    key_map = {u: (lab, line) for u, lab, line in key}
    for u, _, line in preds:
        if u not in key_map:
            fail(f"{pred_path}:{line}: id {u} is not in the answer key {key_path}")
    for u, _, line in key:
        if u not in pred_map:
            fail(f"{key_path}:{line}: id {u} has no prediction in {pred_path}")
    ids = [u for u, _, _ in key]
    require_known_class([lab for _, lab, _ in key], key_path)
    return ids, [key_map[u][0] for u in ids], [pred_map[u][0] for u in ids]


def score_metrics(path: str, score_columns: tuple, ids: list[str], y_true: list[int]) -> dict:
    """AUROC and FPR95 from a known-ness column, EER from a fake-ness column, for the key's ids
    (`score_columns`: read_score_columns of `path`)."""
    columns, unscored = score_columns
    some = next(iter(columns.values()))
    listed = set(some) | set(unscored)
    missing, extra = [u for u in ids if u not in listed], sorted(listed - set(ids))
    if missing:
        fail(f"{path}: no score for id {missing[0]} of the answer key ({len(missing)} missing)")
    if extra:
        fail(f"{path}: id {extra[0]} is not in the answer key ({len(extra)} such)")
    # files predict could not read have a label (7) but no scores: the score metrics leave them out
    truth = np.array([y for u, y in zip(ids, y_true) if u in some])
    ids = [u for u in ids if u in some]
    out = {"unscored": len(unscored)} if unscored else {}
    known_column = known_ness(columns)
    if known_column is not None:
        name, by_id = known_column
        known = np.array([by_id[u] for u in ids])
        is_known = truth != UNKNOWN
        if is_known.all() or not is_known.any():
            fail(f"{path}: AUROC and FPR95 need known (0–6) and unknown (7) utterances in the answer key")
        out["unknown_vs_known"] = {"score": name, "auroc": auroc(known, is_known),
                                   "fpr95": fpr_at_tpr(known, is_known, 0.95),
                                   "known": int(is_known.sum()), "unknown": int((~is_known).sum())}
    if "fake_score" in columns or "p_0" in columns:
        name = "fake_score" if "fake_score" in columns else "p_0"
        fake = np.array([columns[name][u] if name == "fake_score" else 1.0 - columns[name][u] for u in ids])
        is_fake = truth != REAL
        if is_fake.all() or not is_fake.any():
            fail(f"{path}: the real-vs-fake EER needs real (0) and fake (1–7) utterances in the answer key")
        out["real_vs_fake"] = {"score": name if name == "fake_score" else "1 - p_0",
                               "eer": equal_error_rate(fake, is_fake),
                               "real": int((~is_fake).sum()), "fake": int(is_fake.sum())}
    if not set(out) - {"unscored"}:
        fail(f"{path}: neither a known-ness column (known_score, unknown_score) nor a fake-ness column "
             "(fake_score, p_0)")
    return out


def known_ness(columns: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]] | None:
    """The known-ness per id (higher = more like a known class) and how it was read: known_score,
    else −unknown_score; None without either column."""
    if "known_score" in columns:
        return "known_score", columns["known_score"]
    if "unknown_score" in columns:
        return "-unknown_score", {u: -v for u, v in columns["unknown_score"].items()}
    return None


def generator_rows(path: str, generators: dict[str, str], ids: list[str], y_true: list[int], y_pred: list[int],
                   score_columns: tuple | None) -> list[dict]:
    """The unknown class per generator (the condition TSV's generator column), with AUROC and FPR95
    when there are scores."""
    known = known_ness(score_columns[0]) if score_columns is not None else None
    # files predict could not read have no score: NaN, left out of the AUROC
    values = [known[1].get(u, np.nan) for u in ids] if known is not None else None
    return per_generator(y_true, y_pred, values_for(ids, generators, path, "generator"), values)


def format_generators(rows: list[dict]) -> str:
    lines = ["generator            n  unknown recall  most often labelled    AUROC   FPR95"]
    for r in rows:
        taken = f"{r['taken_for']} ({r['taken_share']:.0%})" if r["taken_for"] is not None else "–"
        lines.append(f"{r['generator'][:18]:<18} {r['n']:>4}  {fmt(r['unknown_recall']):>14}  {taken:>19}  "
                     f"{fmt(r.get('auroc')):>7} {fmt(r.get('fpr95')):>7}")
    return "\n".join(lines)


def condition_rows(path: str, conditions: dict[str, str], ids: list[str], y_true: list[int],
                   y_pred: list[int]) -> list[dict]:
    return per_condition(y_true, y_pred, values_for(ids, conditions, path, "condition"))


def fmt(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def format_conditions(rows: list[dict]) -> str:
    lines = ["condition        n  known  unknown  open-set F1  known acc  unknown recall"]
    for r in rows:
        lines.append(f"{r['condition'][:12]:<12} {r['n']:>5}  {r['known']:>5}  {r['unknown']:>7}  "
                     f"{fmt(r['open_set_f1']):>11}  {fmt(r['known_accuracy']):>9}  {fmt(r['unknown_recall']):>14}")
    return "\n".join(lines)


def format_scores(metrics: dict) -> str:
    lines = []
    if "unknown_vs_known" in metrics:
        m = metrics["unknown_vs_known"]
        lines.append(f"unknown vs known ({m['score']}, known positive): AUROC {m['auroc']:.4f}  FPR95 {m['fpr95']:.4f}"
                     f"   [{m['known']} known, {m['unknown']} unknown]")
    if "real_vs_fake" in metrics:
        m = metrics["real_vs_fake"]
        lines.append(f"real vs fake ({m['score']}, fake positive): EER {m['eer']:.4f}"
                     f"   [{m['real']} real, {m['fake']} fake]")
    if metrics.get("unscored"):
        lines.append(f"({metrics['unscored']} utterance(s) with an error and no scores left out of these figures; "
                     "their labels count above)")
    return "\n".join(lines)


def format_report(rep: dict) -> str:
    o = rep["open_set"]
    lines = [f"open-set macro (ADD 2023 Track 3): P {o['precision']:.4f}  R {o['recall']:.4f}  F1 {o['f1']:.4f}"
             f"   [{len(o['known_classes'])} known classes, {rep['n']} utterances]"]
    if o["unknown_recall"] is not None:
        lines.append(f"unknown-class (7) recall: {o['unknown_recall']:.4f}")
    lines.append(f"sklearn macro-F1 over the labels present {rep['sklearn_labels']}: {rep['sklearn_macro_f1']:.4f}")
    lines.append("")
    lines.append("label  precision  recall     f1  support")
    for row in rep["per_class"]:
        lines.append(f"{row['label']:>5}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}")
    lines.append("")
    lines.append("confusion (rows true, columns predicted)")
    lines.append("      " + "".join(f"{c:>6}" for c in range(NUM_LABELS)))
    for c, row in enumerate(rep["confusion"]):
        lines.append(f"{c:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preds")
    ap.add_argument("labels")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--scores", help="TSV of per-utterance scores: AUROC, FPR95 (known_score or unknown_score), "
                                     "EER (fake_score or p_0)")
    ap.add_argument("--conditions", help="<id> <condition> lines or a TSV with utt_id and condition columns")
    args = ap.parse_args()
    ids, y_true, y_pred = aligned_labels(args.preds, args.labels)
    rep = full_report(y_true, y_pred)
    text = [format_report(rep)]
    score_columns = read_score_columns(args.scores) if args.scores else None
    if args.scores:
        rep["scores"] = score_metrics(args.scores, score_columns, ids, y_true)
        text += ["", format_scores(rep["scores"])]
    if args.conditions:
        conditions, generators = read_condition_file(args.conditions)
        rep["conditions"] = condition_rows(args.conditions, conditions, ids, y_true, y_pred)
        text += ["", "per condition (an utterance counts in each part of its condition)",
                 format_conditions(rep["conditions"])]
        by_generator = (generator_rows(args.conditions, generators, ids, y_true, y_pred, score_columns)
                        if generators is not None else None)
        if by_generator:
            rep["generators"] = by_generator
            text += ["", "the unknown class (7) per generator (AUROC, FPR95: against every known-class utterance)",
                     format_generators(by_generator)]
    print(json.dumps(rep) if args.json else "\n".join(text))


if __name__ == "__main__":
    run_cli(main)
