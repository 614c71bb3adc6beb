"""`submit_method: auto`: which fused method the submission uses, chosen on dev alone.

The plain rule, the best dev F1 at τ, picks the luckiest of several methods when dev is small: on the
demo's 140 dev utterances one utterance moves macro F1 by about 0.01, and methods a few thousandths
apart are ranked by chance. So the choice follows the one-standard-error rule (Breiman et al. 1984;
Hastie, Tibshirani & Friedman, ESL §7.10): every candidate whose dev F1 lies within `se` standard
errors of the best one's counts as tied with it, and the tie goes to the first of them in registry
order (score, score_aug, feature, ..., stack: the simpler methods first). The standard error is the
bootstrap one of the best method's dev F1 (its decisions on resamples of the dev utterances). On a dev
of real size (8,400 utterances) it is a few thousandths and the rule rarely departs from the best.

With the leave-one-out threshold rule the dev criterion is a mean over pseudo-unknown folds, not a
figure of the utterances' decisions, so it has no bootstrap here and the best one is taken.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import fail
from core.labels import KNOWN_CLASSES, NUM_LABELS


@dataclass
class AutoConfig:
    se: float = 1.0          # a candidate within se × the bootstrap SE of the best dev F1 ties with it; 0 = plain best
    bootstrap: int = 1000    # bootstrap resamples of the dev utterances
    seed: int = 0

    def __post_init__(self):
        if self.se < 0 or self.bootstrap < 2:
            fail(f"auto.se {self.se} must be ≥ 0 and auto.bootstrap {self.bootstrap} at least 2")


def resample_indices(n_utterances: int, n: int, seed: int) -> np.ndarray:
    """n bootstrap resamples (with replacement) of the dev utterances: (n, n_utterances) indices."""
    return np.random.default_rng(seed).integers(0, n_utterances, size=(n, n_utterances))


def bootstrap_open_set_f1(labels: np.ndarray, pred: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Open-set macro F1 (core.metrics.open_set_scores) of dev decisions `pred` on each resample (row
    of `draws`) of the dev utterances: (n,) F1."""
    n = len(draws)
    # memory: three (n, dev utterances) int64 arrays, ~200 MB for 1,000 × 8,400
    cells = labels[draws] * NUM_LABELS + pred[draws] + np.arange(n)[:, None] * NUM_LABELS ** 2
    confusion = np.bincount(cells.ravel(), minlength=n * NUM_LABELS ** 2).reshape(n, NUM_LABELS, NUM_LABELS)
    tp = confusion[:, KNOWN_CLASSES, KNOWN_CLASSES]
    truth = confusion.sum(axis=2)[:, KNOWN_CLASSES]
    # a known class's precision counts every prediction of it, whatever the true label
    predicted = confusion.sum(axis=1)[:, KNOWN_CLASSES]
    present = truth > 0  # the macro averages run over the known classes each resample holds
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(present, tp / truth, 0.0)
        p = (precision * present).sum(axis=1) / present.sum(axis=1)
        r = (recall * present).sum(axis=1) / present.sum(axis=1)
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def choose_submission(methods: dict[str, dict], candidates: list[str], dev_labels: np.ndarray | None = None,
                      best_decisions: dict[str, np.ndarray] | None = None,
                      cfg: AutoConfig | None = None) -> tuple[str, float | None, list[str]]:
    """The submitted candidate, the bootstrap SE of the best dev F1 (None without it) and the
    candidates tied with the best. Without dev decisions (or with se = 0) the best dev F1 at τ wins;
    an exact tie goes to the first in registry order. `best_decisions` maps a method to its dev
    decisions; only the best one's are read."""
    cfg = cfg or AutoConfig(se=0.0)
    scored = [c for c in candidates if c in methods and methods[c]["dev_f1_at_tau"] is not None]
    if not scored:
        fail(f"submit_method auto: no fused method has a dev F1 at its τ (candidates {candidates}); "
             "name the method to submit in the fusion config")
    f1 = {c: methods[c]["dev_f1_at_tau"] for c in scored}
    best = max(scored, key=lambda c: (f1[c], -scored.index(c)))
    if cfg.se == 0 or best_decisions is None or best not in best_decisions:
        return best, None, [c for c in scored if f1[c] == f1[best]]
    draws = resample_indices(len(dev_labels), cfg.bootstrap, cfg.seed)
    boot = bootstrap_open_set_f1(np.asarray(dev_labels), np.asarray(best_decisions[best]), draws)
    se = float(np.std(boot, ddof=1))
    tied = [c for c in scored if f1[best] - f1[c] <= cfg.se * se]
    return tied[0], se, tied
