"""Bad inputs and faults, stage by stage: each one is a one-line `error:` naming the file (or the
utterance) and the problem, exit code 2 and no traceback, or it is handled (exit 0) and nothing
is silently lost. No case leaves a partial output (`*.tmp`, `.partial`/`.old` folders, half-written
files).

Every case runs the real command line in a subprocess. Faults:
  full disk    RLIMIT_FSIZE in the child (writes beyond N bytes fail with EFBIG, SIGXFSZ ignored)
  read-only    the output folder is chmod 0555; as root, where that stops nothing, the command runs
               under `setpriv` without CAP_DAC_OVERRIDE so that the mode bits apply to it too
Progress bars are switched off (TQDM_DISABLE) so that stderr holds the error line alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .conftest import ROOT

SR = 16000
TEST_IDS = [f"ADD2023_T3_E_{i:08d}" for i in range(1, 7)]
TRUNCATED_TEST = TEST_IDS[-1]  # cut short in the base corpus: flagged, and submitted as 7
SYSTEM = "sysA"
SETPRIV = shutil.which("setpriv")


# ---------------------------------------------------------------------------------------------
# small inputs

def tone(seconds: float = 0.3, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav(path: Path, x: np.ndarray | None = None, subtype: str = "PCM_16", freq: float = 300.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(freq=freq) if x is None else x, SR, subtype=subtype, format="WAV")
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def nonfinite(value: float) -> np.ndarray:
    x = tone()
    x[100] = value
    return x


def label_text(rows: dict[str, int]) -> str:
    return "".join(f"{u}.wav {c}\n" for u, c in rows.items())


def cut(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, as an interrupted copy or a full disk leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---------------------------------------------------------------------------------------------
# the shared base: a three-split corpus, prepared; one scored system; its fusion; a test key

def write_scores_for(exp: Path, data: Path, rng: np.random.Generator) -> None:
    from core.prepared_split import PreparedSplit
    from core.scores import write_scores

    for split in ("train", "dev", "test"):
        prepared = PreparedSplit(data / split)
        keep = np.flatnonzero(prepared.readable)
        ids = [prepared.ids[i] for i in keep]
        labels = prepared.labels[keep]
        known = np.where(labels >= 0, labels, rng.integers(0, 7, len(labels)))
        logits = 5 * np.eye(7)[known] + rng.standard_normal((len(ids), 7))
        emb = rng.standard_normal((len(ids), 8)) + 3 * np.eye(7, 8)[known]
        windows = split != "train"
        write_scores(exp / SYSTEM / "scores" / split, ids, labels, logits, emb,
                     emb if windows else None, np.arange(len(ids) + 1) if windows else None)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs_base")
    corpus = root / "corpus"
    for split, per_class in (("train", 3), ("dev", 2)):
        rows = {}
        for c in range(7):
            for k in range(per_class):
                utt = f"{split}_{c}_{k}"
                wav(corpus / split / "wav" / f"{utt}.wav", freq=200 + 60 * c + 10 * k)
                rows[utt] = c
        (corpus / split / "label.txt").write_text(label_text(rows))
    for i, utt in enumerate(TEST_IDS):
        wav(corpus / "test" / "wav" / f"{utt}.wav", freq=250 + 50 * i)
    truncate(corpus / "test" / "wav" / f"{TRUNCATED_TEST}.wav")
    key = {u: (7 if i % 3 == 2 else i % 7) for i, u in enumerate(TEST_IDS)}
    (root / "test_key.txt").write_text(label_text(key))
    proc = run(["-m", "data_prep.prepare", "--data_root", str(corpus), "--out", str(root / "data"), "--nj", "1"])
    assert proc.returncode == 0, proc.stderr
    write_scores_for(root / "exp", root / "data", np.random.default_rng(0))
    proc = run(["-m", "fusion.run", "--exp", str(root / "exp"), "--systems", SYSTEM])
    assert proc.returncode == 0, proc.stderr
    return root


# ---------------------------------------------------------------------------------------------
# running a case

def run(argv: list[str], fault: str | None = None, limit: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *argv]
    preexec = None
    if fault == "read_only" and os.geteuid() == 0:
        cmd = [SETPRIV, "--inh-caps=-dac_override", "--bounding-set=-dac_override", *cmd]
    elif fault == "full_disk":
        def preexec():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=preexec,
                          check=False)


@dataclasses.dataclass
class Case:
    argv: list[str]
    rc: int
    says: tuple[str, ...]  # in the error line (rc 2) or on stdout (rc 0)
    outputs: tuple[Path, ...] = ()  # folders searched for leftovers of atomic writes
    absent: tuple[Path, ...] = ()  # outputs that must not exist after the command
    fault: str | None = None  # "full_disk" or "read_only"
    limit: int = 0  # full_disk: the file size limit in bytes
    check: Callable[[], None] | None = None  # what a handled input must have produced
    read_only: tuple[Path, ...] = ()  # folders made 0555 for the run


CASES: dict[str, Callable] = {}
XFAIL: dict[str, str] = {}


def case(name: str, xfail: str | None = None):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = fn
        if xfail:
            XFAIL[name] = xfail
        return fn
    return register


def leftovers(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")
            or (p.is_dir() and p.name.startswith(".") and p.name.endswith((".partial", ".old")))]


# ---------------------------------------------------------------------------------------------
# stage 2: prepare (one split from a folder of 4 tiny WAVs and a label file)

class Split:
    """`W/` with u0..u3.wav (labels 0..3) and `labels.txt`; `O` the output folder."""

    def __init__(self, tmp: Path, n: int = 4):
        self.wavs, self.labels, self.out = tmp / "W", tmp / "labels.txt", tmp / "O"
        for i in range(n):
            wav(self.wavs / f"u{i}.wav", freq=200 + 100 * i)
        self.rows = {f"u{i}": i for i in range(n)}
        self.labels.write_text(label_text(self.rows))

    def argv(self, split: str = "train", labels: bool = True) -> list[str]:
        return ["-m", "data_prep.prepare", "--split", split, "--wav_dir", str(self.wavs), "--out", str(self.out),
                "--nj", "1"] + (["--label_file", str(self.labels)] if labels else [])

    def manifest_ids(self, split: str = "train") -> list[str]:
        from core.prepared_split import PreparedSplit

        return PreparedSplit(self.out / split).ids

    def case(self, rc: int, says: tuple[str, ...], split: str = "train", labels: bool = True, **kw) -> Case:
        absent = (self.out / split,) if rc else ()
        return Case(self.argv(split, labels), rc, says, outputs=(self.out,), absent=absent, **kw)


def report_lists(s: Split, split: str, *parts: str) -> None:
    report = (s.out / split / "report.txt").read_text()
    assert all(p in report for p in parts), report


@case("prepare: truncated WAV in train -> left out, listed as truncated")
def _(tmp, base):
    s = Split(tmp)
    truncate(s.wavs / "u2.wav")

    def check():
        assert s.manifest_ids() == ["u0", "u1", "u3"]
        report_lists(s, "train", "unreadable\tu2\t", "truncated")
    return s.case(0, ("u2", "truncated"), check=check)


@case("prepare: truncated WAV in test -> flagged unreadable, kept for the submission")
def _(tmp, base):
    from core.prepared_split import PreparedSplit

    s = Split(tmp)
    truncate(s.wavs / "u1.wav")

    def check():
        test = PreparedSplit(s.out / "test")
        i = test.ids.index("u1")
        assert not test.readable[i] and test.num_samples(i) == 0
        assert len(test) == 4
        report_lists(s, "test", "unreadable\tu1\t", "truncated")
    return s.case(0, ("u1", "truncated"), split="test", labels=False, check=check)


@case("prepare: NaN samples in a float WAV (train) -> left out with a clear reason")
def _(tmp, base):
    s = Split(tmp)
    wav(s.wavs / "u1.wav", nonfinite(np.nan), subtype="FLOAT")

    def check():
        assert "u1" not in s.manifest_ids()
        report_lists(s, "train", "unreadable\tu1\t", "NaN or infinite")
    return s.case(0, ("u1", "NaN or infinite"), check=check)


@case("prepare: infinite samples in a float WAV (test) -> flagged unreadable")
def _(tmp, base):
    from core.prepared_split import PreparedSplit

    s = Split(tmp)
    wav(s.wavs / "u3.wav", nonfinite(np.inf), subtype="FLOAT")

    def check():
        test = PreparedSplit(s.out / "test")
        assert not test.readable[test.ids.index("u3")]
    return s.case(0, ("u3", "NaN or infinite"), split="test", labels=False, check=check)


@case("prepare: A.wav and A.WAV in one folder -> refused, both named")
def _(tmp, base):
    s = Split(tmp)
    shutil.copy(s.wavs / "u1.wav", s.wavs / "u1.WAV")
    return s.case(2, (str(s.wavs / "u1.wav"), str(s.wavs / "u1.WAV"), "differ only in case"))


@case("prepare: a.wav and A.wav (ids differing in case) -> refused, both named")
def _(tmp, base):
    s = Split(tmp)
    shutil.copy(s.wavs / "u1.wav", s.wavs / "U1.wav")
    return s.case(2, (str(s.wavs / "u1.wav"), str(s.wavs / "U1.wav"), "differ only in case"), split="test",
                  labels=False)


@case("prepare: file name with a space -> refused (ids cannot hold one)")
def _(tmp, base):
    s = Split(tmp)
    shutil.copy(s.wavs / "u1.wav", s.wavs / "u 9.wav")
    return s.case(2, (str(s.wavs / "u 9.wav"), "white space"), split="test", labels=False)


@case("prepare: label file starting with a UTF-8 BOM -> read, first utterance kept")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_bytes(b"\xef\xbb\xbf" + label_text(s.rows).encode())

    def check():
        assert s.manifest_ids() == ["u0", "u1", "u2", "u3"]
        report_lists(s, "train", "0 problem(s)")
    return s.case(0, ("4 utterances, 0 problem(s)",), check=check)


@case("prepare: label file with CRLF line ends -> read")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_bytes(label_text(s.rows).replace("\n", "\r\n").encode())
    return s.case(0, ("4 utterances, 0 problem(s)",), check=lambda: s.manifest_ids() == ["u0", "u1", "u2", "u3"])


@case("prepare: label file in UTF-16 -> refused")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_bytes(label_text(s.rows).encode("utf-16"))
    return s.case(2, (str(s.labels), "UTF-16"))


@case("prepare: label file with a non-UTF-8 byte -> refused with its line")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_bytes(b"u0.wav 0\nu1\xe9.wav 1\n")
    return s.case(2, (f"{s.labels}:2", "not UTF-8"))


@case("prepare: label file does not exist")
def _(tmp, base):
    s = Split(tmp)
    s.labels.unlink()
    return s.case(2, (str(s.labels), "does not exist"))


@case("prepare: label file is a folder")
def _(tmp, base):
    s = Split(tmp)
    s.labels.unlink()
    s.labels.mkdir()
    return s.case(2, (str(s.labels), "is a folder"))


@case("prepare: label file empty")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("\n\n")
    return s.case(2, (str(s.labels), "empty"))


@case("prepare: label not an integer")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("u0.wav 0\nu1.wav one\n")
    return s.case(2, (f"{s.labels}:2", "not an integer"))


@case("prepare: label with two signs")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("u0.wav 0\nu1.wav --1\n")
    return s.case(2, (f"{s.labels}:2", "not an integer"))


@case("prepare: --split train without --label_file -> refused (only test may go without)")
def _(tmp, base):
    s = Split(tmp)
    return s.case(2, ("--split train", "needs --label_file"), labels=False)


@case("prepare: label 7 (unknown) in train -> refused")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("u0.wav 0\nu1.wav 7\n")
    return s.case(2, (f"{s.labels}:2", "outside 0–6"))


@case("prepare: duplicate id in the label file")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("u0.wav 0\nu1.wav 1\nu0 2\n")
    return s.case(2, (f"{s.labels}:3", "duplicate id u0"))


@case("prepare: label line with three fields")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("u0.wav 0 extra\n")
    return s.case(2, (f"{s.labels}:1", "expected '<file> <label>'"))


@case("prepare: label line without a file -> listed as missing, run goes on")
def _(tmp, base):
    s = Split(tmp)
    (s.wavs / "u3.wav").unlink()

    def check():
        report_lists(s, "train", "missing\tu3\t")
    return s.case(0, ("missing", "utterance u3"), check=check)


@case("prepare: train file without a label line -> listed as unlabelled, left out")
def _(tmp, base):
    s = Split(tmp)
    wav(s.wavs / "u9.wav")

    def check():
        assert "u9" not in s.manifest_ids()
        report_lists(s, "train", "unlabelled\tu9\t")
    return s.case(0, ("unlabelled", "utterance u9"), check=check)


@case("prepare: no id of the label file has a file -> refused")
def _(tmp, base):
    s = Split(tmp)
    s.labels.write_text("x0.wav 0\nx1.wav 1\n")
    return s.case(2, (str(s.labels), "none of its 2 ids has a file"))


@case("prepare: garbage bytes in a .wav -> left out, listed")
def _(tmp, base):
    s = Split(tmp)
    (s.wavs / "u0.wav").write_bytes(b"RIFF garbage" * 10)
    return s.case(0, ("unreadable", "utterance u0"), check=lambda: report_lists(s, "train", "unreadable\tu0\t"))


@case("prepare: zero-byte .wav in test -> flagged unreadable")
def _(tmp, base):
    s = Split(tmp)
    (s.wavs / "u2.wav").write_bytes(b"")
    return s.case(0, ("unreadable", "utterance u2"), split="test", labels=False,
                  check=lambda: report_lists(s, "test", "unreadable\tu2\t"))


@case("prepare: WAV header without samples -> listed as 'no samples'")
def _(tmp, base):
    s = Split(tmp)
    wav(s.wavs / "u1.wav", np.zeros(0, np.float32))
    return s.case(0, ("utterance u1", "no samples"), check=lambda: report_lists(s, "train", "no samples"))


@case("prepare: every file unreadable -> refused")
def _(tmp, base):
    s = Split(tmp)
    for p in s.wavs.glob("*.wav"):
        p.write_bytes(b"junk")
    return s.case(2, (str(s.wavs), "none of the 4 files"))


@case("prepare: --wav_dir does not exist")
def _(tmp, base):
    s = Split(tmp)
    shutil.rmtree(s.wavs)
    return s.case(2, (str(s.wavs), "not a folder"))


@case("prepare: --wav_dir holds no .wav files")
def _(tmp, base):
    s = Split(tmp)
    for p in s.wavs.glob("*.wav"):
        p.rename(p.with_suffix(".flac"))
    return s.case(2, (str(s.wavs), "no .wav files"))


@case("prepare: --out below a regular file -> refused")
def _(tmp, base):
    s = Split(tmp)
    (tmp / "afile").write_text("x")
    s.out = tmp / "afile" / "O"
    return s.case(2, (str(tmp / "afile"), "is a file, not a folder"))


@case("prepare: read-only output folder")
def _(tmp, base):
    s = Split(tmp)
    s.out.mkdir()
    return s.case(2, (str(s.out / "train"), "Permission denied"), fault="read_only", read_only=(s.out,))


@case("prepare: full disk while writing the audio cache")
def _(tmp, base):
    s = Split(tmp)
    return s.case(2, (str(s.out / "train" / "audio.f32"), "File too large"), fault="full_disk", limit=40_000)


@case("prepare: stale .partial folder of a killed run -> replaced")
def _(tmp, base):
    s = Split(tmp)
    (s.out / ".train.partial").mkdir(parents=True)
    (s.out / ".train.partial" / "audio.f32").write_bytes(b"half")
    return s.case(0, ("4 utterances",), check=lambda: s.manifest_ids() == ["u0", "u1", "u2", "u3"])


@case("prepare: corrupt .options.json stamp of an earlier run -> split prepared again")
def _(tmp, base):
    s = Split(tmp)
    (s.out / "train").mkdir(parents=True)
    (s.out / "train" / ".options.json").write_text('{"digest": "abc", ')
    return s.case(0, ("4 utterances",), check=lambda: s.manifest_ids() == ["u0", "u1", "u2", "u3"])


def data_root(tmp: Path, splits=("train", "dev", "test")) -> Path:
    root = tmp / "root"
    for split in splits:
        wav(root / split / "wav" / f"{split}1.wav")
        if split != "test":
            (root / split / "label.txt").write_text(f"{split}1.wav 1\n")
    return root


@case("prepare: test_label.txt without a test folder -> refused (labels without audio)")
def _(tmp, base):
    root = data_root(tmp, ("train", "dev"))
    (root / "test_label.txt").write_text("x.wav 1\n")
    return Case(["-m", "data_prep.prepare", "--data_root", str(root), "--out", str(tmp / "O")], 2,
                (str(root / "test_label.txt"), "without test audio"), outputs=(tmp / "O",), absent=(tmp / "O",))


@case("prepare: --data_root without a dev folder")
def _(tmp, base):
    root = data_root(tmp, ("train", "test"))
    return Case(["-m", "data_prep.prepare", "--data_root", str(root), "--out", str(tmp / "O")], 2,
                (str(root), "no dev folder"), absent=(tmp / "O",))


@case("prepare: neither --data_root nor --split given")
def _(tmp, base):
    return Case(["-m", "data_prep.prepare", "--out", str(tmp / "O")], 2, ("give --data_root",), absent=(tmp / "O",))


@case("prepare: unknown command-line option -> one line, usage folded in")
def _(tmp, base):
    return Case(["-m", "data_prep.prepare", "--out", str(tmp / "O"), "--sample_rate", "8000"], 2,
                ("unrecognized arguments: --sample_rate", "usage:"), absent=(tmp / "O",))


# ---------------------------------------------------------------------------------------------
# stage 3: the training config loader and the training stage's own writes

def train_argv(config: Path, data: Path, exp: Path) -> list[str]:
    return ["-m", "systems.train", "--config", str(config), "--data", str(data), "--exp", str(exp), "--device", "cpu"]


DEMO_CONFIG = ROOT / "systems" / "lfcc_resnet18" / "conf" / "demo.yaml"


@case("train: config is not valid YAML")
def _(tmp, base):
    cfg = tmp / "bad.yaml"
    cfg.write_text("system: lfcc_resnet18\ntrain: {epochs: 2\n")
    return Case(train_argv(cfg, base / "data", tmp / "E"), 2, (str(cfg), "not valid YAML"), absent=(tmp / "E",))


@case("train: config value of the wrong type (train.epochs: ten)")
def _(tmp, base):
    import yaml

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["train"]["epochs"] = "ten"
    cfg = tmp / "bad.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return Case(train_argv(cfg, base / "data", tmp / "E"), 2, (str(cfg), "epochs"), absent=(tmp / "E",))


@case("train: --data not prepared (no manifest.tsv)")
def _(tmp, base):
    (tmp / "data" / "train").mkdir(parents=True)
    return Case(train_argv(DEMO_CONFIG, tmp / "data", tmp / "E"), 2,
                (str(tmp / "data" / "train"), "not prepared; run the prepare stage"), outputs=(tmp / "E",),
                absent=(tmp / "E" / "config.yaml",))


@case("train: read-only experiment folder")
def _(tmp, base):
    exp = tmp / "E"
    exp.mkdir()
    return Case(train_argv(DEMO_CONFIG, base / "data", exp), 2, (str(exp / "ckpt"), "Permission denied"),
                outputs=(exp,), absent=(exp / "config.yaml",), fault="read_only", read_only=(exp,))


@case("train: full disk when writing the experiment's config.yaml")
def _(tmp, base):
    return Case(train_argv(DEMO_CONFIG, base / "data", tmp / "E"), 2,
                (str(tmp / "E" / "config.yaml"), "File too large"), outputs=(tmp / "E",),
                absent=(tmp / "E" / "config.yaml",), fault="full_disk", limit=200)


@case("train: --ngpu 0")
def _(tmp, base):
    return Case(train_argv(DEMO_CONFIG, base / "data", tmp / "E") + ["--ngpu", "0"], 2, ("--ngpu 0", "at least 1"),
                absent=(tmp / "E",))


@case("score: --ngpu 0")
def _(tmp, base):
    argv = ["-m", "systems.score", "--exp", str(tmp / "E"), "--data", str(base / "data"), "--device", "cpu",
            "--ngpu", "0"]
    return Case(argv, 2, ("--ngpu 0", "at least 1"), absent=(tmp / "E",))


# ---------------------------------------------------------------------------------------------
# stage 5: fusion (one synthetic system's exports, copied from the base)

def fusion_exp(tmp: Path, base: Path) -> Path:
    exp = tmp / "exp"
    shutil.copytree(base / "exp" / SYSTEM, exp / SYSTEM)
    return exp


def fusion_case(exp: Path, rc: int, says: tuple[str, ...], config: Path | None = None,
                systems: str = SYSTEM, **kw) -> Case:
    argv = ["-m", "fusion.run", "--exp", str(exp), "--systems", systems] + (["--config", str(config)] if config else [])
    return Case(argv, rc, says, outputs=(exp,), absent=() if rc == 0 else (exp / "fusion",), **kw)


def scores(exp: Path, split: str = "dev") -> Path:
    return exp / SYSTEM / "scores" / split


@case("fusion: a system that was never scored")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    return fusion_case(exp, 2, (str(exp / "sysB" / "scores" / "train"), "run the score stage"),
                       systems=f"{SYSTEM},sysB")


@case("fusion: logits.tsv truncated mid-line")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cut(scores(exp) / "logits.tsv", 0.6)
    return fusion_case(exp, 2, (str(scores(exp) / "logits.tsv"), "truncated", "re-run the score stage"))


@case("fusion: logits.tsv with a wrong header")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    path = scores(exp) / "logits.tsv"
    path.write_text(path.read_text().replace("utt_id\tlabel", "id\tlabel", 1))
    return fusion_case(exp, 2, (str(path), "unexpected header", "re-run the score stage"))


@case("fusion: logits.tsv holding an infinite score")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    path = scores(exp) / "logits.tsv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[2].split("\t")
    fields[4] = "-inf"
    lines[2] = "\t".join(fields)
    path.write_text("".join(lines))
    return fusion_case(exp, 2, (str(path), "NaN or infinite", fields[0]))


@case("fusion: logits.tsv with a non-numeric score")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    path = scores(exp, "test") / "logits.tsv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[1].split("\t")
    fields[3] = "high"
    lines[1] = "\t".join(fields)
    path.write_text("".join(lines))
    return fusion_case(exp, 2, (str(path), "line 2: column '1': 'high' is not a number", "re-run the score stage"))


@case("fusion: logits.tsv with a header and no rows")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    path = scores(exp, "train") / "logits.tsv"
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    return fusion_case(exp, 2, (str(path), "no utterances"))


@case("fusion: embeddings.npy truncated")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cut(scores(exp) / "embeddings.npy", 0.7)
    return fusion_case(exp, 2, (str(scores(exp) / "embeddings.npy"), "corrupt or truncated",
                                "re-run the score stage"))


@case("fusion: embeddings.npy is not a .npy file")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    (scores(exp, "train") / "embeddings.npy").write_text("not an array")
    return fusion_case(exp, 2, (str(scores(exp, "train") / "embeddings.npy"), "not a .npy file"))


@case("fusion: embeddings.npy with a row count other than the ids'")
def _(tmp, base):
    from core.atomic import save_npy

    exp = fusion_exp(tmp, base)
    save_npy(scores(exp) / "embeddings.npy", np.zeros((3, 8), np.float32))
    return fusion_case(exp, 2, (str(scores(exp)), "but 3 embeddings"))


@case("fusion: window_offsets.npy that do not match the windows")
def _(tmp, base):
    from core.atomic import save_npy

    exp = fusion_exp(tmp, base)
    offsets = np.load(scores(exp) / "window_offsets.npy")
    offsets[1] = offsets[2]
    save_npy(scores(exp) / "window_offsets.npy", offsets)
    return fusion_case(exp, 2, (str(scores(exp)), "window_offsets do not match"))


@case("fusion: dev scores without labels (scored from an unlabelled split)")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    path = scores(exp) / "logits.tsv"
    lines = path.read_text().splitlines(keepends=True)
    lines[1:] = ["\t".join([ln.split("\t")[0], "-1", *ln.split("\t")[2:]]) for ln in lines[1:]]
    path.write_text("".join(lines))
    return fusion_case(exp, 2, (str(path), "dev labels must all be known classes"))


@case("fusion: config is not valid YAML")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cfg = tmp / "fusion.yaml"
    cfg.write_text("threshold:\n  rule: [quantile\n")
    return fusion_case(exp, 2, (str(cfg), "not valid YAML", "line"), config=cfg)


@case("fusion: config with an unknown key")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cfg = tmp / "fusion.yaml"
    cfg.write_text("threshold:\n  quantile: 0.1\n")
    return fusion_case(exp, 2, (str(cfg), "unknown key(s) ['quantile']"), config=cfg)


@case("fusion: config value of the wrong type")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cfg = tmp / "fusion.yaml"
    cfg.write_text("threshold:\n  q: five percent\n")
    return fusion_case(exp, 2, (str(cfg), "threshold.q", "not a valid float"), config=cfg)


@case("fusion: config that is a list, not a mapping")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    cfg = tmp / "fusion.yaml"
    cfg.write_text("- threshold\n- score\n")
    return fusion_case(exp, 2, (str(cfg), "must be a YAML mapping"), config=cfg)


@case("fusion: empty --systems")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    return fusion_case(exp, 2, ("--systems", "system names"), systems=",")


@case("fusion: read-only experiment folder")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    return fusion_case(exp, 2, (str(exp / "fusion"), "Permission denied"), fault="read_only", read_only=(exp,))


@case("fusion: full disk")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    return fusion_case(exp, 2, (str(exp / "fusion"), "File too large"), fault="full_disk", limit=150)


@case("fusion: corrupt .options.json of an earlier fusion -> fused again")
def _(tmp, base):
    exp = fusion_exp(tmp, base)
    shutil.copytree(base / "exp" / "fusion", exp / "fusion")
    (exp / "fusion" / ".options.json").write_bytes(b"\x00\x01{")
    return fusion_case(exp, 0, ("submission method",),
                       check=lambda: json.loads((exp / "fusion" / "summary.json").read_text())["methods"])


# ---------------------------------------------------------------------------------------------
# stage 6: submission (the base's fusion and prepared test split, copied where corrupted)

def submit_case(tmp: Path, rc: int, says: tuple[str, ...], fusion: Path | None = None, test: Path | None = None,
                out: Path | None = None, pred: Path | None = None, **kw) -> Case:
    out = out or tmp / "submission"
    src = ["--pred", str(pred)] if pred else ["--fusion", str(fusion)]
    argv = ["-m", "submit.write", *src, "--test_manifest", str(test), "--name", "track3", "--out", str(out)]
    absent = () if rc == 0 else (out / "track3.txt", out / "track3.zip")
    return Case(argv, rc, says, outputs=(out,), absent=absent, **kw)


def fusion_copy(tmp: Path, base: Path) -> Path:
    shutil.copytree(base / "exp" / "fusion", tmp / "fusion")
    return tmp / "fusion"


def copy_test_split(tmp: Path, base: Path) -> Path:
    shutil.copytree(base / "data" / "test", tmp / "test")
    return tmp / "test"


def submitted_method_pred(fusion: Path) -> Path:
    method = json.loads((fusion / "summary.json").read_text())["submit_method"]
    return fusion / method.replace(":", "__") / "test_pred.txt"


@case("submit: truncated test WAV -> submitted as 7, named on the console")
def _(tmp, base):
    def check():
        lines = (tmp / "submission" / "track3.txt").read_text().splitlines()
        assert len(lines) == len(TEST_IDS) and f"{TRUNCATED_TEST}.wav 7" in lines
    return submit_case(tmp, 0, (TRUNCATED_TEST, "unreadable test file"), fusion=base / "exp" / "fusion",
                       test=base / "data" / "test", check=check)


@case("submit: predictions starting with a UTF-8 BOM -> read, no line lost")
def _(tmp, base):
    pred = tmp / "pred.txt"
    pred.write_bytes(b"\xef\xbb\xbf" + submitted_method_pred(base / "exp" / "fusion").read_bytes())

    def check():
        assert len((tmp / "submission" / "track3.txt").read_text().splitlines()) == len(TEST_IDS)
    return submit_case(tmp, 0, ("6 lines",), pred=pred, test=base / "data" / "test", check=check)


@case("submit: summary.json missing")
def _(tmp, base):
    fusion = fusion_copy(tmp, base)
    (fusion / "summary.json").unlink()
    return submit_case(tmp, 2, (str(fusion / "summary.json"), "missing", "fusion stage"), fusion=fusion,
                       test=base / "data" / "test")


@case("submit: summary.json truncated")
def _(tmp, base):
    fusion = fusion_copy(tmp, base)
    cut(fusion / "summary.json")
    return submit_case(tmp, 2, (str(fusion / "summary.json"), "corrupt or truncated", "re-run the fusion stage"),
                       fusion=fusion, test=base / "data" / "test")


@case("submit: summary.json without submit_method")
def _(tmp, base):
    fusion = fusion_copy(tmp, base)
    summary = json.loads((fusion / "summary.json").read_text())
    del summary["submit_method"]
    (fusion / "summary.json").write_text(json.dumps(summary))
    return submit_case(tmp, 2, (str(fusion / "summary.json"), "no 'submit_method'"), fusion=fusion,
                       test=base / "data" / "test")


@case("submit: summary.json that is not an object")
def _(tmp, base):
    fusion = fusion_copy(tmp, base)
    (fusion / "summary.json").write_text("[1, 2]\n")
    return submit_case(tmp, 2, (str(fusion / "summary.json"), "not a JSON object"), fusion=fusion,
                       test=base / "data" / "test")


@case("submit: a test file without a prediction")
def _(tmp, base):
    pred = tmp / "pred.txt"
    lines = submitted_method_pred(base / "exp" / "fusion").read_text().splitlines(keepends=True)
    pred.write_text("".join(lines[1:]))
    return submit_case(tmp, 2, (str(pred), "no prediction", lines[0].split(".wav")[0]), pred=pred,
                       test=base / "data" / "test")


@case("submit: a prediction outside 0-7")
def _(tmp, base):
    pred = tmp / "pred.txt"
    pred.write_text(submitted_method_pred(base / "exp" / "fusion").read_text().replace(" ", " 1", 1))
    return submit_case(tmp, 2, (f"{pred}:1", "outside 0–7"), pred=pred, test=base / "data" / "test")


@case("submit: test manifest.tsv truncated")
def _(tmp, base):
    test = copy_test_split(tmp, base)
    cut(test / "manifest.tsv", 0.8)
    return submit_case(tmp, 2, (str(test / "manifest.tsv"), "truncated", "re-run the prepare stage"),
                       fusion=base / "exp" / "fusion", test=test)


@case("submit: test manifest.tsv with a wrong header")
def _(tmp, base):
    test = copy_test_split(tmp, base)
    path = test / "manifest.tsv"
    path.write_text(path.read_text().replace("status", "state", 1))
    return submit_case(tmp, 2, (str(path), "unexpected header", "re-run the prepare stage"),
                       fusion=base / "exp" / "fusion", test=test)


@case("submit: test offsets.npy corrupt")
def _(tmp, base):
    test = copy_test_split(tmp, base)
    cut(test / "offsets.npy", 0.9)
    return submit_case(tmp, 2, (str(test / "offsets.npy"), "corrupt or truncated", "re-run the prepare stage"),
                       fusion=base / "exp" / "fusion", test=test)


@case("submit: test offsets.npy missing")
def _(tmp, base):
    test = copy_test_split(tmp, base)
    (test / "offsets.npy").unlink()
    return submit_case(tmp, 2, (str(test / "offsets.npy"), "missing", "re-run the prepare stage"),
                       fusion=base / "exp" / "fusion", test=test)


@case("submit: test audio cache shorter than its offsets")
def _(tmp, base):
    test = copy_test_split(tmp, base)
    cut(test / "audio.f32", 0.5)
    return submit_case(tmp, 2, (str(test / "audio.f32"), "does not match offsets.npy", "re-run the prepare stage"),
                       fusion=base / "exp" / "fusion", test=test)


@case("submit: --test_manifest is not a prepared split")
def _(tmp, base):
    return submit_case(tmp, 2, (str(tmp / "nothing"), "not a prepared split"), fusion=base / "exp" / "fusion",
                       test=tmp / "nothing")


@case("submit: --out below a regular file")
def _(tmp, base):
    (tmp / "afile").write_text("x")
    out = tmp / "afile" / "submission"
    return submit_case(tmp, 2, (str(out), "is a file, not a folder"), fusion=base / "exp" / "fusion",
                       test=base / "data" / "test", out=out)


@case("submit: read-only submission folder")
def _(tmp, base):
    out = tmp / "submission"
    out.mkdir()
    # the zip's temporary file is made first (it is renamed last), so the error names it
    return submit_case(tmp, 2, (str(out / "track3.zip"), "Permission denied"), fusion=base / "exp" / "fusion",
                       test=base / "data" / "test", fault="read_only", read_only=(out,))


@case("submit: full disk -> neither .txt nor .zip")
def _(tmp, base):
    return submit_case(tmp, 2, (str(tmp / "submission" / "track3.txt"), "File too large"),
                       fusion=base / "exp" / "fusion", test=base / "data" / "test", fault="full_disk", limit=100)


@case("submit: disk full at the .zip after the .txt fitted -> neither is left")
def _(tmp, base):
    import io
    import zipfile

    # a long name is stored twice in the zip, not in the .txt: a limit between the two sizes lets
    # the .txt through and stops the .zip
    name = "track3_" + "x" * 60
    text = "".join(f"{u}.wav 3\n" for u in TEST_IDS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.txt", text)
    assert len(buf.getvalue()) > len(text) + 60
    c = submit_case(tmp, 2, (str(tmp / "submission" / f"{name}.zip"), "File too large"),
                    fusion=base / "exp" / "fusion", test=base / "data" / "test", fault="full_disk",
                    limit=len(text) + 30)
    c.argv[c.argv.index("track3")] = name
    c.absent = (tmp / "submission" / f"{name}.txt", tmp / "submission" / f"{name}.zip")
    return c


# ---------------------------------------------------------------------------------------------
# eval/score.py

def score_case(pred: Path | None, key: Path | None, rc: int, says: tuple[str, ...]) -> Case:
    argv = [str(ROOT / "eval" / "score.py")] + [str(p) for p in (pred, key) if p is not None]
    return Case(argv, rc, says)


def pairs(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


PRED = "a.wav 1\nb.wav 2\nc.wav 7\n"
KEY = "a.wav 1\nb.wav 3\nc.wav 7\n"


@case("score.py: no answer key argument")
def _(tmp, base):
    return score_case(pairs(tmp, "pred.txt", PRED), None, 2, ("required: labels", "usage:"))


@case("score.py: answer key does not exist")
def _(tmp, base):
    return score_case(pairs(tmp, "pred.txt", PRED), tmp / "key.txt", 2, (str(tmp / "key.txt"), "does not exist"))


@case("score.py: answer key holding only class 7")
def _(tmp, base):
    key = pairs(tmp, "key.txt", "a.wav 7\nb.wav 7\nc.wav 7\n")
    return score_case(pairs(tmp, "pred.txt", PRED), key, 2, (str(key), "only class 7"))


@case("score.py: predictions with a UTF-8 BOM -> scored, first line kept")
def _(tmp, base):
    pred = pairs(tmp, "pred.txt", b"\xef\xbb\xbf" + PRED.encode())
    return score_case(pred, pairs(tmp, "key.txt", KEY), 0, ("3 utterances",))


@case("score.py: answer key with a UTF-8 BOM -> scored, first line kept")
def _(tmp, base):
    key = pairs(tmp, "key.txt", b"\xef\xbb\xbf" + KEY.encode())
    return score_case(pairs(tmp, "pred.txt", PRED), key, 0, ("3 utterances",))


@case("score.py: a prediction for an id not in the key")
def _(tmp, base):
    pred = pairs(tmp, "pred.txt", PRED + "d.wav 0\n")
    return score_case(pred, pairs(tmp, "key.txt", KEY), 2, (f"{pred}:4", "id d is not in the answer key"))


@case("score.py: a key id without a prediction")
def _(tmp, base):
    key = pairs(tmp, "key.txt", KEY + "d.wav 0\n")
    return score_case(pairs(tmp, "pred.txt", PRED), key, 2, (f"{key}:4", "no prediction"))


@case("score.py: predictions file is a folder")
def _(tmp, base):
    (tmp / "preds").mkdir()
    return score_case(tmp / "preds", pairs(tmp, "key.txt", KEY), 2, (str(tmp / "preds"), "is a folder"))


# ---------------------------------------------------------------------------------------------
# stage 7: report (the base's experiment, copied and damaged)

def report_exp(tmp: Path, base: Path) -> Path:
    exp = tmp / "exp"
    shutil.copytree(base / "exp" / "fusion", exp / "fusion")
    return exp


def report_case(exp: Path, base: Path, rc: int, says: tuple[str, ...], key: Path | None = None, **kw) -> Case:
    argv = ["-m", "eval.report", "--exp", str(exp), "--test_manifest", str(base / "data" / "test")]
    argv += ["--key", str(key)] if key else []
    return Case(argv, rc, says, outputs=(exp,), absent=() if rc == 0 else (exp / "report" / "README.md",), **kw)


def a_method(exp: Path) -> Path:
    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    return exp / "fusion" / summary["submit_method"].replace(":", "__")


@case("report: summary.json truncated")
def _(tmp, base):
    exp = report_exp(tmp, base)
    cut(exp / "fusion" / "summary.json")
    return report_case(exp, base, 2, (str(exp / "fusion" / "summary.json"), "corrupt or truncated",
                                      "re-run the fusion stage"))


@case("report: summary.json method without tau")
def _(tmp, base):
    exp = report_exp(tmp, base)
    path = exp / "fusion" / "summary.json"
    summary = json.loads(path.read_text())
    name = summary["submit_method"]
    del summary["methods"][name]["tau"]
    path.write_text(json.dumps(summary))
    return report_case(exp, base, 2, (str(path), f"method {name!r} has no valid 'tau'"))


@case("report: dev predictions missing an utterance")
def _(tmp, base):
    exp = report_exp(tmp, base)
    path = a_method(exp) / "dev_pred.txt"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))
    return report_case(exp, base, 2, (str(path), "no prediction for 1 id", lines[0].split(".wav")[0]))


@case("report: dev_key.txt missing")
def _(tmp, base):
    exp = report_exp(tmp, base)
    (exp / "fusion" / "dev_key.txt").unlink()
    return report_case(exp, base, 2, (str(exp / "fusion" / "dev_key.txt"), "dev answer key is missing",
                                      "re-run the fusion stage"))


@case("report: test key missing a test utterance -> names the key, not the fusion")
def _(tmp, base):
    exp = report_exp(tmp, base)
    key = pairs(tmp, "key.txt", label_text({u: (i % 7) for i, u in enumerate(TEST_IDS[1:])}))
    return report_case(exp, base, 2, (str(key), "no label for 1 utterance(s) of the test set", TEST_IDS[0]), key=key)


@case("report: test key with an id outside the test set -> names the key")
def _(tmp, base):
    exp = report_exp(tmp, base)
    labels = {u: (i % 7) for i, u in enumerate(TEST_IDS)} | {"ADD2023_T3_E_99999999": 3}
    key = pairs(tmp, "key.txt", label_text(labels))
    return report_case(exp, base, 2, (str(key), "1 id(s) not in the test set", "ADD2023_T3_E_99999999"), key=key)


@case("report: test key holding only class 7")
def _(tmp, base):
    exp = report_exp(tmp, base)
    key = pairs(tmp, "key.txt", label_text({u: 7 for u in TEST_IDS}))
    return report_case(exp, base, 2, (str(key), "only class 7"), key=key)


@case("report: curve.tsv corrupt")
def _(tmp, base):
    exp = report_exp(tmp, base)
    (a_method(exp) / "curve.tsv").write_text("tau\tdev_f1\n0.5\tgood\n")
    return report_case(exp, base, 2, (str(a_method(exp) / "curve.tsv"), "corrupt", "re-run the fusion stage"))


@case("report: test_scores.npy truncated")
def _(tmp, base):
    exp = report_exp(tmp, base)
    cut(a_method(exp) / "test_scores.npy", 0.8)
    return report_case(exp, base, 2, (str(a_method(exp) / "test_scores.npy"), "corrupt or truncated"),
                       key=base / "test_key.txt")


@case("report: test_ids.txt missing")
def _(tmp, base):
    exp = report_exp(tmp, base)
    (exp / "fusion" / "test_ids.txt").unlink()
    return report_case(exp, base, 2, (str(exp / "fusion" / "test_ids.txt"), "missing", "re-run the fusion stage"),
                       key=base / "test_key.txt")


@case("report: a member system's config.yaml corrupt")
def _(tmp, base):
    exp = report_exp(tmp, base)
    (exp / SYSTEM).mkdir()
    (exp / SYSTEM / "config.yaml").write_text("model: {ssl_ckpt: \n")
    return report_case(exp, base, 2, (str(exp / SYSTEM / "config.yaml"), "not a valid system config"))


@case("report: report folder is a regular file")
def _(tmp, base):
    exp = report_exp(tmp, base)
    (exp / "report").write_text("x")
    return Case(report_case(exp, base, 2, ()).argv, 2, (str(exp / "report"), "is a file, not a folder"),
                outputs=(exp,))


@case("report: answer key with a UTF-8 BOM -> report written with test columns")
def _(tmp, base):
    exp = report_exp(tmp, base)
    key = pairs(tmp, "key.txt", b"\xef\xbb\xbf" + (base / "test_key.txt").read_bytes())

    def check():
        rows = json.loads((exp / "report" / "results.json").read_text())
        assert all("test_f1" in r for r in rows)
    return report_case(exp, base, 0, ("best on test",), key=key, check=check)


# ---------------------------------------------------------------------------------------------

def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stderr is not one line:\n{proc.stderr}"
    return lines[0]


def run_case(c: Case) -> subprocess.CompletedProcess:
    for folder in c.read_only:
        folder.chmod(0o555)
    try:
        return run(c.argv, c.fault, c.limit)
    finally:
        for folder in c.read_only:
            folder.chmod(0o755)


@pytest.fixture(scope="module")
def outcomes(request, base, tmp_path_factory) -> dict[str, tuple[Case, subprocess.CompletedProcess]]:
    """Every selected case built and run, several at a time: each is a process start and a few
    file operations, so running them side by side keeps the matrix fast."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")]
    cases = {}
    for name in selected:
        c = CASES[name](tmp_path_factory.mktemp("case"), base)
        if c.fault == "read_only" and os.geteuid() == 0 and SETPRIV is None:
            continue  # skipped in the test: a read-only folder cannot be simulated for root without setpriv
        cases[name] = c
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        procs = dict(zip(cases, pool.map(run_case, cases.values())))
    return {name: (cases[name], procs[name]) for name in cases}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=XFAIL[n], strict=True))
                                  if n in XFAIL else n for n in CASES])
def test_bad_input(name, outcomes):
    if name not in outcomes:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
    c, proc = outcomes[name]
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both[-3000:]
    assert proc.returncode == c.rc, both[-3000:]
    if c.rc == 2:
        line = error_line(proc)
        assert line.startswith("error: "), line
        for part in c.says:
            assert part in line, f"{part!r} not in {line!r}"
        print(f"CASE\t{name}\t{proc.returncode}\t{line}")
    else:
        assert proc.stderr.strip() == "", proc.stderr
        for part in c.says:
            assert part in proc.stdout, f"{part!r} not in stdout:\n{proc.stdout}"
        said = [ln for ln in proc.stdout.splitlines() if any(p in ln for p in c.says)]
        print(f"CASE\t{name}\t{proc.returncode}\t{said[0] if said else ''}")
        if c.check is not None:
            assert c.check() is not False
    for folder in c.outputs:
        assert leftovers(folder) == [], leftovers(folder)
    for path in c.absent:
        assert not path.exists(), f"{path} left behind"


def test_matrix_is_large_enough():
    assert len(CASES) >= 50
