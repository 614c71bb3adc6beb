"""The fusion stage: every decision method over the exported scores, with τ chosen on dev.

    python -m fusion.run --exp exp --systems a,b,c [--config fusion/conf/fusion.yaml]

Methods (each with τ from the configured rule; shared/spec/fusion.md, seed 004 §3.5):
  softmax:<sys>     one system, max softmax against τ (S06 for lfcc_resnet18)
  openmax:<sys>     one system, OpenMax recalibration (S07 for lfcc_resnet18)
  label             mode of the members' thresholded labels, tie-break system when all disagree
  score             mean of the members' softmax
  score_aug         the same after clipping logits to ±clip and scaling (inference augmentation)
  feature           manifold fusion: class subspaces (mean direction + ONPE) vs the span of each
                    utterance's 3 s windows, geodesic distance, eq. 2–4 normalisation
  feature_softmax   the same distances, temperature softmax of −d
  feature_paper     paper-literal subspaces (ONPE of centred data, no mean direction); with
                    `include_mean: false` the two swap and this one is called feature_mean
  feature_<other>stats  `feature` with class statistics from the other split (train ↔ dev)
Fusions need at least two members. Writes `EXP/fusion/<method>/{tau.json,dev_pred.txt,test_pred.txt,
dev_scores.npy,test_scores.npy,curve.tsv}` (":" in a name becomes "__"), `EXP/fusion/summary.json`,
the dev labels and ids, and the fused embeddings.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from data_prep.common import KitError, atomic_dir, fail, file_signature, run_cli, stage_is_current, write_stamp
from fusion.manifold import StackedBases
from fusion.calibrate import Method, Threshold, choose_tau, decide_labels
from fusion.methods import (FeatureFusionConfig, SplitScores, class_subspaces, concat_embeddings, distance_scores,
                            fit_openmax, label_fusion, load_members, manifold_distances, openmax_scores,
                            score_fusion, softmax_scores, window_subspaces)

RULES = ("quantile", "leave-one-out", "fixed")
DEFAULT_TIE_BREAK = ("hubert_ft", "wav2vec2_ft", "w2v_asdg", "se_res2net50", "lfcc_resnet18", "rawnet2")


@dataclass
class ThresholdConfig:
    rule: str = "quantile"
    q: float = 0.05
    tau: float | None = None

    def __post_init__(self):
        if self.rule not in RULES:
            fail(f"threshold.rule {self.rule!r}: valid are {', '.join(RULES)}")
        if self.rule == "fixed" and self.tau is None:
            fail("threshold.rule fixed needs threshold.tau")
        if not 0.0 <= self.q < 1.0:
            fail(f"threshold.q {self.q} must lie in [0, 1)")


@dataclass
class ScoreConfig:
    weights: dict[str, float] | None = None
    clip: float = 20.0  # seed 004 §3.5.2
    scale: float = 0.1


@dataclass
class LabelConfig:
    tie_break: list[str] = field(default_factory=lambda: list(DEFAULT_TIE_BREAK))


@dataclass
class OpenMaxConfig:
    alpha: int = 3
    tail: int = 20


@dataclass
class FusionConfig:
    submit_method: str = "feature"
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    feature: FeatureFusionConfig = field(default_factory=FeatureFusionConfig)
    openmax: OpenMaxConfig = field(default_factory=OpenMaxConfig)


def load_fusion_config(path: str | Path) -> FusionConfig:
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: fusion config does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    sections = {"threshold": ThresholdConfig, "score": ScoreConfig, "label": LabelConfig,
                "feature": FeatureFusionConfig, "openmax": OpenMaxConfig}
    unknown = sorted(set(raw) - set(sections) - {"submit_method"})
    if unknown:
        fail(f"{path}: unknown key(s) {unknown}; valid: {['submit_method', *sections]}")
    built = {}
    for name, cls in sections.items():
        values = raw.get(name) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            fail(f"{path}: {name}: unknown key(s) {bad}; valid: {sorted(known)}")
        built[name] = cls(**values)
    return FusionConfig(submit_method=raw.get("submit_method", "feature"), **built)


class FeatureDistances:
    """Geodesic distances (N, 7) of dev and test utterances to the class subspaces, per variant.

    Statistics from train: one set of class subspaces. From dev: the dev distances are out-of-fold
    (class subspaces rebuilt without the fold), so τ is never chosen on the utterances that built
    the statistics; test uses subspaces from all of dev."""

    def __init__(self, data: dict[str, SplitScores], cfg: FeatureFusionConfig):
        self.data, self.cfg = data, cfg
        self.fused = {s: concat_embeddings(data[s].embeddings, cfg.normalise_members) for s in data}
        self.windows = {s: concat_embeddings(data[s].window_embeddings, cfg.normalise_members)
                        for s in ("dev", "test")}
        self._bases: dict[tuple[str, bool], StackedBases] = {}

    def bases(self, split: str, include_mean: bool) -> StackedBases:
        key = (split, include_mean)
        if key not in self._bases:
            self._bases[key] = window_subspaces(self.windows[split], self.data[split].window_offsets, self.cfg,
                                              include_mean)
        return self._bases[key]

    def distances(self, stats_from: str, include_mean: bool) -> dict[str, np.ndarray]:
        cfg = self.cfg
        if stats_from == "train":
            classes = class_subspaces(self.fused["train"], self.data["train"].labels, cfg, include_mean)
            return {s: manifold_distances(self.bases(s, include_mean), classes) for s in ("dev", "test")}
        dev_labels = self.data["dev"].labels
        folds = stratified_folds(dev_labels, cfg.cv_folds)
        dev_bases = self.bases("dev", include_mean)
        dev = np.empty((len(dev_labels), 7))
        for f in range(cfg.cv_folds):
            held = folds == f
            if not held.any():
                continue
            classes = class_subspaces(self.fused["dev"][~held], dev_labels[~held], cfg, include_mean)
            dev[held] = manifold_distances(dev_bases.subset(held), classes)
        classes = class_subspaces(self.fused["dev"], dev_labels, cfg, include_mean)
        return {"dev": dev, "test": manifold_distances(self.bases("test", include_mean), classes)}


def stratified_folds(labels: np.ndarray, k: int) -> np.ndarray:
    folds = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(0)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = np.arange(len(idx)) % k
    return folds


def build_methods(data: dict[str, SplitScores], systems: list[str], cfg: FusionConfig) -> list[Method]:
    methods: list[Method] = []
    for s in systems:
        methods.append(Method(f"softmax:{s}", lambda split, ho, s=s: softmax_scores(data[split].logits[s], ho),
                              description=f"{s}, max softmax"))
        om = fit_openmax(data["train"].logits[s], data["train"].labels, cfg.openmax.alpha, cfg.openmax.tail)
        methods.append(Method(f"openmax:{s}", lambda split, ho, s=s, om=om: openmax_scores(om, data[split].logits[s], ho),
                              unknown_column=True, description=f"{s}, OpenMax (alpha {om.alpha})"))
    if len(systems) < 2:
        return methods
    sc = cfg.score
    methods.append(Method("score", lambda split, ho: score_fusion(
        {s: data[split].logits[s] for s in systems}, sc.weights, False, held_out=ho), description="mean softmax"))
    methods.append(Method("score_aug", lambda split, ho: score_fusion(
        {s: data[split].logits[s] for s in systems}, sc.weights, True, sc.clip, sc.scale, ho),
        description=f"mean softmax of clip(±{sc.clip:g})·{sc.scale:g} logits"))
    feats = FeatureDistances(data, cfg.feature)
    fc = cfg.feature
    other = "dev" if fc.class_stats_from == "train" else "train"
    mean = fc.include_mean
    variants = [("feature", fc.class_stats_from, mean, "normalised"),
                ("feature_softmax", fc.class_stats_from, mean, "softmax"),
                ("feature_paper" if mean else "feature_mean", fc.class_stats_from, not mean, "normalised"),
                (f"feature_{other}stats", other, mean, "normalised")]
    for name, stats, include_mean, kind in variants:
        try:
            dist = feats.distances(stats, include_mean)
        except KitError as err:
            if stats == fc.class_stats_from:
                raise
            # the comparison variant is optional: a small dev set may not support it
            print(f"[fuse] {name} skipped: {err}")
            continue
        methods.append(Method(
            name, lambda split, ho, dist=dist, kind=kind: distance_scores(
                np.delete(dist[split], [ho], axis=1) if ho is not None else dist[split], kind, fc.temperature),
            description=f"manifold, stats {stats}, {'mean+ONPE' if include_mean else 'ONPE'}, {kind}"))
    return methods


def tie_break_system(systems: list[str], preference: list[str]) -> str:
    return next((s for s in preference if s in systems), systems[0])


def write_method(out: Path, name: str, ids: dict[str, list[str]], preds: dict[str, np.ndarray],
                 scores: dict[str, np.ndarray] | None, th: Threshold | None, info: dict) -> None:
    folder = out / name.replace(":", "__")
    folder.mkdir(parents=True)
    for split in ("dev", "test"):
        (folder / f"{split}_pred.txt").write_text(
            "".join(f"{u}.wav {int(p)}\n" for u, p in sorted(zip(ids[split], preds[split]))))
        if scores is not None:
            np.save(folder / f"{split}_scores.npy", scores[split].astype(np.float32))
    if th is not None:
        (folder / "curve.tsv").write_text("tau\tdev_f1\n" + "".join(
            f"{t:.6g}\t{f:.6f}\n" for t, f in zip(th.curve_tau, th.curve_f1) if np.isfinite(t)))
    (folder / "tau.json").write_text(json.dumps(info, indent=2) + "\n")


def run_fusion(exp: Path, systems: list[str], cfg: FusionConfig) -> dict:
    data = load_members(exp, systems)
    dev_labels = data["dev"].labels
    if np.any(dev_labels < 0) or np.any(dev_labels > 6):
        fail(f"{exp}: dev labels must all be known classes 0–6")
    methods = build_methods(data, systems, cfg)
    names = [m.name for m in methods] + (["label"] if len(systems) >= 2 else [])
    if cfg.submit_method not in names:
        if len(systems) > 1:
            fail(f"submit_method {cfg.submit_method!r} is not available with systems {systems}; choose from {names}")
        # a single system cannot be fused: submit its own thresholded softmax
        print(f"[fuse] one system: submitting softmax:{systems[0]} instead of {cfg.submit_method}")
        cfg = dataclasses.replace(cfg, submit_method=f"softmax:{systems[0]}")
    th_cfg = cfg.threshold
    ids = {s: data[s].ids for s in ("dev", "test")}
    summary = {"systems": systems, "rule": th_cfg.rule, "submit_method": cfg.submit_method, "methods": {}}
    member_labels = {"dev": {}, "test": {}}
    with atomic_dir(exp / "fusion") as out:
        for m in methods:
            t0 = time.time()
            th = choose_tau(m, dev_labels, th_cfg.rule, th_cfg.q, th_cfg.tau)
            scores = {s: m.scores(s, None) for s in ("dev", "test")}
            preds = {s: decide_labels(scores[s], th.tau, None, m.unknown_column) for s in ("dev", "test")}
            if m.name.startswith("softmax:"):
                for s in ("dev", "test"):
                    member_labels[s][m.name.split(":", 1)[1]] = preds[s]
            info = {"method": m.name, "description": m.description, "rule": th.rule, "tau": th.tau,
                    "q": th_cfg.q if th.rule == "quantile" else None,
                    "dev_rejected": float(np.mean(preds["dev"] == 7)), "test_rejected": float(np.mean(preds["test"] == 7)),
                    "seconds": round(time.time() - t0, 2)}
            write_method(out, m.name, ids, preds, scores, th, info)
            summary["methods"][m.name] = info
            print(f"[fuse] {m.name:22s} tau {th.tau:8.4f} ({th.rule}); test rejected {info['test_rejected']:.1%}")
        if len(systems) >= 2:
            tb = tie_break_system(systems, cfg.label.tie_break)
            preds = {s: label_fusion(member_labels[s], tb) for s in ("dev", "test")}
            info = {"method": "label", "description": f"mode of thresholded labels, tie-break {tb}",
                    "rule": th_cfg.rule, "tau": None, "member_tau": {
                        s: summary["methods"][f"softmax:{s}"]["tau"] for s in systems},
                    "dev_rejected": float(np.mean(preds["dev"] == 7)), "test_rejected": float(np.mean(preds["test"] == 7))}
            write_method(out, "label", ids, preds, None, None, info)
            summary["methods"]["label"] = info
            print(f"[fuse] {'label':22s} tie-break {tb}; test rejected {info['test_rejected']:.1%}")
            for s in ("dev", "test"):
                fused = concat_embeddings(data[s].embeddings, cfg.feature.normalise_members)
                np.save(out / f"fused_embeddings_{s}.npy", fused.astype(np.float32))
        (out / "dev_key.txt").write_text("".join(f"{u}.wav {int(c)}\n" for u, c in zip(ids["dev"], dev_labels)))
        for s in ("dev", "test"):
            (out / f"{s}_ids.txt").write_text("".join(u + "\n" for u in ids[s]))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--systems", required=True)
    ap.add_argument("--config", default=str(Path(__file__).parent / "conf" / "fusion.yaml"))
    args = ap.parse_args()
    exp = Path(args.exp)
    systems = [s for s in args.systems.split(",") if s]
    cfg = load_fusion_config(args.config)
    options = {"systems": systems, "config": dataclasses.asdict(cfg), "version": 1,
               "scores": {s: [file_signature(exp / s / "scores" / sp / "logits.tsv") for sp in ("train", "dev", "test")]
                          for s in systems if (exp / s / "scores" / "test" / "logits.tsv").is_file()}}
    if stage_is_current(exp / "fusion", options):
        print(f"[fuse] {exp / 'fusion'}: up to date, skipped")
        return
    summary = run_fusion(exp, systems, cfg)
    write_stamp(exp / "fusion", options)
    print(f"[fuse] {exp / 'fusion'}: submission method {summary['submit_method']}")


if __name__ == "__main__":
    run_cli(main)
