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


def known_classes_present(y_true, unknown: int = UNKNOWN) -> list[int]:
    """The known classes the open-set metric averages over: those the key holds."""
    known = [c for c in KNOWN_CLASSES if c != unknown and np.any(np.asarray(y_true) == c)]
    if not known:
        raise ValueError("the answer key holds no known class")
    return known


def macro_open_set(true_pos: list[int], predicted: list[int], support: list[int]) -> tuple[float, float, float]:
    """Macro precision, recall and F1 over the known classes from each class's counts: utterances
    of the class given it, utterances given it, utterances of it (a class never given has
    precision 0)."""
    precision = [tp / n if n else 0.0 for tp, n in zip(true_pos, predicted)]
    recall = [tp / n if n else 0.0 for tp, n in zip(true_pos, support)]
    p, r = float(np.mean(precision)), float(np.mean(recall))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def open_set_scores(y_true, y_pred, unknown: int = UNKNOWN) -> dict:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    known = known_classes_present(y_true, unknown)
    p, r, f1 = macro_open_set([int(np.sum((y_true == c) & (y_pred == c))) for c in known],
                              [int(np.sum(y_pred == c)) for c in known],
                              [int(np.sum(y_true == c)) for c in known])
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


# ------------------------------------------------------------------ scores: unknown vs known, real vs fake

def _two_classes(scores, positive, what: str) -> tuple[np.ndarray, np.ndarray]:
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"{what}: one score per utterance expected")
    if positive.all() or not positive.any():
        raise ValueError(f"{what} needs utterances of both kinds")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: scores must be finite")
    return scores[positive], scores[~positive]


def auroc(scores, positive) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (Mann–Whitney U from average ranks)."""
    from scipy.stats import rankdata

    pos, neg = _two_classes(scores, positive, "AUROC")
    ranks = rankdata(np.concatenate([pos, neg]))[:len(pos)]
    return float((ranks.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fpr_at_tpr(scores, positive, tpr: float = 0.95) -> float:
    """The fraction of negatives accepted at the highest threshold that accepts (score ≥ threshold)
    at least `tpr` of the positives: FPR95 with known utterances positive is the share of unknown
    utterances taken for known when 95 % of known ones are kept."""
    pos, neg = _two_classes(scores, positive, "FPR at TPR")
    ranked = np.sort(pos)[::-1]
    # the fewest positives to accept, compared as sklearn's roc_curve does (k / n ≥ tpr)
    need = int(np.argmax(np.arange(1, len(pos) + 1) / len(pos) >= tpr)) + 1
    return float(np.mean(neg >= ranked[need - 1]))


def equal_error_rate(scores, positive) -> float:
    """Where the miss rate (positives below the threshold) equals the false-alarm rate (negatives at
    or above it), over every threshold between observed scores; at the crossing of the two step
    curves, their mean (the ASVspoof convention)."""
    pos, neg = _two_classes(scores, positive, "EER")
    thresholds = np.concatenate([np.unique(np.concatenate([pos, neg])), [np.inf]])
    miss = np.searchsorted(np.sort(pos), thresholds, side="left") / len(pos)
    false_alarm = 1.0 - np.searchsorted(np.sort(neg), thresholds, side="left") / len(neg)
    i = int(np.argmin(np.abs(miss - false_alarm)))
    return float((miss[i] + false_alarm[i]) / 2)


# ------------------------------------------------------------------ per condition

# the demo corpus's test conditions (data_prep/demo_corpus.py: `noise:<kind>:<snr>` and
# `codec:<name>`, joined by "+"), grouped as the issue reports them; other names stay as given
NOISE_GROUPS = {"effects": "noise", "music": "music", "babble": "babble"}
GROUP_ORDER = ("clean", "noise", "music", "babble", "codec")


def condition_groups(condition: str) -> list[str]:
    """The groups an utterance's condition belongs to: one per '+'-joined part (noise and codec
    together count in both)."""
    groups = []
    for part in condition.split("+"):
        head, _, rest = part.partition(":")
        if head == "noise" and rest:
            group = NOISE_GROUPS.get(rest.split(":")[0], "noise")
        elif head == "codec" and rest:
            group = "codec"
        else:
            group = part
        if group not in groups:
            groups.append(group)
    return groups


def per_condition(y_true, y_pred, conditions, closed_pred=None) -> list[dict]:
    """Open-set F1, known-class accuracy (known utterances given exactly their class, the unknown
    rule included), unknown recall and, with `closed_pred` (the class decision before the unknown
    rule), closed-set accuracy: over all utterances, then per condition group."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    groups = [condition_groups(str(c)) for c in conditions]
    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    names = sorted({g for gs in groups for g in gs}, key=lambda g: (order.get(g, len(order)), g))
    rows = []
    for name in ["all", *names]:
        sel = np.array([name == "all" or name in gs for gs in groups])
        t, p = y_true[sel], y_pred[sel]
        known = t != UNKNOWN
        row = {"condition": name, "n": int(sel.sum()), "known": int(known.sum()), "unknown": int((~known).sum()),
               "open_set_f1": open_set_scores(t, p)["f1"] if known.any() else None,
               "known_accuracy": float(np.mean(p[known] == t[known])) if known.any() else None,
               "unknown_recall": float(np.mean(p[~known] == UNKNOWN)) if (~known).any() else None}
        if closed_pred is not None:
            c = np.asarray(closed_pred)[sel]
            row["closed_set_accuracy"] = float(np.mean(c[known] == t[known])) if known.any() else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------ per class

def per_class(y_true, y_pred, closed_pred=None) -> list[dict]:
    """Per label present in the key (0–6, then 7): precision and recall of the decisions (for 7, the
    unknown rule's), the most frequent wrong decision and its share of the label's utterances, and,
    with `closed_pred` (the class decision before the unknown rule), the closed-set recall of each
    known class: which classes the members confuse, and where the unknowns go."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rows = []
    for c in [c for c in range(NUM_LABELS) if np.any(y_true == c)]:
        mine = y_true == c
        predicted = y_pred == c
        wrong = y_pred[mine & ~predicted]
        counts = np.bincount(wrong, minlength=NUM_LABELS)
        row = {"label": int(c), "n": int(mine.sum()),
               "precision": float(np.mean(y_true[predicted] == c)) if predicted.any() else None,
               "recall": float(np.mean(predicted[mine])),
               "mistaken_for": int(np.argmax(counts)) if len(wrong) else None,
               "mistaken_share": float(counts.max() / mine.sum()) if len(wrong) else 0.0}
        if closed_pred is not None and c != UNKNOWN:
            row["closed_set_recall"] = float(np.mean(np.asarray(closed_pred)[mine] == c))
        rows.append(row)
    return rows


# ------------------------------------------------------------------ per unseen generator

def per_generator(y_true, y_pred, generators, known=None) -> list[dict]:
    """Per generator of the unknown-class (7) utterances: how many, the share the decisions label
    unknown, the most frequent other label and its share, and, with `known` (a method's known-ness
    per utterance; NaN where it has no score), unknown-vs-known AUROC and FPR95 of that generator's
    utterances against every known-class one. Which unseen algorithms a method misses, and for
    what it takes them."""
    y_true, y_pred, generators = np.asarray(y_true), np.asarray(y_pred), np.asarray(generators, dtype=object)
    is_known = y_true != UNKNOWN
    known = None if known is None else np.asarray(known, dtype=np.float64)
    rows = []
    for name in sorted({str(g) for g in generators[~is_known]}):
        mine = ~is_known & (generators == name)
        wrong = y_pred[mine & (y_pred != UNKNOWN)]
        counts = np.bincount(wrong, minlength=NUM_LABELS)
        row = {"generator": name, "n": int(mine.sum()), "unknown_recall": float(np.mean(y_pred[mine] == UNKNOWN)),
               "taken_for": int(np.argmax(counts)) if len(wrong) else None,
               "taken_share": float(counts.max() / mine.sum()) if len(wrong) else 0.0}
        if known is not None:
            sel = (is_known | mine) & np.isfinite(known)
            both = is_known[sel].any() and not is_known[sel].all()
            row["auroc"] = auroc(known[sel], is_known[sel]) if both else None
            row["fpr95"] = fpr_at_tpr(known[sel], is_known[sel], 0.95) if both else None
        rows.append(row)
    return rows
