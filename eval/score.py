"""Score predictions against an answer key with the ADD 2023 Track 3 metric.

    python eval/score.py preds.txt labels.txt [--json]

Both files hold `<file> <label>` lines (ids with or without .wav). Prints the open-set macro
P / R / F1 first, then sklearn's macro-F1 over the labels present, the per-class table and the
8x8 confusion matrix (rows: true label, columns: predicted).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import ArgumentParser, fail, run_cli  # noqa: E402
from core.label_files import read_label_lines  # noqa: E402
from core.labels import ALL_LABELS, NUM_LABELS  # noqa: E402
from core.metrics import full_report, require_known_class  # noqa: E402


def aligned_labels(pred_path: str, key_path: str) -> tuple[list[int], list[int]]:
    preds = read_label_lines(pred_path, ALL_LABELS, "prediction file")
    key = read_label_lines(key_path, ALL_LABELS, "answer key")
    pred_map = {u: (lab, line) for u, lab, line in preds}
    key_map = {u: (lab, line) for u, lab, line in key}
    for u, _, line in preds:
        if u not in key_map:
            fail(f"{pred_path}:{line}: id {u} is not in the answer key {key_path}")
    for u, _, line in key:
        if u not in pred_map:
            fail(f"{key_path}:{line}: id {u} has no prediction in {pred_path}")
    ids = [u for u, _, _ in key]
    require_known_class([lab for _, lab, _ in key], key_path)
    return [key_map[u][0] for u in ids], [pred_map[u][0] for u in ids]


def format_report(rep: dict) -> str:
    o = rep["open_set"]
    lines = [f"open-set macro (ADD 2023 Track 3): P {o['precision']:.4f}  R {o['recall']:.4f}  F1 {o['f1']:.4f}"
             f"   [{len(o['known_classes'])} known classes, {rep['n']} utterances]"]
    if o["unknown_recall"] is not None:
        lines.append(f"unknown-class (7) recall: {o['unknown_recall']:.4f}")
    lines.append(f"sklearn macro-F1 over the labels present {rep['sklearn_labels']}: {rep['sklearn_macro_f1']:.4f}")
    lines.append("")
    lines.append("label  precision  recall     f1  support")
    for row in rep["per_class"]:
        lines.append(f"{row['label']:>5}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}")
    lines.append("")
    lines.append("confusion (rows true, columns predicted)")
    lines.append("      " + "".join(f"{c:>6}" for c in range(NUM_LABELS)))
    for c, row in enumerate(rep["confusion"]):
        lines.append(f"{c:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preds")
    ap.add_argument("labels")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    y_true, y_pred = aligned_labels(args.preds, args.labels)
    rep = full_report(y_true, y_pred)
    print(json.dumps(rep) if args.json else format_report(rep))


if __name__ == "__main__":
    run_cli(main)
