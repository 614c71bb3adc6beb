"""Lay out a new test set beside a trained experiment, so that the recipe scores, fuses, submits
and reports it without retraining and without touching the experiment.

    python -m submit.new_test_set --exp exp --out exp/testsets/NAME --systems a,b [--data_from DIR]

`OUT/<sys>/` links the trained system's `config.yaml`, `ckpt/` and its `scores/{train,dev}` (what
fusion fits on) back into `EXP/<sys>/`; the recipe then writes only below OUT: `data/test`,
`<sys>/scores/test`, `fusion/`, `report/`, `submission/`. With `--data_from DIR`, `OUT/data` links
`DIR/data` instead: a test set prepared once and scored by several runs (every seed of a `--seeds`
experiment scores `EXP/testsets/NAME/data` in `EXP/seed_N/testsets/NAME/`). Running it again
changes nothing.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import ArgumentParser, fail, run_cli
from core.links import link_parts

LINKED = ("config.yaml", "ckpt", "scores/train", "scores/dev")


def link_system(exp_sys: Path, out_sys: Path) -> None:
    link_parts(exp_sys, out_sys, LINKED, f"train and score {exp_sys.name} on its own data first (stages 3 and 4)",
               "choose another --test_name")


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True, help="the trained experiment")
    ap.add_argument("--out", required=True, help="the new test set's folder")
    ap.add_argument("--systems", required=True)
    ap.add_argument("--data_from", default=None, help="a folder whose data/ (the prepared test set) OUT/data links")
    args = ap.parse_args()
    exp, out = Path(args.exp), Path(args.out)
    if out.resolve() == exp.resolve():
        fail(f"--out {out}: must differ from the experiment folder")
    for s in [s for s in args.systems.split(",") if s]:
        link_system(exp / s, out / s)
    if args.data_from:
        link_parts(Path(args.data_from), out, ("data",), "prepare the new test set first (stage 2)",
                   "choose another --test_name")
    print(f"[new test set] {out}: linked to the trained systems in {exp}")


if __name__ == "__main__":
    run_cli(main)
