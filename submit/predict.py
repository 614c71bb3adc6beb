"""Which algorithm made this audio? Apply a trained kit to files, folders or a list of files.

    python -m submit.predict --exp exp PATH [PATH ...] [--out pred.tsv] [--method NAME]
                             [--backend torch|onnx] [--device auto] [--batch_size N] [--ngpu N]
                             [--nj N]

PATH is an audio file (anything the kit reads: wav, flac, ogg, opus, mp3; any sample rate, any
channel count), a folder (searched recursively; audio of other formats there, such as m4a, is named
on stderr) or a list file (`.txt`, `.lst`, `.scp`: one path per line, a folder there searched as
on the command line). Files of one name in two folders share an utt_id; their rows say so in
`warning`.
Each file goes through the test stage's preparation (the options stored with `EXP/data/test`:
resample to 16 kHz, edge-silence trim, loudness), the systems the method needs (their best
checkpoints; `--backend onnx` runs the exported `model.onnx` files instead, see
systems/onnx_export.py) and the fusion method with the τ the fusion stage chose on dev (default:
the submitted method). Output, a TSV on stdout or `--out`, one row per input file, in input order:

  utt_id  path  label  p_0 … p_6  unknown_score  method  error  warning

`label` is 0 (real), 1–6 (a known algorithm) or 7 (unknown); `p_c` are the method's per-class
scores: shares summing to 1 for the methods that give them (max softmax, score fusion, feature
fusion's eq. 2–4 or softmax, and so every method `submit_method: auto` submits); OpenMax's unknown
share is the unknown score; the post-hoc unknown scores and two_stage give their own score columns.
`unknown_score` = 1 − max p (OpenMax: its unknown probability): the label is 7 when max p < τ,
i.e. unknown_score > 1 − τ. `--ngpu N` scores each system on N processes, one per GPU, through
`systems.score --ngpu N` (torchrun) on the prepared files; the fusion runs once. A file that
cannot be read gets label 7, empty scores and the reason in `error`; nothing is dropped, and the
command exits 1 at the end when any file failed. A readable file with little or no signal (digital
silence, dither, under 0.1 s) is labelled as usual and says so in `warning`. `--nj N` reads and
prepares the files on N processes. Progress goes to stderr.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from core.atomic import scratch_dir
from core.errors import ArgumentParser, fail, run_cli
from core.label_files import is_utf8, text_lines
from core.labels import KNOWN_CLASSES, NO_LABEL, UNKNOWN
from core.prepared_split import PreparedSplit, PreparedSplitWriter
from core.stage_files import read_json
from data_prep.audio_io import LoadOptions
from data_prep.prepare import AUDIO_SUFFIXES as PREPARE_AUDIO_SUFFIXES
from data_prep.prepare import read_files
from fusion.calibrate import known_max
from fusion.config import load_fusion_config
from fusion.members import SplitScores, align_windows, load_members
from fusion.scorers import FusionContext, build_scorer
from submit.write import check_fusion_is_current

# what soundfile (libsndfile 1.2) decodes; prepare.AUDIO_SUFFIXES also lists formats it does not
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}
LIST_SUFFIXES = {".txt", ".lst", ".scp"}
COLUMNS = ("utt_id", "path", "label", *[f"p_{c}" for c in KNOWN_CLASSES], "unknown_score", "method", "error",
           "warning")


def audio_below(folder: Path) -> list[Path]:
    """Every entry below `folder` with an audio suffix that is not a folder, sorted: linked folders
    are followed (each real folder once, so a link back up ends), and a link to nothing is kept, so
    that it becomes an error row like any file that cannot be read, never a file left out."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(root) / name for name in files if Path(name).suffix.lower() in PREPARE_AUDIO_SUFFIXES]
    return sorted(found)


def folder_audio(folder: Path) -> list[Path]:
    """The audio files below `folder` that predict reads, sorted. Audio of other formats there
    (prepare's wider list: m4a, aac, amr …) is named on stderr, never passed over in silence."""
    found = audio_below(folder)
    read = [f for f in found if f.suffix.lower() in AUDIO_SUFFIXES]
    if len(read) < len(found):
        other = next(f for f in found if f.suffix.lower() not in AUDIO_SUFFIXES)
        print(f"[predict] {folder}: {len(found) - len(read)} audio file(s) not read (formats read: "
              f"{', '.join(sorted(AUDIO_SUFFIXES))}), e.g. {other}; convert them to wav or flac", file=sys.stderr)
    if not read:
        print(f"[predict] {folder}: no audio file it reads", file=sys.stderr)
    return read


def list_inputs(paths: list[str]) -> list[Path]:
    """Every audio file named by the arguments, in the order given (folders sorted, recursively,
    also where a list file names one); a file named twice (the same path, or a folder and a file in
    it) is scored once, where first named."""
    out = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            out += folder_audio(p)
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            for number, line in enumerate(text_lines(p, "list file"), 1):
                entry = list_entry(p, number, line)
                if entry is not None:
                    out += folder_audio(entry) if entry.is_dir() else [entry]
        else:
            out.append(p)  # a missing or unreadable file becomes an error row, never a lost one
    if not out:
        fail(f"no audio files in {' '.join(paths)}")
    for f in out:
        if any(c in str(f) for c in "\t\n\r"):
            fail(f"{str(f)!r}: a path with a tab or line break cannot be a row of the output TSV; rename the file")
        if not is_utf8(str(f)):
            fail(f"{str(f)!r}: a path that is not UTF-8 cannot be a row of the output TSV; rename the file")
    first, repeated = {}, set()  # each file by its real path: where first named
    for f in out:
        key = f.resolve()
        if key in first:
            repeated.add(key)
        else:
            first[key] = f
    unique = list(first.values())
    if repeated:
        again = next(f for key, f in first.items() if key in repeated)
        print(f"[predict] {len(out) - len(unique)} path(s) named more than once (e.g. {again}): each file is "
              "scored once, where first named", file=sys.stderr)
    return unique


def list_entry(list_file: Path, number: int, line: str) -> Path | None:
    """The path that line `number` of a list file names (None for a blank or `#` comment line): a
    relative path is read from the list file's folder. A `.scp` line is Kaldi's `<id> <path>`
    (a line of one field is a path); a Kaldi command entry (`… |`) names no file and is refused."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if list_file.suffix.lower() == ".scp":
        if text.endswith("|"):
            fail(f"{list_file}: line {number}: a command (`… |`), not an audio file; write its audio to a file "
                 "and list that")
        parts = text.split(maxsplit=1)
        text = parts[-1]
    entry = Path(text)
    return entry if entry.is_absolute() else list_file.parent / entry


def check_out_file(out: str, inputs: list[Path]) -> None:
    """Refused before the scoring, not when the table is written after it: a folder, a missing or
    unwritable folder, and one of the inputs (the table would replace the audio)."""
    path = Path(out)
    if path.is_dir():
        fail(f"--out {out}: is a folder; give a file name")
    if not path.resolve().parent.is_dir():
        fail(f"--out {out}: its folder does not exist")
    if any(path.resolve() == f.resolve() for f in inputs):
        fail(f"--out {out}: is one of the input files; the table would replace it")
    try:
        with tempfile.NamedTemporaryFile(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as err:
        fail(f"--out {out}: cannot write in its folder ({err.strerror or err})")


def load_options(exp: Path) -> LoadOptions:
    """The test stage's preparation options, stored in its stamp: new files are read exactly as the
    test split was, or not at all (defaults in their place could differ from what the systems saw)."""
    stamp = exp / "data" / "test" / ".options.json"
    if not stamp.is_file():
        fail(f"{stamp}: missing; --exp must be a trained experiment with its prepared data (exp, "
             "exp/seed_N or exp/ensemble of run_track3.sh; in a seed folder of an older run: "
             "ln -s ../data exp/seed_N/data)")
    try:
        return LoadOptions(**json.loads(stamp.read_text())["options"]["load"])
    except (ValueError, KeyError, TypeError) as err:
        fail(f"{stamp}: unreadable stage stamp ({err}); re-run the prepare stage")


def prepare_inputs(files: list[Path], opts: LoadOptions, folder: Path, nj: int = 1
                   ) -> tuple[PreparedSplit, list[str], list[str]]:
    """The files as a prepared split (the test stage's format) in `folder`, read on `nj` processes,
    and per file the reason it could not be read and its evidence warning (each "" when none)."""
    from tqdm import tqdm

    errors, warnings = [], []
    with PreparedSplitWriter(folder) as split:
        read = tqdm(read_files(files, opts, nj), total=len(files), desc="prepare", unit="file", file=sys.stderr,
                    mininterval=2.0)
        for i, (path, x, sr, error, warning) in enumerate(read):
            errors.append(error)
            warnings.append(warning)
            if x is None:
                split.add_unreadable(str(i), path, NO_LABEL, error)
            else:
                split.add(str(i), path, NO_LABEL, sr, round(len(x) / opts.sample_rate, 4), x)
    return PreparedSplit(folder), errors, warnings


class SystemOutputs:
    """One system's utterance logits, embeddings and window embeddings for the new files."""

    def __init__(self, logits, embeddings, window_embeddings, window_offsets):
        self.logits, self.embeddings = logits, embeddings
        self.window_embeddings, self.window_offsets = window_embeddings, window_offsets


def check_export_is_current(metadata: dict, system_dir: Path, cfg, onnx_path: Path) -> None:
    """An ONNX export holds the weights of the best checkpoint when it was made: after training
    again (another best checkpoint, or another config) its scores are not the system's, and the
    fusion's τ and statistics no longer fit them."""
    from systems.common.inference import best_checkpoint
    from systems.common.train_inputs import fits_config

    best = best_checkpoint(system_dir / "ckpt")
    exported = metadata.get("checkpoint"), metadata.get("config_digest")
    if best is None or exported[0] != best.path.name or not fits_config(exported[1], cfg):
        now = best.path.name if best is not None else "none"
        fail(f"{onnx_path}: exported from checkpoint {exported[0]}, but the system's best checkpoint is now {now} "
             f"(trained again since); re-run python -m systems.onnx_export --exp {system_dir}")


def run_system(exp: Path, system: str, split: PreparedSplit, backend: str, device_name: str,
               batch_size: int | None) -> SystemOutputs:
    from systems.common.config import load_config
    from systems.common.inference import utterance_means, window_hop
    from systems.common.windows import SplitWindows

    cfg = load_config(exp / system / "config.yaml")
    bs = batch_size or cfg.score.batch_size
    if backend == "onnx":
        from systems.onnx_backend import OnnxSystem

        onnx_path = exp / system / "model.onnx"
        if not onnx_path.is_file():
            fail(f"{onnx_path}: no ONNX export; run python -m systems.onnx_export --exp {exp / system}")
        model = OnnxSystem(onnx_path)
        check_export_is_current(model.metadata, exp / system, cfg, onnx_path)
        windows = SplitWindows(split, model.input_samples, window_hop(cfg))
        logits, embs = [], []
        for start in range(0, len(windows), bs):
            batch = np.stack([windows[k][0].numpy() for k in range(start, min(start + bs, len(windows)))])
            lo, em = model(batch)
            logits.append(lo)
            embs.append(em)
        win_logits, win_emb = np.concatenate(logits), np.concatenate(embs)
    else:
        from systems.common.inference import (
            best_checkpoint,
            build_model,
            load_model_state,
            pick_device,
            score_windows,
            torch_threads,
        )
        from systems.common.train_inputs import fits_config

        best = best_checkpoint(exp / system / "ckpt")
        if best is None or not fits_config(best.meta.get("config_digest"), cfg):
            fail(f"{exp / system}: no checkpoint trained with {exp / system / 'config.yaml'}; run the train stage")
        torch_threads(cfg.train.deterministic)
        device = pick_device(device_name)
        model = build_model(cfg).to(device)
        model.load_state_dict(load_model_state(best.paramfiles["model"], device))
        windows = SplitWindows(split, model.input_samples, window_hop(cfg))
        win_logits, win_emb = score_windows(model, windows, device, bs, cfg.train.bf16, desc=f"score {system}",
                                            num_workers=cfg.train.num_workers, pin_memory=cfg.train.pin_memory)
    return SystemOutputs(utterance_means(win_logits, windows.offsets), utterance_means(win_emb, windows.offsets),
                         win_emb, windows.offsets)


def run_system_processes(exp: Path, system: str, split: PreparedSplit, nproc: int, device_name: str,
                         batch_size: int | None) -> SystemOutputs:
    """The torch backend on `nproc` processes: `systems.score --ngpu N` on the prepared files (`split`,
    WORK/data/test), in WORK/SYSTEM, which links the system's config and checkpoints. Its output
    goes to stderr: stdout may be the TSV."""
    import subprocess

    from core.links import link_parts
    from core.scores import SystemScores

    data = split.folder.parent
    folder = data.parent / system
    link_parts(exp / system, folder, ("config.yaml", "ckpt"), "run the train stage", "")
    argv = [sys.executable, "-m", "systems.score", "--exp", str(folder), "--data", str(data),
            "--splits", "test", "--device", device_name, "--ngpu", str(nproc)]
    if batch_size:
        argv += ["--batch_size", str(batch_size)]
    if subprocess.run(argv, stdout=sys.stderr).returncode:
        fail(f"{exp / system}: scoring on {nproc} processes failed; its message is above")
    scores = SystemScores(folder / "scores" / "test")
    if scores.ids != [split.ids[i] for i in np.flatnonzero(split.readable)]:
        fail(f"{folder / 'scores' / 'test'}: the scored files are not the readable inputs in input order")
    return SystemOutputs(scores.logits, scores.embeddings, scores.window_embeddings, scores.window_offsets)


def mark_shared_ids(rows: list[dict]) -> None:
    """Files of one name in different folders get one utt_id (the name without extension): each
    row keeps its path, and says so in `warning` and on stderr, since a submission or
    eval/score.py needs one file per id."""
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["utt_id"], []).append(r)
    for utt, group in by_id.items():
        if len(group) > 1:
            print(f"[predict] {len(group)} files share the id {utt} ({', '.join(str(r['path']) for r in group)}): "
                  "the path column tells them apart; a submission needs one file per id", file=sys.stderr)
            for r in group:
                note = f"id {utt} shared with {len(group) - 1} other file(s)"
                r["warning"] = f"{r['warning']}; {note}" if r["warning"] else note


def experiment_summary(exp: Path) -> tuple[Path, dict]:
    """The fusion summary of a trained experiment; a seeds experiment's top folder, or a folder
    that is no experiment at all, is told which folder to give."""
    if not exp.is_dir():
        fail(f"--exp {exp}: no such folder; give a trained experiment (run_track3.sh's --exp)")
    summary_path = exp / "fusion" / "summary.json"
    if not summary_path.exists():
        seeds = sorted(int(p.parent.parent.name[5:]) for p in exp.glob("seed_*/fusion/summary.json")
                       if p.parent.parent.name[5:].isdigit())
        if seeds:
            fail(f"--exp {exp}: holds the runs of --seeds {','.join(map(str, seeds))}, not one experiment; "
                 f"give {exp / 'ensemble'} (the seeds' ensemble) or {exp}/seed_N")
        if not (exp / "fusion").is_dir():
            fail(f"--exp {exp}: not a trained experiment (no fusion/summary.json); give the folder "
                 "run_track3.sh's --exp trained (exp by default)")
    return summary_path, read_json(summary_path, "fusion summary", "fusion",
                                   keys={"submit_method": str, "methods": dict, "systems": list})


def predict(exp: Path, files: list[Path], method: str | None, backend: str, device: str,
            batch_size: int | None, nproc: int = 1, nj: int = 1) -> tuple[list[dict], bool]:
    """One row per file, in input order, and whether the method's last score is its own unknown score."""
    summary_path, summary = experiment_summary(exp)
    method = method or summary["submit_method"]
    if method not in summary["methods"]:
        fail(f"method {method!r} is not in {summary_path}; choose from {', '.join(summary['methods'])}")
    info = summary["methods"][method]
    load = load_options(exp)
    # the fusion's τ and statistics fit the members it was made from, not a system trained again since
    check_fusion_is_current(summary_path.parent, exp / "data" / "test", "predicting")
    # single-system methods need one model; every fusion needs all members
    needed = [method.split(":", 1)[1]] if ":" in method else summary["systems"]
    with scratch_dir("kit_predict") as tmp:
        folder = Path(tmp) / "data" / "test"
        folder.mkdir(parents=True)
        split, errors, warnings = prepare_inputs(files, load, folder, nj)
        readable = np.flatnonzero(split.readable)
        # `evidence`: the file's own signal warning; `warning`, the column, may add a shared id
        rows = [{"utt_id": Path(p).stem, "path": p, "label": UNKNOWN, "method": method, "error": e, "warning": w,
                 "evidence": w} for p, e, w in zip(split.paths, errors, warnings)]
        mark_shared_ids(rows)
        if len(readable):
            if nproc > 1:
                outputs = {s: run_system_processes(exp, s, split, nproc, device, batch_size) for s in needed}
            else:
                outputs = {s: run_system(exp, s, split, backend, device, batch_size) for s in needed}
            labels, scores = apply_method(exp, needed, method, info, outputs, len(readable))
            for k, i in enumerate(readable):
                rows[i]["label"] = int(labels[k])
                rows[i]["scores"] = None if scores is None else scores[k]
    return rows, bool(info.get("unknown_column"))


def apply_method(exp: Path, systems: list[str], method: str, info: dict, outputs: dict[str, SystemOutputs],
                 n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels and per-class scores of the new utterances: the method refitted on the stored train/dev
    exports (deterministic, so it equals what the fusion stage fitted) and its stored τ."""
    cfg = load_fusion_config(exp / "fusion" / "config.yaml")
    data = load_members(exp, systems, splits=("train", "dev"))
    windows, offsets = align_windows(outputs)
    data["test"] = SplitScores(ids=[str(i) for i in range(n)], labels=np.full(n, NO_LABEL),
                               logits={s: o.logits for s, o in outputs.items()},
                               embeddings={s: o.embeddings for s, o in outputs.items()},
                               window_embeddings=windows, window_offsets=offsets)
    scorer = build_scorer(FusionContext(data, systems, cfg), method)
    threshold = scorer.restore_threshold(info)
    return scorer.decide("test", threshold), scorer.scores("test")


def format_rows(rows: list[dict], unknown_column: bool) -> str:
    lines = ["\t".join(COLUMNS)]
    for r in rows:
        s = r.get("scores")
        if s is None:
            probs, unknown = [""] * len(KNOWN_CLASSES), ""
        else:
            known = s[:-1] if unknown_column else s
            probs = [f"{v:.6f}" for v in known]
            unknown = f"{(s[-1] if unknown_column else 1.0 - known_max(s[None], False)[0]):.6f}"
        lines.append("\t".join([r["utt_id"], r["path"], str(r["label"]), *probs, unknown, r["method"], r["error"],
                                r["warning"]]))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True, help="a trained experiment folder (run_track3.sh's --exp)")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="audio files, folders or list files")
    ap.add_argument("--out", help="TSV to write (default: stdout)")
    ap.add_argument("--method", help="fusion method (default: the submitted one, EXP/fusion/summary.json)")
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--device", default="auto", help="torch backend: auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--batch_size", type=int, default=None, help="windows per batch (default: score.batch_size)")
    ap.add_argument("--ngpu", type=int, default=1, help="torch backend: scoring processes, one per GPU (torchrun)")
    ap.add_argument("--nj", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes that read and prepare the files (default: 2, or 1 on one core)")
    args = ap.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        fail(f"--batch_size {args.batch_size}: must be 1 or more")
    if args.nj < 1:
        fail(f"--nj {args.nj}: at least 1")
    if args.ngpu < 1:
        fail(f"--ngpu {args.ngpu}: at least 1")
    if args.ngpu > 1 and args.backend != "torch":
        fail(f"--ngpu {args.ngpu}: several processes need the torch backend, not --backend {args.backend}")
    if args.method is not None and not args.method.strip():
        fail("--method: empty; leave it out for the submitted method")
    inputs = list_inputs(args.paths)
    if args.out:
        check_out_file(args.out, inputs)
    if args.backend == "torch":
        from systems.common.distributed import check_processes, world_from_env
        from systems.common.inference import pick_device

        # a wrong --device or --ngpu fails before any file is read
        check_processes(args.ngpu, world_from_env(), pick_device(args.device))
    exp = Path(args.exp)
    rows, unknown_column = predict(exp, inputs, args.method, args.backend, args.device,
                                   args.batch_size, args.ngpu, args.nj)
    method = rows[0]["method"]
    text = format_rows(rows, unknown_column)
    if args.out:
        from core.atomic import stale_temporaries_of, write_text_atomic

        stale_temporaries_of(args.out)  # a killed earlier call's half-written copy
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    failed = [r for r in rows if r["error"]]
    weak = [r for r in rows if r["evidence"]]
    for r in failed:
        print(f"[predict] {r['path']}: {r['error']}", file=sys.stderr)
    for r in weak:
        print(f"[predict] {r['path']}: labelled {r['label']}, but {r['evidence']}", file=sys.stderr)
    print(f"[predict] {len(rows)} file(s), {len(failed)} unreadable, {len(weak)} with little or no signal; "
          f"method {method}", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
