"""Decision methods as small scorer classes behind one registry (after pytorch-ood's detectors).

A scorer is fitted on the train/dev exports (`fit`), gives per-utterance scores over the kept
known classes for a split (`scores(split, held_out)`; higher = more "known"; OpenMax appends an
unknown column), picks τ on dev with the configured rule (`choose_threshold`) and turns scores into
labels 0–7 (`decide`). Label fusion overrides the last two: it has member thresholds, not one τ.

Adding a scorer: one class here and one line in `REGISTRY`; its `instances` says how many it
makes for a list of systems (one per system, one for the fusion, or none).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import KitError, fail
from fusion.calibrate import Threshold, choose_tau, decide_labels
from fusion.config import FusionConfig
from fusion.logit_fusion import label_fusion, score_fusion, softmax_scores
from fusion.manifold_fusion import FeatureDistances, distance_scores
from fusion.members import SplitScores
from fusion.openmax import fit_openmax, openmax_scores

SPLITS = ("dev", "test")


@dataclass
class FusionContext:
    """What every scorer reads: the members' aligned exports, the config, and caches they share."""
    data: dict[str, SplitScores]
    systems: list[str]
    cfg: FusionConfig
    shared: dict = field(default_factory=dict)

    def feature_distances(self) -> FeatureDistances:
        if "feature" not in self.shared:
            self.shared["feature"] = FeatureDistances(self.data, self.cfg.feature)
        return self.shared["feature"]


class Scorer:
    name = ""
    description = ""
    unknown_column = False
    optional = False  # a comparison variant: skipped with a message when the data cannot support it

    def __init__(self, ctx: FusionContext):
        self.ctx = ctx

    @classmethod
    def instances(cls, ctx: FusionContext) -> list[Scorer]:
        """Fusion scorers: one instance when there are at least two members."""
        return [cls(ctx)] if len(ctx.systems) >= 2 else []

    def fit(self) -> None:
        """Statistics from the train/dev exports. Default: none."""

    def scores(self, split: str, held_out: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def choose_threshold(self, dev_labels: np.ndarray) -> Threshold | None:
        th = self.ctx.cfg.threshold
        return choose_tau(self, dev_labels, th.rule, th.q, th.tau)

    def restore_threshold(self, info: dict) -> Threshold | None:
        """The threshold the fusion stage chose, from its tau.json (for `predict`)."""
        return Threshold(info["tau"], info["rule"], np.array([]), np.array([]))

    def decide(self, split: str, threshold: Threshold | None) -> np.ndarray:
        return decide_labels(self.scores(split), threshold.tau, None, self.unknown_column)

    def info(self) -> dict:
        """Extra entries for the method's tau.json."""
        return {}


class SystemScorer(Scorer):
    """A scorer of one member's logits: one instance per system."""

    def __init__(self, ctx: FusionContext, system: str):
        super().__init__(ctx)
        self.system = system

    @classmethod
    def instances(cls, ctx: FusionContext) -> list[Scorer]:
        return [cls(ctx, s) for s in ctx.systems]

    def logits(self, split: str) -> np.ndarray:
        return self.ctx.data[split].logits[self.system]


class MaxSoftmax(SystemScorer):
    """Max softmax against τ (the organisers' S06 for lfcc_resnet18)."""

    def __init__(self, ctx: FusionContext, system: str):
        super().__init__(ctx, system)
        self.name, self.description = f"softmax:{system}", f"{system}, max softmax"

    def scores(self, split, held_out=None):
        return softmax_scores(self.logits(split), held_out)


class OpenMax(SystemScorer):
    """OpenMax recalibration (the organisers' S07 for lfcc_resnet18)."""
    unknown_column = True

    def __init__(self, ctx: FusionContext, system: str):
        super().__init__(ctx, system)
        self.name = f"openmax:{system}"

    def fit(self):
        om = self.ctx.cfg.openmax
        train = self.ctx.data["train"]
        self.model = fit_openmax(train.logits[self.system], train.labels, om.alpha, om.tail)
        self.description = f"{self.system}, OpenMax (alpha {self.model.alpha})"

    def scores(self, split, held_out=None):
        return openmax_scores(self.model, self.logits(split), held_out)


class ScoreFusion(Scorer):
    """Mean of the members' softmax (seed 004 §3.5.2), plain."""
    name, description, augment = "score", "mean softmax", False

    def scores(self, split, held_out=None):
        sc = self.ctx.cfg.score
        logits = {s: self.ctx.data[split].logits[s] for s in self.ctx.systems}
        return score_fusion(logits, sc.weights, self.augment, sc.clip, sc.scale, held_out)


class AugmentedScoreFusion(ScoreFusion):
    """The same after seed 004's 'inference augmentation' (logits clipped and scaled)."""
    name, augment = "score_aug", True

    @property
    def description(self):
        sc = self.ctx.cfg.score
        return f"mean softmax of clip(±{sc.clip:g})·{sc.scale:g} logits"


class FeatureFusion(Scorer):
    """Manifold fusion (seed 004 §3.5.3) in its four reported variants: statistics from the
    configured split or the other one, with or without the class mean direction, eq. 2–4
    normalisation or a temperature softmax."""

    def __init__(self, ctx: FusionContext, name: str, stats_from: str, include_mean: bool, kind: str,
                 optional: bool):
        super().__init__(ctx)
        self.name, self.stats_from, self.include_mean, self.kind = name, stats_from, include_mean, kind
        self.optional = optional
        self.description = (f"manifold, stats {stats_from}, {'mean+ONPE' if include_mean else 'ONPE'}, {kind}")

    @classmethod
    def instances(cls, ctx: FusionContext) -> list[Scorer]:
        if len(ctx.systems) < 2:
            return []
        fc = ctx.cfg.feature
        other = "dev" if fc.class_stats_from == "train" else "train"
        mean = fc.include_mean
        return [cls(ctx, "feature", fc.class_stats_from, mean, "normalised", False),
                cls(ctx, "feature_softmax", fc.class_stats_from, mean, "softmax", False),
                cls(ctx, "feature_paper" if mean else "feature_mean", fc.class_stats_from, not mean, "normalised",
                    False),
                # the comparison variant is optional: a small dev set may not support it
                cls(ctx, f"feature_{other}stats", other, mean, "normalised", True)]

    def fit(self):
        self.dist = self.ctx.feature_distances().distances(self.stats_from, self.include_mean)

    def scores(self, split, held_out=None):
        dist = self.dist[split]
        if held_out is not None:
            dist = np.delete(dist, [held_out], axis=1)
        return distance_scores(dist, self.kind, self.ctx.cfg.feature.temperature)


class LabelFusion(Scorer):
    """Mode of the members' thresholded labels; the tie-break member decides when all disagree
    (seed 004 §3.5.1). Each member's τ comes from its own max-softmax scorer and the same rule."""
    name = "label"

    def fit(self):
        prefer = self.ctx.cfg.label.tie_break
        self.tie_break = next((s for s in prefer if s in self.ctx.systems), self.ctx.systems[0])
        self.description = f"mode of thresholded labels, tie-break {self.tie_break}"
        self.members = {s: MaxSoftmax(self.ctx, s) for s in self.ctx.systems}

    def scores(self, split, held_out=None):
        return None  # labels only

    def choose_threshold(self, dev_labels):
        self.member_thresholds = {s: m.choose_threshold(dev_labels) for s, m in self.members.items()}
        return None

    def restore_threshold(self, info):
        self.member_thresholds = {s: Threshold(t, info["rule"], np.array([]), np.array([]))
                                  for s, t in info["member_tau"].items()}
        return None

    def decide(self, split, threshold):
        labels = {s: m.decide(split, self.member_thresholds[s]) for s, m in self.members.items()}
        return label_fusion(labels, self.tie_break)

    def info(self) -> dict:
        return {"member_tau": {s: th.tau for s, th in self.member_thresholds.items()}}


# the report lists methods in this order
REGISTRY: dict[str, type[Scorer]] = {
    "softmax": MaxSoftmax,
    "openmax": OpenMax,
    "score": ScoreFusion,
    "score_aug": AugmentedScoreFusion,
    "feature": FeatureFusion,
    "label": LabelFusion,
}


def build_scorer(ctx: FusionContext, name: str) -> Scorer:
    """The one scorer called `name`, fitted (only it: `predict` loads what its method needs)."""
    for cls in REGISTRY.values():
        for scorer in cls.instances(ctx):
            if scorer.name == name:
                scorer.fit()
                return scorer
    fail(f"fusion method {name!r} is not available for systems {ctx.systems}")


def build_scorers(ctx: FusionContext) -> list[Scorer]:
    """Every registered scorer's instances, fitted; an optional variant that cannot be fitted on
    this data is skipped with a message."""
    out = []
    for cls in REGISTRY.values():
        for scorer in cls.instances(ctx):
            try:
                scorer.fit()
            except KitError as err:
                if not scorer.optional:
                    raise
                print(f"[fuse] {scorer.name} skipped: {err}")
                continue
            out.append(scorer)
    return out
