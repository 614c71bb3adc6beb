"""An ensemble over training seeds: every seed's trained systems as members of one fusion.

    python -m fusion.seed_ensemble --exp exp --seeds 1,2,3 --systems lfcc_resnet18,rawnet2

After `run_track3.sh --seeds` has trained and scored each seed in `EXP/seed_N/`, this lays out
`EXP/ensemble/` as an experiment of its own whose members are `<system>_seed<N>`: each links the
seed's `config.yaml`, `ckpt/` and `scores/` (and its training stamp, log and record) back into
`EXP/seed_N/<system>/`, and `data` links
`EXP/data`, so that the fusion stage, `submit.predict` and a new test set (`--exp EXP/ensemble`)
read it like any trained experiment, and nothing is copied or retrained. Prints the member list
(the fusion stage's `--systems`). With `--testset NAME` it lays out the ensemble of a new test set
instead: `EXP/ensemble/testsets/NAME/`, whose members link each seed's `EXP/seed_N/testsets/NAME/<system>`
(their test scores included) and whose `data` links `EXP/testsets/NAME/data`.

Averaging the softmaxes of independently trained networks (a deep ensemble, Lakshminarayanan et
al. 2017) is the `score` method over these members; `stack` and the feature-level methods see
every seed's embeddings side by side.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ArgumentParser, fail, run_cli
from core.links import link_parts, link_training_records

ENSEMBLE_DIR = "ensemble"
LINKED = ("config.yaml", "ckpt", "scores")


@dataclass(frozen=True)
class SeedRuns:
    """Where an experiment of `run_track3.sh --seeds` keeps each seed's run, the seeds' ensemble and
    what is shared (the prepared data, the report over the seeds, the submission): EXP/seed_N,
    EXP/ensemble and EXP; for a new test set NAME scored by every seed, testsets/NAME below each."""
    exp: Path
    testset: str | None = None

    def _below(self, folder: Path) -> Path:
        return folder / "testsets" / self.testset if self.testset else folder

    def seed(self, seed: int | str) -> Path:  # a str names the pattern: seed("N")
        return self._below(self.exp / f"seed_{seed}")

    @property
    def ensemble(self) -> Path:
        return self._below(self.exp / ENSEMBLE_DIR)

    @property
    def shared(self) -> Path:
        return self._below(self.exp)


def parse_seeds(text: str) -> list[int]:
    """`--seeds 1,2,3` as integers, or a one-line error."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        fail(f"--seeds {text!r}: expected comma-separated integers")


def member_name(system: str, seed: int) -> str:
    return f"{system}_seed{seed}"


MEMBER_NAME = re.compile(r"(.+)_seed(\d+)")


def system_of(member: str) -> str:
    """The system a member was trained as: `rawnet2_seed4` -> `rawnet2`; other names as they are."""
    match = MEMBER_NAME.fullmatch(member)
    return match.group(1) if match else member


def seed_of(member: str) -> int | None:
    """The training seed of a member: `rawnet2_seed4` -> 4; None for a name of no seed."""
    match = MEMBER_NAME.fullmatch(member)
    return int(match.group(2)) if match else None


def lay_out(exp: Path, seeds: list[int], systems: list[str], testset: str | None = None) -> list[str]:
    """Link every seed's systems into EXP/ensemble (or, for a new test set, into
    EXP/ensemble/testsets/NAME); the member names, seeds outer, systems inner."""
    if len(set(seeds)) < 2 or len(set(seeds)) != len(seeds):
        fail(f"--seeds {','.join(map(str, seeds))}: an ensemble needs two or more distinct seeds")
    runs = SeedRuns(exp, testset)
    out = runs.ensemble
    stages, prepare = ("stages 2-4 of the new test set", "stage 2 of the new test set") if testset \
        else ("stages 3 and 4", "stage 2")
    members = []
    for seed in seeds:
        for system in systems:
            link_parts(runs.seed(seed) / system, out / member_name(system, seed), LINKED,
                       f"train and score {system} for seed {seed} first (run_track3.sh --seeds, {stages})",
                       f"{out} holds other files; move them away")
            link_training_records(runs.seed(seed) / system, out / member_name(system, seed))
            members.append(member_name(system, seed))
    link_parts(runs.shared, out, ("data",), f"prepare the data first ({prepare})", f"{out} holds other files; move them away")
    return members


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True, help="the experiment holding seed_N/ folders (run_track3.sh's --exp)")
    ap.add_argument("--seeds", required=True, help="comma-separated training seeds, e.g. 1,2,3")
    ap.add_argument("--systems", required=True, help="comma-separated systems trained in every seed")
    ap.add_argument("--testset", default=None, help="a new test set's name (EXP/seed_N/testsets/NAME): its ensemble")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    systems = [s for s in args.systems.split(",") if s]
    if not systems:
        fail("--systems: give one or more systems")
    print(",".join(lay_out(Path(args.exp), seeds, systems, args.testset)))


if __name__ == "__main__":
    run_cli(main)
