"""Open-set macro precision / recall / F1 of ADD 2023 Track 3 (after Geng et al., TPAMI 2021).

Known classes are those of 0–6 present in the answer key (C of them); 7 is unknown.
TP_i, FP_i, FN_i per known class i: an unknown utterance predicted i counts in FP_i, a known
utterance of class i predicted 7 counts in FN_i. P and R are macro averages over the C classes
(a class never predicted has precision 0) and F1 = 2PR / (P + R), the harmonic mean of the macro
averages, not the mean of per-class F1 (shared/spec/metric_and_formats.md).
"""
from __future__ import annotations

import numpy as np

from core.errors import fail
from core.labels import KNOWN_CLASSES, NUM_LABELS, UNKNOWN


def require_known_class(y_true, key_path) -> None:
    """The metric averages over the known classes (0–6) present in the key: a key without any
    (only 7, unknown) has nothing to average, so it is refused, naming the key, rather than scored."""
    if not np.any(np.isin(np.asarray(y_true), KNOWN_CLASSES)):
        fail(f"{key_path}: answer key holds only class {UNKNOWN} (unknown); the open-set metric needs at least "
             f"one utterance of a known class 0–{UNKNOWN - 1}")


def open_set_scores(y_true, y_pred, unknown: int = UNKNOWN) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    known = [c for c in KNOWN_CLASSES if c != unknown and np.any(y_true == c)]
    if not known:
        raise ValueError("the answer key holds no known class")
    precision, recall = [], []
    for c in known:
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / (tp + fn) if tp + fn else 0.0)
    p, r = float(np.mean(precision)), float(np.mean(recall))
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    unknown_mask = y_true == unknown
    unknown_recall = float(np.mean(y_pred[unknown_mask] == unknown)) if unknown_mask.any() else None
    return {"precision": p, "recall": r, "f1": f1, "known_classes": known, "unknown_recall": unknown_recall}


def full_report(y_true, y_pred) -> dict:
    """Everything eval/score.py prints: open-set P/R/F1 first, then the labelled extras."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(NUM_LABELS))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        "open_set": open_set_scores(y_true, y_pred),
        "sklearn_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "sklearn_labels": present,
        "per_class": [{"label": c, "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                       "support": int(support[c])} for c in labels],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n": int(len(y_true)),
    }
