"""The evaluate stage: one results line per system on dev and (when a key is known) test.

    python -m eval.report --exp exp --systems a,b [--key keys/test_label.txt] [--submission_dir submission]

Dev is scored from `EXP/<system>/decision/dev_pred.txt` against the dev labels; test from the
submission file against the answer key. Writes `EXP/report/results.md` and `results.json` and
prints the full score.py report of each submission.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_prep.common import fail, run_cli, write_text_atomic
from data_prep.labels import read_label_file
from eval.metrics import full_report
from eval.score import aligned_labels, format_report
from systems.common.export import SystemScores


def system_results(exp: Path, system: str, key: str | None, submission_dir: Path) -> tuple[dict, str | None]:
    sdir = exp / system
    tau_file = sdir / "decision" / "tau.json"
    if not tau_file.is_file():
        fail(f"{tau_file}: missing; run the decide stage for {system}")
    tau = json.loads(tau_file.read_text())
    dev = SystemScores(sdir / "scores" / "dev")
    truth = dict(zip(dev.ids, dev.labels.tolist()))
    pred = read_label_file(sdir / "decision" / "dev_pred.txt")
    dev_rep = full_report([truth[u] for u in dev.ids], [pred[u] for u in dev.ids])
    row = {"system": system, "tau": tau["tau"], "rule": tau["rule"],
           "dev_f1": dev_rep["open_set"]["f1"], "dev_sklearn_f1": dev_rep["sklearn_macro_f1"]}
    text = None
    if key:
        sub = submission_dir / f"{system}.txt"
        if not sub.is_file():
            fail(f"{sub}: missing; run the submit stage for {system}")
        rep = full_report(*aligned_labels(str(sub), key))
        o = rep["open_set"]
        row.update(test_precision=o["precision"], test_recall=o["recall"], test_f1=o["f1"],
                   test_unknown_recall=o["unknown_recall"], test_sklearn_f1=rep["sklearn_macro_f1"])
        text = format_report(rep)
    return row, text


def results_table(rows: list[dict]) -> str:
    has_test = any("test_f1" in r for r in rows)
    head = "| system | τ (rule) | dev open-set F1 |" + (" test P | test R | test open-set F1 | unknown recall | test sklearn F1 |" if has_test else "")
    sep = "|---|---|---|" + ("---|---|---|---|---|" if has_test else "")
    lines = [head, sep]
    for r in rows:
        line = f"| {r['system']} | {r['tau']:.4f} ({r['rule']}) | {r['dev_f1']:.4f} |"
        if has_test and "test_f1" in r:
            unk = "–" if r["test_unknown_recall"] is None else f"{r['test_unknown_recall']:.4f}"
            line += (f" {r['test_precision']:.4f} | {r['test_recall']:.4f} | {r['test_f1']:.4f} | {unk} |"
                     f" {r['test_sklearn_f1']:.4f} |")
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--systems", required=True)
    ap.add_argument("--key", default=None, help="test answer key; without it only dev is reported")
    ap.add_argument("--submission_dir", default="submission")
    args = ap.parse_args()
    exp = Path(args.exp)
    rows = []
    for system in [s for s in args.systems.split(",") if s]:
        row, text = system_results(exp, system, args.key, Path(args.submission_dir))
        rows.append(row)
        if text:
            print(f"===== {system}: submission {Path(args.submission_dir) / (system + '.txt')} vs {args.key}")
            print(text)
            print()
    table = results_table(rows)
    report = exp / "report"
    note = "" if args.key else "\nNo test answer key was given: test results are not shown.\n"
    write_text_atomic(report / "results.md", "# Results\n\n" + table + "\n" + note)
    write_text_atomic(report / "results.json", json.dumps(rows, indent=2) + "\n")
    print(table)
    print(f"[evaluate] {report / 'results.md'}")


if __name__ == "__main__":
    run_cli(main)
