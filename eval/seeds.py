"""Every method's figures as mean ± std over training seeds (the evaluate stage of `--seeds`).

    python -m eval.seeds --exp exp --seeds 1,2,3

Reads `EXP/seed_N/report/results.json` (one evaluate stage per seed) and writes
`EXP/report/README.md`, `results_over_seeds.json` and a figure of each method's test F1 per seed.
A single run on the demo moves by several points of F1 with the seed alone, so methods are ranked
here by the mean, with the spread beside it; std is the sample standard deviation (n − 1).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.atomic import ensure_dir, write_text_atomic
from core.errors import ArgumentParser, fail, run_cli

# the figures a row shows, when the per-seed results have them (dev-only runs have no test_*)
COLUMNS = (("dev_f1", "dev F1"), ("test_precision", "test P"), ("test_recall", "test R"),
           ("test_f1", "test F1"), ("test_unknown_recall", "unknown recall"), ("test_auroc", "AUROC"),
           ("test_fpr95", "FPR95"), ("test_eer", "real/fake EER"), ("tau", "τ"))


def read_seed_results(exp: Path, seeds: list[int]) -> dict[int, list[dict]]:
    runs = {}
    for seed in seeds:
        path = exp / f"seed_{seed}" / "report" / "results.json"
        if not path.is_file():
            fail(f"{path}: missing; run the evaluate stage for seed {seed}")
        try:
            rows = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            fail(f"{path}: not valid JSON ({err}); re-run the evaluate stage for seed {seed}")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r for r in rows):
            fail(f"{path}: not a results list of this kit; re-run the evaluate stage for seed {seed}")
        runs[seed] = rows
    return runs


def aggregate(runs: dict[int, list[dict]]) -> list[dict]:
    """One row per method present in every seed: {column: (mean, std, values)}, in the first seed's
    method order; a method missing from some seed is left out (its name is printed)."""
    seeds = list(runs)
    by_seed = {s: {r["method"]: r for r in rows} for s, rows in runs.items()}
    order = [r["method"] for r in runs[seeds[0]]]
    common = [m for m in order if all(m in by_seed[s] for s in seeds)]
    for m in sorted(set().union(*by_seed.values()) - set(common)):
        print(f"[seeds] {m}: not in every seed's results, left out of the summary")
    rows = []
    for m in common:
        row = {"method": m, "submitted": bool(by_seed[seeds[0]][m].get("submitted")), "seeds": seeds}
        for col, _ in COLUMNS:
            values = [by_seed[s][m].get(col) for s in seeds]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                v = np.asarray(values, dtype=np.float64)
                row[col] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "values": [float(x) for x in v]}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    shown = [(c, h) for c, h in COLUMNS if any(c in r for r in rows)]
    lines = ["| method | " + " | ".join(h for _, h in shown) + " |", "|---|" + "---|" * len(shown)]
    for r in rows:
        name = f"**{r['method']}** (submitted)" if r["submitted"] else r["method"]
        cells = [f"{r[c]['mean']:.4f} ± {r[c]['std']:.4f}" if c in r else "–" for c, _ in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_per_seed(rows: list[dict], column: str, out: Path) -> bool:
    rows = [r for r in rows if column in r]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        vals = r[column]["values"]
        ax.scatter(vals, [i] * len(vals), s=18, color="tab:blue" if not r["submitted"] else "tab:red", zorder=2)
        ax.errorbar(r[column]["mean"], i, xerr=r[column]["std"], fmt="|", color="black", capsize=3, zorder=3)
    ax.set_yticks(range(len(rows)), [r["method"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{column.replace('_', ' ')} (dots: seeds; bar: mean ± std)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def write_summary(exp: Path, seeds: list[int]) -> list[dict]:
    rows = aggregate(read_seed_results(exp, seeds))
    if not rows:
        fail(f"{exp}: no method is in every seed's results")
    out = ensure_dir(exp / "report")
    column = "test_f1" if any("test_f1" in r for r in rows) else "dev_f1"
    has_fig = plot_per_seed(rows, column, out / "per_seed.png")
    text = [f"# Results over {len(seeds)} training seeds ({', '.join(map(str, seeds))})", "",
            "Each cell is mean ± sample std over the seeds; each seed is a whole run in "
            f"`{exp.name}/seed_N/` (its own report in `seed_N/report/`). τ is chosen on dev in every seed.", "",
            table(rows), ""]
    if has_fig:
        text += [f"## {column.replace('_', ' ')} per seed", "", "![per seed](per_seed.png)", ""]
    write_text_atomic(out / "README.md", "\n".join(text))
    write_text_atomic(out / "results_over_seeds.json", json.dumps(rows, indent=2) + "\n")
    return rows


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--seeds", required=True, help="comma-separated training seeds, e.g. 1,2,3")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        fail(f"--seeds {args.seeds!r}: expected comma-separated integers")
    rows = write_summary(Path(args.exp), seeds)
    print(table(rows))
    print(f"[seeds] report: {Path(args.exp) / 'report' / 'README.md'}")


if __name__ == "__main__":
    run_cli(main)
