"""Stacked fusion: a multinomial logistic regression on the members' embeddings, fitted on dev.

The members' utterance embeddings, each L2-normalised, side by side, are the features; the
classifier is sklearn's `LogisticRegression` (L2 penalty, lbfgs), fitted on the dev split, whose
copy in this kit carries the test conditions (noise, music, babble, codecs). Its softmax is the
method's class shares and its maximum the known-ness score.

The regularisation C sets how confident the classifier may become, and so how well its maximum
probability separates unseen algorithms; dev has none, so C is chosen by leave-one-fake-class-out
on dev: within `select_folds` stratified folds, each fake class in turn is left out of the fitting
rows and plays the unknown among the held-out fold's utterances, and the C of the best mean
unknown-vs-known AUROC wins (the smallest C among equals). Dev scores are out-of-fold (`folds`
folds), so τ is never chosen on the utterances the classifier was fitted on; test is scored by
the classifier fitted on all of dev.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.errors import fail
from core.labels import FAKE_CLASSES, kept_classes
from core.metrics import auroc
from fusion.manifold_fusion import stratified_folds

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression


@dataclass
class StackConfig:
    # C values tried, smallest first (sklearn's inverse L2 strength, on unit-norm member embeddings)
    c_grid: list[float] = field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    folds: int = 5          # out-of-fold dev scores
    select_folds: int = 2   # leave-one-fake-class-out folds for the choice of C
    max_iter: int = 1000    # lbfgs iterations per fit

    def __post_init__(self):
        if not self.c_grid or any(not (isinstance(c, (int, float)) and c > 0) for c in self.c_grid):
            fail(f"stack.c_grid {self.c_grid}: give one or more positive C values")
        self.c_grid = sorted(float(c) for c in self.c_grid)
        if self.folds < 2 or self.select_folds < 2:
            fail(f"stack.folds {self.folds} and stack.select_folds {self.select_folds} must be at least 2")
        if self.max_iter < 1:
            fail(f"stack.max_iter {self.max_iter} must be at least 1")


def fit_classifier(X: np.ndarray, y: np.ndarray, C: float, max_iter: int,
                   classes: np.ndarray) -> LogisticRegression:
    """The logistic regression of rows X with labels y, which must hold every one of `classes`."""
    # imported here: sklearn takes 2 s to import, which every fusion-config reader (predict's
    # argument errors included) would otherwise pay
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    missing = sorted(set(classes.tolist()) - set(np.unique(y).tolist()))
    if missing:
        fail(f"stack: no dev utterance of class(es) {missing} in a fitting fold; the dev split is too small "
             "for stack.folds / stack.select_folds")
    with warnings.catch_warnings():
        # a fit stopped at max_iter is still a usable classifier; C is chosen on what it gives
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=max_iter).fit(X, y)


def fit_kept(X: np.ndarray, y: np.ndarray, C: float, cfg: StackConfig, held_out: int | None,
             rows: np.ndarray | None = None) -> LogisticRegression:
    """The logistic regression of the dev rows (all, or the `rows` mask) of the classes kept when
    `held_out` is left out."""
    kept = kept_classes(held_out)
    fit_rows = np.isin(y, kept) if rows is None else rows & np.isin(y, kept)
    return fit_classifier(X[fit_rows], y[fit_rows], C, cfg.max_iter, kept)


def leave_class_out_auroc(X: np.ndarray, y: np.ndarray, C: float, cfg: StackConfig) -> float:
    """Mean AUROC, over the select folds and the fake classes, of the max probability of a classifier
    fitted without the fold and without the class, on the fold's utterances (the class unknown)."""
    folds = stratified_folds(y, cfg.select_folds)
    values = []
    for f in np.unique(folds):
        held = folds == f
        for c in FAKE_CLASSES:
            unknown = y[held] == c
            if not unknown.any() or unknown.all():
                continue
            model = fit_kept(X, y, C, cfg, c, rows=~held)
            values.append(auroc(model.predict_proba(X[held]).max(axis=1), ~unknown))
    if not values:
        fail("stack: no fake class of dev falls in more than one fold; the dev split is too small to choose C")
    return float(np.mean(values))


def choose_c(X: np.ndarray, y: np.ndarray, cfg: StackConfig) -> tuple[float, dict[float, float]]:
    """The C of the grid with the best leave-one-fake-class-out AUROC on dev, and every C's AUROC."""
    per_c = {C: leave_class_out_auroc(X, y, C, cfg) for C in cfg.c_grid}
    best = max(per_c.values())
    return next(C for C in cfg.c_grid if per_c[C] == best), per_c


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, C: float, cfg: StackConfig,
                      held_out: int | None) -> np.ndarray:
    """(N, kept) class probabilities of every dev row from a classifier fitted on the other folds'
    rows of the kept classes (rows of `held_out` are scored, never fitted)."""
    folds = stratified_folds(y, cfg.folds)
    out = np.empty((len(y), len(kept_classes(held_out))))
    for f in np.unique(folds):
        held = folds == f
        out[held] = fit_kept(X, y, C, cfg, held_out, rows=~held).predict_proba(X[held])
    return out
