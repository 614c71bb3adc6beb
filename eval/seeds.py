"""Every method's figures as mean ± std over training seeds (the evaluate stage of `--seeds`).

    python -m eval.seeds --exp exp --seeds 1,2,3 [--testset NAME]

Reads `EXP/seed_N/report/results.json`, `conditions.json` and `classes.json` (one evaluate stage per
seed) and writes `EXP/report/README.md`, `results_over_seeds.json`, `conditions_over_seeds.json`,
`classes_over_seeds.json` and a figure of each method's test F1 per seed. With `--testset NAME`,
the same for a new test set that every seed scored: from `EXP/seed_N/testsets/NAME/report/` (and
the ensemble's `EXP/ensemble/testsets/NAME/report/`) to `EXP/testsets/NAME/report/`.
Its first row, `submitted`, is what each seed submitted (with `submit_method: auto` the seeds may
choose different methods). When the recipe fused the seeds as one ensemble
(`EXP/ensemble/report/results.json`), its fused methods follow in a table of their own.
A single run on the demo moves by several points of F1 with the seed alone, so methods are ranked
here by the mean, with the spread beside it; std is the sample standard deviation (n − 1).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.atomic import ensure_dir, write_text_atomic
from core.errors import ArgumentParser, fail, run_cli
from core.labels import ALL_LABELS, LABEL_NAMES
from core.stage_files import read_json
from fusion.seed_ensemble import SeedRuns, parse_seeds, seed_of

# the figures a row shows, when the per-seed results have them (dev-only runs have no test_*)
COLUMNS = (("dev_f1", "dev F1"), ("test_precision", "test P"), ("test_recall", "test R"),
           ("test_f1", "test F1"), ("test_unknown_recall", "unknown recall"), ("test_auroc", "AUROC"),
           ("test_fpr95", "FPR95"), ("test_eer", "real/fake EER"), ("tau", "τ"))


def read_report_rows(path: Path, key: str, what: str, rerun: str) -> list[dict]:
    """A report's JSON list of objects that all have `key`; `rerun` ends the one-line error."""
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        fail(f"{path}: not valid JSON ({err}); {rerun}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and key in r for r in rows):
        fail(f"{path}: not a {what} list of this kit; {rerun}")
    return rows


def read_seed_rows(runs: SeedRuns, seed: int, name: str, key: str, what: str,
                   required: bool = False) -> list[dict] | None:
    """EXP/seed_N/report/<name>: a JSON list of objects that all have `key`; None when absent
    (an error when `required`)."""
    path = runs.seed(seed) / "report" / name
    if not path.is_file():
        if required:
            fail(f"{path}: missing; run the evaluate stage for seed {seed}")
        return None
    return read_report_rows(path, key, what, f"re-run the evaluate stage for seed {seed}")


def read_seed_results(runs: SeedRuns, seeds: list[int]) -> dict[int, list[dict]]:
    return {seed: read_seed_rows(runs, seed, "results.json", "method", "results", required=True) for seed in seeds}


# the row of what each seed submitted (with `submit_method: auto` the seeds may submit different methods)
SUBMITTED = "submitted"


def mean_std(values: list) -> dict | None:
    """{mean, std (n − 1), values} of numbers; None when any value is not a number."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": [float(x) for x in v]}


def column_stats(per_seed: list[dict], columns) -> dict:
    """{column: mean_std} for the columns that are numbers in every seed's row."""
    stats = {col: mean_std([r.get(col) for r in per_seed]) for col, _ in columns}
    return {col: v for col, v in stats.items() if v is not None}


def aggregate(runs: dict[int, list[dict]]) -> list[dict]:
    """First the `submitted` row (each seed's submitted method), then one row per method present
    in every seed: {column: (mean, std, values)}, in the first seed's method order; a method missing
    from some seed is left out (its name is printed)."""
    seeds = list(runs)
    by_seed = {s: {r["method"]: r for r in rows} for s, rows in runs.items()}
    order = [r["method"] for r in runs[seeds[0]]]
    common = [m for m in order if all(m in by_seed[s] for s in seeds)]
    for m in sorted(set().union(*by_seed.values()) - set(common)):
        print(f"[seeds] {m}: not in every seed's results, left out of the summary")
    rows = []
    submitted = {s: [r for r in runs[s] if r.get("submitted")] for s in seeds}
    if all(len(v) == 1 for v in submitted.values()):
        rows.append({"method": SUBMITTED, "seeds": seeds, "submitted": True,
                     "methods": [submitted[s][0]["method"] for s in seeds],
                     **column_stats([submitted[s][0] for s in seeds], COLUMNS)})
    for m in common:
        rows.append({"method": m, "seeds": seeds, "submitted": False,
                     "submitted_in": [s for s in seeds if by_seed[s][m].get("submitted")],
                     **column_stats([by_seed[s][m] for s in seeds], COLUMNS)})
    return rows


# the per-condition figures of the submitted method (EXP/seed_N/report/conditions.json)
CONDITION_COLUMNS = (("closed_set_accuracy", "closed-set accuracy"), ("known_accuracy", "known-class accuracy"),
                     ("unknown_recall", "unknown recall"), ("open_set_f1", "open-set F1"))


def seed_tables(runs: SeedRuns, seeds: list[int], name: str, key: str,
                what: str) -> tuple[dict[int, dict], list] | None:
    """Every seed's `name` rows by their `key`, and the keys of every seed in the first seed's order;
    None when a seed has no such file."""
    found = {}
    for seed in seeds:
        rows = read_seed_rows(runs, seed, name, key, what)
        if rows is None:
            return None
        found[seed] = {r[key]: r for r in rows}
    return found, [k for k in found[seeds[0]] if all(k in found[s] for s in seeds)]


def aggregate_conditions(runs: SeedRuns, seeds: list[int]) -> list[dict] | None:
    """The submitted method's per-condition rows as mean ± std over the seeds, for the conditions
    of every seed; None when a seed has no conditions.json (no condition list was given)."""
    found = seed_tables(runs, seeds, "conditions.json", "condition", "conditions")
    if found is None:
        return None
    tables, order = found
    return [{"condition": c, "seeds": seeds, "n": tables[seeds[0]][c].get("n"),
             **column_stats([tables[s][c] for s in seeds], CONDITION_COLUMNS)} for c in order]


# the per-class figures of the submitted method (EXP/seed_N/report/classes.json)
CLASS_COLUMNS = (("closed_set_recall", "closed-set recall"), ("recall", "recall"), ("precision", "precision"),
                 ("mistaken_share", "share of the most frequent wrong label"))


def is_label(v) -> bool:
    # a JSON integer (true/false parse as bool, a subclass of int) that names a class
    return isinstance(v, int) and not isinstance(v, bool) and v in ALL_LABELS


def aggregate_classes(runs: SeedRuns, seeds: list[int]) -> list[dict] | None:
    """The submitted method's per-class rows as mean ± std over the seeds, with each seed's most
    frequent wrong label; None when a seed has no classes.json (no answer key)."""
    found = seed_tables(runs, seeds, "classes.json", "label", "per-class")
    if found is None:
        return None
    tables, order = found
    for seed, rows in tables.items():
        for r in rows.values():
            if not is_label(r["label"]) or not (r.get("mistaken_for") is None or is_label(r["mistaken_for"])):
                fail(f"{runs.seed(seed) / 'report' / 'classes.json'}: a label outside 0–{len(LABEL_NAMES) - 1}; "
                     f"re-run the evaluate stage for seed {seed}")
    return [{"label": c, "name": LABEL_NAMES[c], "seeds": seeds, "n": tables[seeds[0]][c].get("n"),
             "mistaken_for": [tables[s][c].get("mistaken_for") for s in seeds],
             **column_stats([tables[s][c] for s in seeds], CLASS_COLUMNS)} for c in order]


# the unknown class per generator (EXP/seed_N/report/generators.json, with a generator column)
GENERATOR_COLUMNS = (("unknown_recall", "unknown recall"), ("auroc", "AUROC"), ("fpr95", "FPR95"),
                     ("best_auroc", "AUROC of the best method"))


def aggregate_generators(runs: SeedRuns, seeds: list[int]) -> list[dict] | None:
    """The submitted method's per-generator rows of the unknown class as mean ± std over the seeds,
    with each seed's method of highest test AUROC; None when a seed has no generators.json."""
    found = seed_tables(runs, seeds, "generators.json", "generator", "per-generator")
    if found is None:
        return None
    tables, order = found
    return [{"generator": g, "seeds": seeds, "n": tables[seeds[0]][g].get("n"),
             "best_method": [tables[s][g].get("best_method") for s in seeds],
             **column_stats([tables[s][g] for s in seeds], GENERATOR_COLUMNS)} for g in order]


def generator_name(r: dict) -> str:
    best = sorted({str(m) for m in r["best_method"] if m})
    return f"{r['generator']} (best: {', '.join(best)})" if best else r["generator"]


def class_name(r: dict) -> str:
    taken = [LABEL_NAMES[m] if m is not None else "–" for m in r["mistaken_for"]]
    return f"{r['label']} {r['name']} (taken for: {', '.join(taken)})"


def row_name(r: dict) -> str:
    if r["method"] == SUBMITTED and r.get("submitted"):
        return f"**submitted** ({', '.join(r['methods'])})"
    if r.get("submitted_in"):
        return f"{r['method']} (submitted in seed {', '.join(map(str, r['submitted_in']))})"
    return r["method"]


def table(rows: list[dict], columns=COLUMNS, head: str = "method", name=row_name) -> str:
    shown = [(c, h) for c, h in columns if any(c in r for r in rows)]
    lines = [f"| {head} | " + " | ".join(h for _, h in shown) + " |", "|---|" + "---|" * len(shown)]
    for r in rows:
        cells = [f"{r[c]['mean']:.4f} ± {r[c]['std']:.4f}" if c in r else "–" for c, _ in shown]
        lines.append(f"| {name(r)} | " + " | ".join(cells) + " |")
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


def ensemble_section(runs: SeedRuns, seeds: list[int]) -> list[str]:
    """The seed ensemble's methods (EXP/ensemble/report/results.json, one run: no spread), when the
    recipe fused one (`fusion/seed_ensemble.py`) over exactly these seeds: an ensemble left by a
    run of other seeds (or one seed: no ensemble) is not this run's."""
    path = runs.ensemble / "report" / "results.json"
    if len(seeds) < 2 or not path.is_file():
        return []
    rows = read_report_rows(path, "method", "results", "re-run the evaluate stage")
    # the fused methods only: one member of one seed is already in the table above
    rows = [r for r in rows if ":" not in r["method"]]
    shown = [(c, h) for c, h in COLUMNS if any(isinstance(r.get(c), (int, float)) for r in rows)]
    # the members come from the fusion that made these results: a report without it is stale
    summary = read_json(runs.ensemble / "fusion" / "summary.json", "the ensemble's fusion summary",
                        "fusion", keys={"systems": list})
    if {seed_of(str(m)) for m in summary["systems"]} - {None} != set(seeds):
        return []
    members = ", ".join(map(str, summary["systems"]))
    where = runs.ensemble.relative_to(runs.exp)
    lines = [f"## The ensemble of the seeds (`{where}/`, one fusion over every seed's systems)", "",
             "One run, so no spread: every seed's trained systems are members of one fusion, and its "
             f"submission is the one in the submission folder. Its own report: `{where}/report/`. "
             f"Members: {members}.", "",
             "| method | " + " | ".join(h for _, h in shown) + " |", "|---|" + "---|" * len(shown)]
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), (int, float)) else "–" for c, _ in shown]
        name = f"**{r['method']}** (submitted)" if r.get("submitted") else r["method"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_summary(exp: Path, seeds: list[int], testset: str | None = None) -> list[dict]:
    """EXP/report (or, for a new test set, EXP/testsets/NAME/report) over the seeds' reports."""
    runs = SeedRuns(exp, testset)
    rows = aggregate(read_seed_results(runs, seeds))
    if not rows:
        fail(f"{exp}: no method is in every seed's results")
    out = ensure_dir(runs.shared / "report")
    seed_run = runs.seed("N").relative_to(exp).as_posix()
    column = "test_f1" if any("test_f1" in r for r in rows) else "dev_f1"
    has_fig = plot_per_seed(rows, column, out / "per_seed.png")
    text = [f"# Results over {len(seeds)} training seeds ({', '.join(map(str, seeds))})", "",
            "Each cell is mean ± sample std over the seeds; each seed is a whole run in "
            f"`{exp.name}/{seed_run}/` (its own report in `{seed_run}/report/`). τ is chosen on dev in every seed.",
            "",
            table(rows), ""]
    if has_fig:
        text += [f"## {column.replace('_', ' ')} per seed", "", "![per seed](per_seed.png)", ""]
    sections = (
        (aggregate_conditions(runs, seeds), "The submitted method per condition (test)",
         "Closed-set accuracy: the class decision before the unknown rule, on the known-class utterances; an "
         "utterance counts in each part of its condition.",
         CONDITION_COLUMNS, "condition", lambda r: r["condition"], "conditions_over_seeds.json"),
        (aggregate_classes(runs, seeds), "The submitted method per class (test)",
         "Closed-set recall: the class decision before the unknown rule; recall and precision: the submitted "
         "labels (for unknown: the unknown rule's); taken for: each seed's most frequent wrong label for the class.",
         CLASS_COLUMNS, "class", class_name, "classes_over_seeds.json"),
        (aggregate_generators(runs, seeds), "The unknown class per generator (test)",
         "Each generator's unknown utterances: the share the submitted labels call unknown, and unknown-vs-known "
         "AUROC and FPR95 against every known-class utterance, for the submitted method and for each seed's "
         "method of highest test AUROC (named beside the generator).",
         GENERATOR_COLUMNS, "generator", generator_name, "generators_over_seeds.json"),
    )
    for found, title, note, columns, head, name, file in sections:
        if found:
            text += [f"## {title}", "", note, "", table(found, columns, head, name), ""]
            write_text_atomic(out / file, json.dumps(found, indent=2) + "\n")
        else:  # a table this run cannot make leaves no earlier run's file behind
            (out / file).unlink(missing_ok=True)
    if not has_fig:
        (out / "per_seed.png").unlink(missing_ok=True)
    text += ensemble_section(runs, seeds)
    write_text_atomic(out / "README.md", "\n".join(text))
    write_text_atomic(out / "results_over_seeds.json", json.dumps(rows, indent=2) + "\n")
    return rows


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True)
    ap.add_argument("--seeds", required=True, help="comma-separated training seeds, e.g. 1,2,3")
    ap.add_argument("--testset", default=None, help="a new test set's name: the seeds' EXP/seed_N/testsets/NAME")
    args = ap.parse_args()
    rows = write_summary(Path(args.exp), parse_seeds(args.seeds), args.testset)
    print(table(rows))
    print(f"[seeds] report: {SeedRuns(Path(args.exp), args.testset).shared / 'report' / 'README.md'}")


if __name__ == "__main__":
    run_cli(main)
