"""Single-system decision: softmax of the exported logits, τ chosen on dev, labels for dev and test.

    python -m fusion.decide --exp exp/<name>

Reads `EXP/config.yaml` (its `decision` section) and `EXP/scores/{dev,test}`; writes
`EXP/decision/tau.json`, `dev_pred.txt` and `test_pred.txt` (`<file>.wav <label>` lines).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_prep.common import atomic_dir, run_cli
from fusion.threshold import decide, softmax, tau_quantile
from systems.common.config import load_config
from systems.common.export import SystemScores


def write_predictions(path: Path, ids: list[str], labels) -> None:
    path.write_text("".join(f"{u}.wav {int(lab)}\n" for u, lab in sorted(zip(ids, labels))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    args = ap.parse_args()
    exp = Path(args.exp)
    cfg = load_config(exp / "config.yaml").decision
    dev, test = SystemScores(exp / "scores" / "dev"), SystemScores(exp / "scores" / "test")
    dev_p, test_p = softmax(dev.logits), softmax(test.logits)
    tau = tau_quantile(dev_p, cfg.q) if cfg.rule == "quantile" else float(cfg.tau)
    dev_pred, test_pred = decide(dev_p, tau), decide(test_p, tau)
    with atomic_dir(exp / "decision") as out:
        (out / "tau.json").write_text(json.dumps({"method": "softmax", "rule": cfg.rule, "q": cfg.q, "tau": tau,
                                                  "dev_rejected": float((dev_pred == 7).mean()),
                                                  "test_rejected": float((test_pred == 7).mean())}, indent=2) + "\n")
        write_predictions(out / "dev_pred.txt", dev.ids, dev_pred)
        write_predictions(out / "test_pred.txt", test.ids, test_pred)
    print(f"[decide] {exp.name}: tau {tau:.4f} ({cfg.rule}, q {cfg.q}); test rejected as unknown "
          f"{(test_pred == 7).mean():.1%}")


if __name__ == "__main__":
    run_cli(main)
