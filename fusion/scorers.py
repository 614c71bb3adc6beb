"""Decision methods as small scorer classes behind one registry (after pytorch-ood's detectors).

A scorer is fitted on the train/dev exports (`fit`), gives per-utterance scores over the kept
known classes for a split (`scores(split, held_out)`; higher = more "known"; OpenMax appends an
unknown column), picks τ on dev with the configured rule (`choose_threshold`) and turns scores into
labels 0–7 (`decide`). Label fusion overrides the last two: it has member thresholds, not one τ.
The post-hoc unknown scores of one member (max logit, energy, GEN, kNN, NSD, Mahalanobis, ViM; maths in
fusion/ood_scores.py) are `UnknownScoreScorer`s: one known-ness score per utterance and the
member's argmax class, through the same score matrix.

Adding a scorer: one class here and one line in `REGISTRY`; its `instances` says how many it
makes for a list of systems (one per system, one for the fusion, or none).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import KitError, fail
from core.labels import kept_classes
from fusion.calibrate import Threshold, choose_tau, decide_labels
from fusion.config import FusionConfig
from fusion.logit_fusion import label_fusion, score_fusion, softmax_scores
from fusion.manifold_fusion import FeatureDistances, concat_embeddings, distance_scores
from fusion.members import SplitScores
from fusion.ood_scores import (
    FEATURE_MAPS,
    ClassGaussian,
    LinearFit,
    ViMModel,
    energy,
    fit_class_gaussian,
    fit_classifier_input,
    fit_vim,
    gen,
    kept_logits,
    kept_rows,
    knn_cosine,
    mahalanobis,
    max_logit,
    nsd,
    score_matrix,
    vim,
)
from fusion.openmax import fit_openmax, openmax_scores
from fusion.seed_ensemble import system_of
from fusion.stacking import choose_c, fit_kept, out_of_fold_proba

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
    # what the score columns are, for the report's real-vs-fake score: "probability" (shares of the
    # classes, summing to 1 with any unknown column) or "shifted_logits" (UnknownScoreScorer)
    score_kind = "probability"
    # every row of scores() is the known classes' shares, summing to 1: what `predict` reports as p_c
    # and what `submit_method: auto` may submit (not OpenMax, the logit scores, two_stage's gate column)
    class_shares = False
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
        return {"score_kind": self.score_kind}


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
    class_shares = True

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


class UnknownScoreScorer(SystemScorer):
    """One member's class decision (the argmax of its logits) with one known-ness score per
    utterance from fusion/ood_scores.py. The score reaches the τ rules and `decide` as the usual
    score matrix (`ood_scores.score_matrix`: the logits shifted so that their argmax column holds
    the score), so the decision is the argmax class unless the score is below τ, then 7.
    Comparison variants: skipped with a message when the training exports cannot support them."""
    kind, label = "", ""
    score_kind = "shifted_logits"
    optional = True

    def __init__(self, ctx: FusionContext, system: str):
        super().__init__(ctx, system)
        self.name, self.description = f"{self.kind}:{system}", f"{system}, {self.label}"
        self.cache: dict = {}

    def known_score(self, split: str, held_out: int | None) -> np.ndarray:
        raise NotImplementedError

    def training(self, held_out: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The member's training embeddings, kept-class logits and labels, without `held_out`'s utterances."""
        train = self.ctx.data["train"]
        rows = kept_rows(train.labels, held_out)
        return (train.embeddings[self.system][rows], kept_logits(train.logits[self.system][rows], held_out),
                train.labels[rows])

    def scores(self, split, held_out=None):
        # the τ rules, the decisions and the written scores all ask again: compute each split once
        if (split, held_out) not in self.cache:
            logits = kept_logits(self.logits(split), held_out)
            self.cache[split, held_out] = score_matrix(logits, self.known_score(split, held_out))
        return self.cache[split, held_out]


class MaxLogit(UnknownScoreScorer):
    kind, label = "maxlogit", "max logit"

    def known_score(self, split, held_out):
        return max_logit(kept_logits(self.logits(split), held_out))


class Energy(UnknownScoreScorer):
    kind, label = "energy", "energy (log-sum-exp of logits, T = 1)"

    def known_score(self, split, held_out):
        return energy(kept_logits(self.logits(split), held_out))


class GEN(UnknownScoreScorer):
    kind = "gen"

    def fit(self):
        oc = self.ctx.cfg.ood
        top = "all kept classes" if oc.gen_top is None else f"top {oc.gen_top} (at most the kept classes)"
        self.label = f"GEN (−generalized entropy of the softmax, gamma {oc.gen_gamma:g}, {top})"
        self.description = f"{self.system}, {self.label}"

    def known_score(self, split, held_out):
        oc = self.ctx.cfg.ood
        return gen(kept_logits(self.logits(split), held_out), oc.gen_gamma, oc.gen_top)


class KNN(UnknownScoreScorer):
    kind = "knn"

    def fit(self):
        k = self.ctx.cfg.ood.knn_k
        self.label = f"cosine similarity to the {k}-th nearest training embedding"
        self.description = f"{self.system}, {self.label}"
        n = len(self.training(None)[0])
        if k > n:
            fail(f"ood.knn_k {k} exceeds the {n} training utterances of {self.system}")

    def known_score(self, split, held_out):
        train_emb = self.training(held_out)[0]
        return knn_cosine(self.ctx.data[split].embeddings[self.system], train_emb, self.ctx.cfg.ood.knn_k)


class JointKNN(UnknownScoreScorer):
    """kNN over the members together (`knn`, beside each member's `knn:<system>`): every member's
    utterance embedding L2-normalised and set side by side, so that the cosine similarity of two
    utterances is the mean of the members' cosine similarities, and a training neighbour counts only
    as near as it is in every member at once. The known-ness score is the similarity to the k-th
    nearest training utterance, the class decision the mean softmax's (`score`). Comparison only:
    it gives no class shares, so `submit_method: auto` never submits it."""
    kind = "knn"

    def __init__(self, ctx: FusionContext):
        Scorer.__init__(self, ctx)
        self.system = None
        self.name = "knn"
        self.cache = {}

    @classmethod
    def instances(cls, ctx: FusionContext) -> list[Scorer]:
        return [cls(ctx)] if len(ctx.systems) >= 2 else []

    def fit(self):
        k = self.ctx.cfg.ood.knn_k
        self.label = (f"cosine similarity to the {k}-th nearest training utterance, the members' normalised "
                      "embeddings side by side; class from the mean softmax")
        self.description = f"members together, {self.label}"
        train = self.ctx.data["train"]
        self.train_embeddings = concat_embeddings({s: train.embeddings[s] for s in self.ctx.systems}, True)
        if k > len(self.train_embeddings):
            fail(f"ood.knn_k {k} exceeds the {len(self.train_embeddings)} training utterances")

    def scores(self, split, held_out=None):
        if (split, held_out) not in self.cache:
            p = ScoreFusion(self.ctx).scores(split, held_out)
            log_p = np.log(np.maximum(p, np.finfo(np.float64).tiny))  # its argmax is the mean softmax's
            self.cache[split, held_out] = score_matrix(log_p, self.known_score(split, held_out))
        return self.cache[split, held_out]

    def known_score(self, split, held_out):
        query = concat_embeddings({s: self.ctx.data[split].embeddings[s] for s in self.ctx.systems}, True)
        train = self.train_embeddings[kept_rows(self.ctx.data["train"].labels, held_out)]
        return knn_cosine(query, train, self.ctx.cfg.ood.knn_k)


class NSD(UnknownScoreScorer):
    kind, label = "nsd", "NSD (cosine to energy-scaled training embeddings × energy)"

    def known_score(self, split, held_out):
        train_emb, train_logits, _ = self.training(held_out)
        return nsd(self.ctx.data[split].embeddings[self.system], kept_logits(self.logits(split), held_out),
                   train_emb, train_logits)


class Mahalanobis(UnknownScoreScorer):
    kind, label = "mahalanobis", "−min Mahalanobis distance (class means, shared covariance)"

    def fit(self):
        self.models: dict[int | None, ClassGaussian] = {}
        self.model(None)

    def model(self, held_out: int | None) -> ClassGaussian:
        if held_out not in self.models:
            emb, _, labels = self.training(held_out)
            classes = kept_classes(held_out)
            missing = [int(c) for c in classes if not np.any(labels == c)]
            if missing:
                fail(f"mahalanobis:{self.system}: no training utterance of class(es) {missing}")
            self.models[held_out] = fit_class_gaussian(emb, labels, classes)
        return self.models[held_out]

    def known_score(self, split, held_out):
        return mahalanobis(self.model(held_out), self.ctx.data[split].embeddings[self.system])


class ViM(UnknownScoreScorer):
    """ViM needs the classifier's last linear map, which the export contract does not hold: it is
    fitted to the training exports by least squares, on the embedding or on its ReLU, whichever the
    logits follow more closely (the choice and its relative residual go to tau.json)."""
    kind = "vim"

    def fit(self):
        self.models: dict[int | None, tuple[str, LinearFit, ViMModel]] = {}
        self.dim = self.ctx.cfg.ood.vim_dim or self.ctx.data["train"].embeddings[self.system].shape[1] // 2
        self.features, self.linear, model = self.model(None)
        note = "" if self.linear.determined else ", underdetermined: fewer training utterances than dimensions + 1"
        self.description = (f"{self.system}, ViM on {self.features} (D {self.dim}, alpha {model.alpha:.3g}; "
                            f"last-layer fit residual {self.linear.relative_residual:.2e}{note})")

    def model(self, held_out: int | None) -> tuple[str, LinearFit, ViMModel]:
        """Per fold, from the kept classes only: the feature map, the last-layer fit, the ViM model."""
        if held_out not in self.models:
            emb, logits, _ = self.training(held_out)
            features, fit = fit_classifier_input(emb, logits)
            self.models[held_out] = features, fit, fit_vim(FEATURE_MAPS[features](emb), logits, fit, self.dim)
        return self.models[held_out]

    def known_score(self, split, held_out):
        features, _, model = self.model(held_out)
        emb = np.asarray(self.ctx.data[split].embeddings[self.system], dtype=np.float64)
        return vim(model, FEATURE_MAPS[features](emb), kept_logits(self.logits(split), held_out))

    def info(self):
        return {**super().info(), "vim_dim": self.dim, "vim_alpha": self.models[None][2].alpha,
                "vim_features": self.features, "last_layer_fit_residual": self.linear.relative_residual,
                "last_layer_fit_determined": self.linear.determined}


class ScoreFusion(Scorer):
    """Mean of the members' softmax (seed 004 §3.5.2), plain."""
    name, description, augment = "score", "mean softmax", False
    class_shares = True

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


class TwoStage(Scorer):
    """REFD-style two-stage decision (Xie et al., Interspeech 2024): a real-vs-fake gate first (real
    when the real class holds at least half of the probability), then, among fakes only, the fake
    algorithm with the unknown rule on its share of the fake probability (max_k p_k / Σ_fake p).
    An utterance the gate calls real is never rejected: unknown utterances are fakes of an unseen
    algorithm. On the mean softmax of the members (`two_stage`) or of one member
    (`two_stage:<system>`)."""

    def __init__(self, ctx: FusionContext, system: str | None = None):
        super().__init__(ctx)
        self.system = system
        self.name = "two_stage" if system is None else f"two_stage:{system}"
        source = "mean softmax of the members" if system is None else f"{system} softmax"
        self.description = f"{source}: real-vs-fake gate, then the unknown rule among fakes"

    @classmethod
    def instances(cls, ctx: FusionContext) -> list[Scorer]:
        fused = [cls(ctx)] if len(ctx.systems) >= 2 else []
        return fused + [cls(ctx, s) for s in ctx.systems]

    def probabilities(self, split: str, held_out: int | None) -> np.ndarray:
        systems = [self.system] if self.system else self.ctx.systems
        weights = None if self.system else self.ctx.cfg.score.weights
        return score_fusion({s: self.ctx.data[split].logits[s] for s in systems}, weights, False, held_out=held_out)

    def scores(self, split, held_out=None):
        p = self.probabilities(split, held_out)  # kept classes; column 0 is real (only fakes are held out)
        real = p[:, 0] >= 0.5
        fake = p[:, 1:]
        share = fake / np.maximum(fake.sum(axis=1, keepdims=True), 1e-300)
        # column 0 is 1 + p_real on real rows (above any τ in [0, 1]) and p_real − 1 on fake rows
        # (below every fake column): monotone in p_real, so the real-vs-fake EER ranks by it
        first = np.where(real, 1.0 + p[:, 0], p[:, 0] - 1.0)[:, None]
        return np.concatenate([first, np.where(real[:, None], 0.0, share)], axis=1)


class FeatureFusion(Scorer):
    """Manifold fusion (seed 004 §3.5.3) in its four reported variants: statistics from the
    configured split or the other one, with or without the class mean direction, eq. 2–4
    normalisation or a temperature softmax."""
    class_shares = True

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


class StackedFusion(Scorer):
    """A logistic regression on the members' L2-normalised embeddings side by side, fitted on dev
    (fusion/stacking.py): C by leave-one-fake-class-out AUROC on dev, dev scores out-of-fold, test
    from the fit on all of dev. Leave-one-out τ refits without the class, with the same C."""
    name = "stack"
    class_shares = True
    optional = True  # a small dev may not hold every class in every fold

    def fit(self):
        self.features = {s: concat_embeddings(self.ctx.data[s].embeddings, True) for s in SPLITS}
        self.labels = self.ctx.data["dev"].labels
        self.C: float | None = None
        self.c_auroc: dict[float, float] = {}
        self.cache: dict = {}

    def model_c(self) -> float:
        if self.C is None:
            self.C, self.c_auroc = choose_c(self.features["dev"], self.labels, self.ctx.cfg.stack)
        return self.C

    @property
    def description(self):
        grid = ", ".join(f"{c:g}: {a:.3f}" for c, a in self.c_auroc.items())
        chosen = f"C {self.C:g}" if self.C is not None else "C not chosen"
        return (f"logistic regression on the members' embeddings, fitted on dev, {chosen}"
                + (f" (leave-one-fake-class-out dev AUROC {grid})" if grid else ""))

    def scores(self, split, held_out=None):
        if (split, held_out) not in self.cache:
            cfg, X, y = self.ctx.cfg.stack, self.features["dev"], self.labels
            if split == "dev":
                p = out_of_fold_proba(X, y, self.model_c(), cfg, held_out)
            else:
                p = fit_kept(X, y, self.model_c(), cfg, held_out).predict_proba(self.features[split])
            self.cache[split, held_out] = p
        return self.cache[split, held_out]

    def restore_threshold(self, info):
        # `predict` scores new audio with the C the fusion stage chose, without choosing it again
        self.C = float(info["stack_C"])
        return super().restore_threshold(info)

    def info(self):
        return {**super().info(), "stack_C": self.model_c(),
                "stack_c_auroc": {f"{c:g}": a for c, a in self.c_auroc.items()}}


class LabelFusion(Scorer):
    """Mode of the members' thresholded labels; the tie-break member decides when all disagree
    (seed 004 §3.5.1). Each member's τ comes from its own max-softmax scorer and the same rule."""
    name = "label"

    def fit(self):
        # the first member of the most preferred system; a seed ensemble's `rawnet2_seed4` is a rawnet2
        prefer = self.ctx.cfg.label.tie_break
        self.tie_break = next((m for s in prefer for m in self.ctx.systems if system_of(m) == s), self.ctx.systems[0])
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
    "maxlogit": MaxLogit,
    "energy": Energy,
    "gen": GEN,
    "knn": KNN,
    "knn_joint": JointKNN,
    "nsd": NSD,
    "mahalanobis": Mahalanobis,
    "vim": ViM,
    "score": ScoreFusion,
    "score_aug": AugmentedScoreFusion,
    "two_stage": TwoStage,
    "feature": FeatureFusion,
    "stack": StackedFusion,
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
                skip_optional(scorer, err)
                continue
            out.append(scorer)
    return out


def skip_optional(scorer: Scorer, err: KitError) -> None:
    """Leave out an optional variant the data cannot support, with a message; any other scorer's
    error stands."""
    if not scorer.optional:
        raise err
    print(f"[fuse] {scorer.name} skipped: {err}")
