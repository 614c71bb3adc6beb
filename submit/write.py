"""Write and validate the CodaLab submission: `submission/<name>.txt` and `submission/<name>.zip`.

    python -m submit.write --fusion exp/fusion --test_manifest exp/data/test --name track3 [--out submission]
    python -m submit.write --pred PRED.txt --test_manifest exp/data/test --name NAME

One line per file of the test folder, `<file name> <label>` (the name as the folder spells it),
sorted by id, no header. The ids are checked against the test folder itself (listed again, not
taken from a range). Test files that could not be read get label 7 (unknown): the kit cannot
attribute audio it cannot decode, and 7 costs a known class only recall, never the precision of
another class. They are listed on the console.
Missing, extra or duplicate ids and labels outside 0–7 are refused, naming them. With `--fusion`,
predictions older than what they stand for are refused too: score files changed since the fusion
read them, a test split prepared again or a system trained again since it was scored, and with
`--config` and `--systems` fusion settings or members other than those the fusion was made with (the
submit stage run alone after stage 2, 3 or 4, or after an edit of fusion.yaml or --systems, would
otherwise submit the old decisions).
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path

from core.atomic import atomic_path, remove_stale_temporaries, writing
from core.errors import ArgumentParser, fail, run_cli
from core.label_files import read_label_lines, split_wavs, utt_id_of
from core.labels import ALL_LABELS, UNKNOWN
from core.prepared_split import PreparedSplit
from core.stage_files import read_json
from core.stamps import read_stamp, recorded_place, same_file

UNREADABLE_LABEL = UNKNOWN


def _names(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def audio_folders_of(test: PreparedSplit) -> list[str]:
    """The folders of the test audio a prepared test split names, sorted."""
    return sorted({str(Path(p).parent) for p in test.paths})


def checked_test_split(test_manifest_dir: str | Path) -> PreparedSplit:
    """The prepared test split, checked against the audio folder(s) its manifest names: a
    submission must give a line to every test file there, so the two must agree."""
    test = PreparedSplit(test_manifest_dir)
    # the folder is listed again rather than trusting the manifest: test ids have gaps (no range)
    on_disk = set()
    for folder in audio_folders_of(test):
        if not Path(folder).is_dir():
            fail(f"{folder}: test folder named in {test.folder / 'manifest.tsv'} no longer exists")
        on_disk |= {utt_id_of(p.name) for p in split_wavs(Path(folder))}
    in_manifest = set(test.ids)
    if on_disk != in_manifest:
        fail(f"test folder and {test.folder / 'manifest.tsv'} disagree (not prepared: "
             f"{_names(on_disk - in_manifest) or 'none'}; gone: {_names(in_manifest - on_disk) or 'none'}); "
             "re-run the prepare stage")
    return test


def submission_labels(pred_path: str | Path, test: PreparedSplit) -> tuple[dict[str, int], list[str]]:
    """Every test id's submitted label from a prediction file (a checked_test_split's), and the ids
    of unreadable test files that were given label 7."""
    in_manifest = set(test.ids)
    preds = {u: lab for u, lab, _ in read_label_lines(pred_path, ALL_LABELS, "prediction file")}
    extra = set(preds) - in_manifest
    if extra:
        fail(f"{pred_path}: {len(extra)} id(s) not in the test folder: {_names(extra)}")
    unreadable = [u for u, ok in zip(test.ids, test.readable) if not ok and u not in preds]
    missing = in_manifest - set(preds) - set(unreadable)
    if missing:
        fail(f"{pred_path}: no prediction for {len(missing)} test file(s): {_names(missing)}")
    return {**preds, **{u: UNREADABLE_LABEL for u in unreadable}}, unreadable


def build_lines(pred_path: str | Path, test_manifest_dir: str | Path) -> tuple[list[str], list[str]]:
    """Validated submission lines and the ids of unreadable test files that were given label 7."""
    test = checked_test_split(test_manifest_dir)
    labels, unreadable = submission_labels(pred_path, test)
    # each line names its file as the test folder spells it (`X.WAV` stays `X.WAV`)
    names = {u: Path(p).name for u, p in zip(test.ids, test.paths)}
    return [f"{names[u]} {labels[u]}" for u in sorted(labels)], unreadable


def where_in(root: Path, signature: dict) -> Path:
    """Where the file a stamp's file_signature recorded stands under `root` (its folder and name
    below it): the recorded absolute path may be a copied experiment's origin."""
    return root.joinpath(*recorded_place(signature))


def check_fusion_is_current(fusion_dir: Path, test_dir: Path, purpose: str = "submitting",
                            config: Path | None = None, systems: list[str] | None = None,
                            scores_needed: bool = True) -> None:
    """The fusion's predictions are of the score files as they are now, and each member's test scores
    are of the test split as it is prepared now and of the checkpoint the system holds now (by the
    stamps of stages 5 and 4; a stamp of an older kit without these records passes). With `config`
    (the fusion settings the recipe fuses with) and `systems` (its members), the fusion was made
    with those settings and of those systems. Without `scores_needed`, a fusion folder kept without
    its members' score files (the report reads only the fusion) is judged by the files still there."""
    options = read_stamp(fusion_dir)
    if options is None:
        fail(f"{fusion_dir}: no stage stamp (the fusion stage did not finish); run the fusion stage")
    if systems is not None and "systems" in options and list(options["systems"]) != list(systems):
        fail(f"{fusion_dir}: fused from {','.join(options['systems'])}, not --systems {','.join(systems)}; "
             f"run the fusion stage with these systems before {purpose}")
    if config is not None and "config" in options:
        from fusion.config import load_fusion_config

        # as the stamp holds it: through JSON, where tuples are lists
        wanted = json.loads(json.dumps(dataclasses.asdict(load_fusion_config(config)), default=str))
        made = options["config"] if isinstance(options["config"], dict) else {}
        changed = sorted(k for k in wanted.keys() | made.keys() if wanted.get(k) != made.get(k))
        if changed:
            fail(f"{config}: {', '.join(changed)} changed since {fusion_dir} was made; run the fusion "
                 f"stage again before {purpose}")
    manifest = test_dir / "manifest.tsv"
    for system, signatures in (options.get("scores") or {}).items():
        folder = fusion_dir.parent / system / "scores"
        for signature in signatures:
            path = where_in(folder, signature)
            if not same_file(signature, path) and (scores_needed or os.path.lexists(path)):
                fail(f"{path}: changed since {fusion_dir} was made from it; run the fusion stage again "
                     f"before {purpose}")
        scored = read_stamp(folder / "test") or {}
        if "manifest" in scored and not same_file(scored["manifest"], manifest):
            fail(f"{manifest}: prepared again since {folder / 'test'} was scored; run the score and "
                 f"fusion stages again before {purpose}")
        checkpoint, ckpt_root = scored.get("checkpoint"), fusion_dir.parent / system / "ckpt"
        if isinstance(checkpoint, dict) and "path" in checkpoint and ckpt_root.is_dir():
            path = where_in(ckpt_root, checkpoint)
            if not same_file(checkpoint, path):
                fail(f"{path}: not the checkpoint {folder / 'test'} was scored with (trained again since, or "
                     f"replaced); run the score and fusion stages again before {purpose}")


def write_submission(lines: list[str], name: str, out_dir: str | Path) -> tuple[Path, Path]:
    """The .txt and its .zip (what is uploaded), each built under a temporary name. Two files cannot
    be renamed at once, so the order makes the zip the mark of completion: the old zip goes first,
    then the new .txt is renamed, the zip last. A kill at any point leaves either both new files
    or a .txt without a zip (re-run the stage), never a zip that disagrees with the .txt beside it."""
    out_dir = Path(out_dir)
    txt, zpath = out_dir / f"{name}.txt", out_dir / f"{name}.zip"
    remove_stale_temporaries(out_dir)  # what a killed earlier run left
    with atomic_path(zpath) as zip_tmp:
        with atomic_path(txt) as txt_tmp:
            with writing(txt):
                txt_tmp.write_text("\n".join(lines) + "\n")
            # CodaLab reads the .txt at the zip's top level, so no folder in the archive
            with writing(zpath), zipfile.ZipFile(zip_tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.write(txt_tmp, arcname=txt.name)
            zpath.unlink(missing_ok=True)
    return txt, zpath


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="predictions, `<file> <label>` lines")
    src.add_argument("--fusion", help="fusion folder (EXP/fusion): submit its configured submit_method")
    ap.add_argument("--test_manifest", required=True, help="prepared test split folder (exp/data/test)")
    ap.add_argument("--name", required=True, help="submission name")
    ap.add_argument("--out", default="submission")
    ap.add_argument("--config", default=None,
                    help="with --fusion: the fusion settings (fusion.yaml) it must have been made with")
    ap.add_argument("--systems", default=None, help="with --fusion: the systems (comma-separated) it must fuse")
    args = ap.parse_args()
    pred = args.pred
    if args.fusion:
        summary = read_json(Path(args.fusion) / "summary.json", "fusion summary", "fusion",
                            keys={"submit_method": str})
        method = summary["submit_method"]
        check_fusion_is_current(Path(args.fusion), Path(args.test_manifest),
                                config=Path(args.config) if args.config else None,
                                systems=[s for s in args.systems.split(",") if s] if args.systems else None)
        pred = Path(args.fusion) / method.replace(":", "__") / "test_pred.txt"
        print(f"[submit] method {method}: {pred}")
    lines, unreadable = build_lines(pred, args.test_manifest)
    for u in unreadable:
        print(f"[submit] {u}: unreadable test file, submitted as {UNREADABLE_LABEL} (unknown)")
    txt, zpath = write_submission(lines, args.name, args.out)
    print(f"[submit] {txt}: {len(lines)} lines ({len(unreadable)} unreadable); {zpath}")


if __name__ == "__main__":
    run_cli(main)
