"""Choosing τ without unknown data (shared/spec/fusion.md).

A scorer (fusion/scorers.py) gives `scores(split, held_out)`, a score matrix over the kept known
classes (and, for OpenMax, an unknown column last); higher means more "known". Rules:
  quantile       τ rejects a fraction q of dev utterances (all of known classes);
  leave-one-out  for each fake class c in 1–6, the method's statistics are rebuilt without c (its
                 column, class subspace or OpenMax model is dropped — no network is retrained), dev
                 utterances of c become unknown, and τ maximises the mean open-set F1 of the six folds;
  fixed          a value the user gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.labels import FAKE_CLASSES, UNKNOWN, kept_classes
from core.metrics import known_classes_present, macro_open_set, open_set_scores

# τ candidates at 201 quantiles of the dev scores: every distinct decision boundary of a small dev
# set, and a bounded cost on a large one
GRID_POINTS = 201


def known_max(scores: np.ndarray, unknown_column: bool) -> np.ndarray:
    return (scores[:, :-1] if unknown_column else scores).max(axis=1)


def class_decisions(scores: np.ndarray, held_out: int | None = None,
                    unknown_column: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the argmax over the kept classes, its score (what τ is compared with), and whether
    the unknown column wins regardless of τ."""
    known = scores[:, :-1] if unknown_column else scores
    top = known.max(axis=1)
    to_unknown = scores[:, -1] > top if unknown_column else np.zeros(len(top), dtype=bool)
    return kept_classes(held_out)[known.argmax(axis=1)], top, to_unknown


def decide_labels(scores: np.ndarray, tau: float, held_out: int | None = None,
                  unknown_column: bool = False) -> np.ndarray:
    """Labels in 0–7: argmax over the kept classes, 7 when its score is below τ (or, with an
    unknown column, when the unknown score wins)."""
    labels, top, to_unknown = class_decisions(scores, held_out, unknown_column)
    return np.where((top < tau) | to_unknown, UNKNOWN, labels)


def tau_grid(values: np.ndarray) -> np.ndarray:
    qs = np.linspace(0.0, 1.0, GRID_POINTS)
    return np.unique(np.concatenate([[-np.inf], np.quantile(values, qs), [np.inf]]))


def f1_curve(scores: np.ndarray, truth: np.ndarray, grid: np.ndarray, held_out: int | None = None,
             unknown_column: bool = False) -> np.ndarray:
    """open_set_scores(truth, decide_labels(scores, τ, ...))["f1"] at every τ of `grid`, bit for bit.
    A τ only decides which utterances keep their argmax class, so each class's true and predicted
    counts at every τ come from one sort of the kept utterances' top scores: at the challenge's
    79,490 test utterances that is one pass instead of one per τ."""
    truth = np.asarray(truth)
    labels, top, to_unknown = class_decisions(scores, held_out, unknown_column)
    classes = known_classes_present(truth)

    def kept_at_each_tau(rows: np.ndarray) -> np.ndarray:
        """How many of `rows` keep their class at each τ (top score ≥ τ, not sent to the unknown column)."""
        ordered = np.sort(top[rows & ~to_unknown])
        return len(ordered) - np.searchsorted(ordered, grid, side="left")

    true_pos = np.array([kept_at_each_tau((labels == c) & (truth == c)) for c in classes]).T
    predicted = np.array([kept_at_each_tau(labels == c) for c in classes]).T
    support = [int(np.sum(truth == c)) for c in classes]
    return np.array([macro_open_set(tp.tolist(), n.tolist(), support)[2] for tp, n in zip(true_pos, predicted)])


@dataclass
class Threshold:
    tau: float
    rule: str
    curve_tau: np.ndarray  # the τ grid of the dev criterion
    curve_f1: np.ndarray  # dev open-set F1 (mean over pseudo-unknown folds for leave-one-out)


def choose_tau(method, dev_labels: np.ndarray, rule: str, q: float = 0.05,
               fixed: float | None = None) -> Threshold:
    dev = method.scores("dev", None)
    grid = tau_grid(known_max(dev, method.unknown_column))
    if rule == "leave-one-out":
        curves = []
        for c in FAKE_CLASSES:
            folded = method.scores("dev", c)
            truth = np.where(dev_labels == c, UNKNOWN, dev_labels)
            curves.append(f1_curve(folded, truth, grid, c, method.unknown_column))
        mean = np.mean(curves, axis=0)
        finite = np.isfinite(grid)
        best = np.flatnonzero(finite)[np.argmax(mean[finite])]
        return Threshold(float(grid[best]), rule, grid, mean)
    curve = f1_curve(dev, dev_labels, grid, None, method.unknown_column)
    if rule == "quantile":
        tau = float(np.quantile(known_max(dev, method.unknown_column), q)) if q > 0 else float("-inf")
    elif rule == "fixed":
        tau = float(fixed)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return Threshold(tau, rule, grid, curve)


def dev_f1_at_tau(threshold: Threshold | None, rule: str, dev_labels: np.ndarray,
                  dev_pred: np.ndarray) -> float | None:
    """The dev F1 of a method at its chosen τ, on the rule's own dev criterion: the mean open-set F1
    of the pseudo-unknown folds for leave-one-out, the open-set F1 of its dev decisions otherwise.
    None where leave-one-out has no curve of the method (label fusion: only its members have τ)."""
    if rule != "leave-one-out":
        return float(open_set_scores(dev_labels, dev_pred)["f1"])
    if threshold is None or not len(threshold.curve_tau):
        return None
    return float(threshold.curve_f1[np.flatnonzero(threshold.curve_tau == threshold.tau)[0]])

