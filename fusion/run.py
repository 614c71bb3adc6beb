"""The fusion stage: every registered scorer over the exported scores, with τ chosen on dev.

    python -m fusion.run --exp exp --systems a,b,c [--config fusion/conf/fusion.yaml]

The methods are the scorers of fusion/scorers.py (per system: softmax:<sys>, openmax:<sys> and the
post-hoc unknown scores maxlogit, energy, gen, knn, nsd, mahalanobis, vim:<sys>; with two or more
members: score, score_aug, two_stage, feature and its variants, stack, label). `submit_method: auto`
submits, of the methods over all members whose scores are class shares (score, score_aug, feature and
its variants, stack), the first in registry order whose dev F1 at τ (the threshold rule's own dev
criterion) is within one bootstrap standard error of the best one's (fusion/auto_select.py). Writes
`EXP/fusion/<method>/{tau.json,dev_pred.txt,test_pred.txt,dev_scores.npy,test_scores.npy,curve.tsv}`
(":" in a name becomes "__"), `EXP/fusion/summary.json`, the dev key and ids, and the fused embeddings.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import yaml

from core.atomic import atomic_dir, ensure_dir, remove_staging_of, save_npy, write_text_atomic
from core.errors import ArgumentParser, KitError, fail, run_cli
from core.label_files import label_lines
from core.labels import KNOWN_CLASSES, UNKNOWN
from core.stamps import file_signature, output_files, source_digest, stage_is_current, write_stamp
from fusion.auto_select import choose_submission
from fusion.calibrate import Threshold, dev_f1_at_tau
from fusion.config import AUTO_SUBMIT, FusionConfig, load_fusion_config
from fusion.manifold_fusion import concat_embeddings
from fusion.members import load_members
from fusion.scorers import SPLITS, FusionContext, Scorer, build_scorers, skip_optional


def write_method(out: Path, scorer: Scorer, ids: dict[str, list[str]], preds: dict[str, np.ndarray],
                 th: Threshold | None, info: dict) -> None:
    folder = ensure_dir(out / scorer.name.replace(":", "__"))
    for split in SPLITS:
        write_text_atomic(folder / f"{split}_pred.txt", label_lines(dict(zip(ids[split], preds[split]))))
        scores = scorer.scores(split)
        if scores is not None:
            # shifted logits keep float64: float32 could round a row's runner-up onto its argmax column
            dtype = np.float64 if scorer.score_kind == "shifted_logits" else np.float32
            save_npy(folder / f"{split}_scores.npy", scores.astype(dtype))
    if th is not None:
        write_text_atomic(folder / "curve.tsv", "tau\tdev_f1\n" + "".join(
            f"{t:.6g}\t{f:.6f}\n" for t, f in zip(th.curve_tau, th.curve_f1) if np.isfinite(t)))
    write_text_atomic(folder / "tau.json", json.dumps(info, indent=2) + "\n")


def run_fusion(exp: Path, systems: list[str], cfg: FusionConfig) -> dict:
    data = load_members(exp, systems)
    dev_labels = data["dev"].labels
    if not np.all(np.isin(dev_labels, KNOWN_CLASSES)):
        bad = sorted(set(dev_labels.tolist()) - set(KNOWN_CLASSES))
        fail(f"{exp / systems[0] / 'scores' / 'dev' / 'logits.tsv'}: dev labels must all be known classes 0–6, "
             f"found {bad} (τ is chosen on labelled dev utterances); prepare dev with its label file and re-run "
             "the score stage")
    scorers = build_scorers(FusionContext(data, systems, cfg))
    names = [s.name for s in scorers]
    auto = cfg.submit_method == AUTO_SUBMIT
    if auto and len(systems) > 1:
        # methods over all members (a scorer of one member carries its `system`) that give class shares
        candidates = [s.name for s in scorers if getattr(s, "system", None) is None and s.class_shares]
    elif cfg.submit_method not in names:
        if len(systems) > 1:
            fail(f"submit_method {cfg.submit_method!r} is not available with systems {systems}; choose from "
                 f"{[AUTO_SUBMIT, *names]}")
        # a single system cannot be fused: submit its own thresholded softmax
        print(f"[fuse] one system: submitting softmax:{systems[0]} instead of {cfg.submit_method}")
        cfg = dataclasses.replace(cfg, submit_method=f"softmax:{systems[0]}")
        auto = False
    ids = {s: data[s].ids for s in SPLITS}
    summary = {"systems": systems, "rule": cfg.threshold.rule, "submit_method": cfg.submit_method,
               "submit_choice": "configured", "methods": {}}
    dev_decisions = {}  # of the auto candidates, for the bootstrap of their dev F1
    with atomic_dir(exp / "fusion") as out:
        for scorer in scorers:
            t0 = time.time()
            try:
                th = scorer.choose_threshold(dev_labels)
            except KitError as err:
                # leave-one-out refits each scorer without one class: a comparison variant that
                # fits on all classes can still fail on a fold (ViM: no residual left without it)
                if scorer.name == cfg.submit_method:
                    raise
                skip_optional(scorer, err)
                continue
            preds = {s: scorer.decide(s, th) for s in SPLITS}
            info = {"method": scorer.name, "description": scorer.description, "rule": cfg.threshold.rule,
                    "tau": th.tau if th is not None else None,
                    "q": cfg.threshold.q if cfg.threshold.rule == "quantile" else None,
                    "unknown_column": scorer.unknown_column, **scorer.info(),
                    "dev_rejected": float(np.mean(preds["dev"] == UNKNOWN)),
                    "test_rejected": float(np.mean(preds["test"] == UNKNOWN)),
                    "dev_f1_at_tau": dev_f1_at_tau(th, cfg.threshold.rule, dev_labels, preds["dev"]),
                    "seconds": round(time.time() - t0, 2)}
            write_method(out, scorer, ids, preds, th, info)
            if auto and scorer.name in candidates:
                dev_decisions[scorer.name] = preds["dev"]
            summary["methods"][scorer.name] = info
            tau = f"tau {th.tau:8.4f} ({th.rule})" if th is not None else scorer.description
            print(f"[fuse] {scorer.name:22s} {tau}; test rejected {info['test_rejected']:.1%}")
        if auto:
            # leave-one-out's dev criterion is a mean over folds, not a figure of these decisions: no bootstrap
            per_utterance = cfg.threshold.rule != "leave-one-out"
            chosen, se, tied = choose_submission(summary["methods"], candidates, dev_labels,
                                                 dev_decisions if per_utterance else None, cfg.auto)
            cfg = dataclasses.replace(cfg, submit_method=chosen)
            best = max(summary["methods"][c]["dev_f1_at_tau"] for c in tied)
            rule = "best dev F1 at τ" if se is None else (
                f"first in registry order within {cfg.auto.se:g} bootstrap SE ({se:.4f}) of the best dev F1 at τ "
                f"({best:.4f}): {tied}")
            summary.update(submit_method=chosen, submit_choice=f"{AUTO_SUBMIT}: {rule}, of "
                           f"{[c for c in candidates if c in summary['methods']]}", auto_dev_f1_se=se, auto_tied=tied)
            print(f"[fuse] submit_method auto: {chosen} (dev F1 at τ "
                  f"{summary['methods'][chosen]['dev_f1_at_tau']:.4f}; {rule})")
        if len(systems) >= 2:
            for s in SPLITS:
                fused = concat_embeddings(data[s].embeddings, cfg.feature.normalise_members)
                save_npy(out / f"fused_embeddings_{s}.npy", fused.astype(np.float32))
        write_text_atomic(out / "dev_key.txt", label_lines(dict(zip(ids["dev"], dev_labels))))
        for s in SPLITS:
            write_text_atomic(out / f"{s}_ids.txt", "".join(u + "\n" for u in ids[s]))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        # the resolved settings, so that `predict` applies exactly this fusion to new audio
        write_text_atomic(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return summary


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--systems", required=True)
    ap.add_argument("--config", default=str(Path(__file__).parent / "conf" / "fusion.yaml"))
    args = ap.parse_args()
    exp = Path(args.exp)
    systems = [s for s in args.systems.split(",") if s]
    if not systems or len(set(systems)) != len(systems):
        fail(f"--systems {args.systems!r}: give one or more distinct system names, comma-separated")
    cfg = load_fusion_config(args.config)
    # the code is an input too: fusion takes seconds to minutes, so any change of it re-runs the stage
    options = {"systems": systems, "config": dataclasses.asdict(cfg), "version": 3,
               "code": source_digest("fusion", "core"),
               # named from the experiment: a copy of it (cp -a) stays current
               "scores": {s: [file_signature(exp / s / "scores" / sp / name, exp)
                              for sp in ("train", "dev", "test") for name in ("logits.tsv", "embeddings.npy", "window_embeddings.npy", "window_offsets.npy")
                              if (exp / s / "scores" / sp / name).is_file()] for s in systems}}
    remove_staging_of(exp / "fusion")
    if stage_is_current(exp / "fusion", options):
        print(f"[fuse] {exp / 'fusion'}: up to date, skipped")
        return
    summary = run_fusion(exp, systems, cfg)
    # every method's folder too: a lost or truncated test_pred.txt re-fuses, as a lost summary does
    write_stamp(exp / "fusion", options, outputs=output_files(exp / "fusion", below=True))
    print(f"[fuse] {exp / 'fusion'}: submission method {summary['submit_method']} ({summary['submit_choice']})")


if __name__ == "__main__":
    run_cli(main)
