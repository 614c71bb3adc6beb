"""Using a trained kit: `predict` on files and folders, a new test set without retraining."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from core.label_files import label_lines, read_label_file

from .conftest import ROOT, TINY_RECIPE, tree_digest


def run_new_test_set(work, *args: str) -> str:
    """The README's command for a new test set: only --exp and the new data."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--exp", str(work / "exp"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def predict(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "submit.predict", *args], cwd=ROOT, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows_of(tsv: str) -> list[dict]:
    lines = tsv.rstrip("\n").split("\n")
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_predict_folder_and_file_equal_the_submission(tiny_recipe, tiny_corpus, tmp_path):
    work, _ = tiny_recipe
    submitted = read_label_file(work / "submission" / "track3.txt")
    wavs = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[:4]
    folder = tmp_path / "some"
    folder.mkdir()
    for w in wavs:
        shutil.copy(w, folder / w.name)
    rows = rows_of(predict("--exp", str(work / "exp"), str(folder)).stdout)
    submit_method = json.loads((work / "exp" / "fusion" / "summary.json").read_text())["submit_method"]
    assert [r["utt_id"] for r in rows] == [w.stem for w in wavs]
    assert {r["utt_id"]: int(r["label"]) for r in rows} == {w.stem: submitted[w.stem] for w in wavs}
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in range(7)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert float(r["unknown_score"]) == pytest.approx(1 - max(probs), abs=1e-5)
        assert r["method"] == submit_method and r["error"] == ""
    one = rows_of(predict("--exp", str(work / "exp"), str(wavs[0])).stdout)
    assert len(one) == 1 and int(one[0]["label"]) == submitted[wavs[0].stem]


def test_predict_on_two_processes_equals_one(tiny_recipe, tiny_corpus, tmp_path):
    """`predict --ngpu 2 --nj 2` (torchrun, gloo on CPU; 2 reading processes) scores each system
    through `systems.score --ngpu 2` and fuses once: the same rows as one process, the TSV alone on
    stdout (the scoring processes speak on stderr). Scores within 1e-4: the score files hold 6
    significant digits and each share is batched differently; every label equal."""
    work, _ = tiny_recipe
    wavs = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[:6]
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{w}\n" for w in wavs[:3]) + f"{tmp_path / 'missing.wav'}\n"
                       + "".join(f"{w}\n" for w in wavs[3:]))
    methods = json.loads((work / "exp" / "fusion" / "summary.json").read_text())["methods"]
    chosen = [m for m in ("feature", "softmax:rawnet2") if m in methods]
    assert chosen, sorted(methods)  # window embeddings (feature) and one system's logits
    for method in chosen:
        # the files read in this process against 2 reading processes as well
        one = predict("--exp", str(work / "exp"), str(listing), "--method", method, "--nj", "1", check=False)
        two = predict("--exp", str(work / "exp"), str(listing), "--method", method, "--ngpu", "2",
                      "--device", "cpu", "--nj", "2", check=False)
        assert one.returncode == two.returncode == 1, two.stderr[-3000:]
        assert "2 processes)" in two.stderr and "[score]" not in two.stdout
        a, b = rows_of(one.stdout), rows_of(two.stdout)
        assert [r["utt_id"] for r in b] == [r["utt_id"] for r in a] and len(a) == 7
        for ra, rb in zip(a, b):
            assert (ra["label"], ra["error"]) == (rb["label"], rb["error"])
            for column in [f"p_{c}" for c in range(7)] + ["unknown_score"]:
                if ra["error"]:
                    assert ra[column] == rb[column] == ""
                else:
                    assert float(rb[column]) == pytest.approx(float(ra[column]), abs=1e-4)


def test_predict_bad_files_give_error_rows(tiny_recipe, tiny_corpus, tmp_path):
    work, _ = tiny_recipe
    good = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[0]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{good}\n{tmp_path / 'empty.wav'}\n{tmp_path / 'missing.wav'}\n{tmp_path / 'corrupt.wav'}\n")
    proc = predict("--exp", str(work / "exp"), str(listing), "--method", "softmax:rawnet2", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = rows_of(proc.stdout)
    assert [r["utt_id"] for r in rows] == [good.stem, "empty", "missing", "corrupt"]
    assert rows[0]["error"] == "" and all(r["error"] for r in rows[1:])
    assert all(r["label"] == "7" for r in rows[1:])
    assert "no such file" in rows[2]["error"] and "empty file" in rows[1]["error"]


def test_predict_flags_files_with_little_or_no_signal(tiny_recipe, tiny_corpus, tmp_path):
    """Silent and near-empty files are labelled and scored like any other (a new test set's
    submission needs them), but their rows say the label carries no evidence; not an error."""
    from .test_prepare import weak_files

    work, _ = tiny_recipe
    good = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[0]
    expected = weak_files(tmp_path / "weak")
    proc = predict("--exp", str(work / "exp"), str(good), str(tmp_path / "weak"), "--method", "softmax:rawnet2")
    rows = {r["utt_id"]: r for r in rows_of(proc.stdout)}
    assert rows[good.stem]["warning"] == ""
    for name, flagged in expected.items():
        row = rows[name]
        assert (row["warning"] != "") == flagged, name
        assert row["error"] == "" and row["unknown_score"] != "" and row["label"] in set("01234567")
        assert (f"weak/{name}.wav: labelled {row['label']}, but " in proc.stderr) == flagged, name
    assert f"{sum(expected.values())} with little or no signal" in proc.stderr


def test_predict_inputs_named_twice_are_scored_once_and_bad_lists_are_one_line_errors(tmp_path):
    from submit.predict import list_inputs

    folder = tmp_path / "sub"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        (folder / name).write_bytes(b"")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{folder / 'b.wav'}\nsub/a.wav\n")
    files = list_inputs([str(folder / "a.wav"), str(folder), str(listing), str(folder / "a.wav")])
    assert files == [folder / "a.wav", folder / "b.wav"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9.wav\n".encode("latin-1"))
    for args, message in [([str(latin)], f"{latin}:1: list file is not UTF-8 text"),
                          ([str(tmp_path / "a\tb.wav")], "a path with a tab or line break")]:
        proc = predict("--exp", str(tmp_path), *args, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and message in err, err
    for option, message in [(("--batch_size", "0"), "--batch_size 0: must be 1 or more"),
                            (("--device", "bogus"), "--device 'bogus': not a device name"),
                            (("--method", ""), "--method: empty"),
                            (("--ngpu", "0"), "--ngpu 0: at least 1"),
                            (("--nj", "0"), "--nj 0: at least 1"),
                            (("--ngpu", "2", "--backend", "onnx"), "several processes need the torch backend"),
                            (("--out", str(tmp_path)), "is a folder; give a file name"),
                            (("--out", str(tmp_path / "no" / "x.tsv")), "its folder does not exist"),
                            (("--out", str(folder / "b.wav")), "is one of the input files"),
                            # a folder no one writes files in, root included
                            (("--out", "/proc/x.tsv"), "--out /proc/x.tsv: cannot write in its folder")]:
        proc = predict("--exp", str(tmp_path), str(folder), *option, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and message in err, err
    assert (folder / "b.wav").read_bytes() == b""  # the input named as --out is left alone


def test_predict_list_files_skip_comments_and_read_kaldi_scp(tmp_path, capsys):
    """A list file's relative paths are read from its folder; blank and `#` lines name nothing;
    a `.scp` line is Kaldi's `<id> <path>`, and a command entry is refused in one line."""
    from core.errors import KitError
    from submit.predict import list_inputs

    (tmp_path / "lists").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "lists" / "files.txt"
    listing.write_text("# made by find\n\n../a.wav\n")
    scp = tmp_path / "lists" / "wav.scp"
    scp.write_text(f"utt_b {tmp_path / 'b.wav'}\n../a.wav\n")
    assert list_inputs([str(listing), str(scp)]) == [tmp_path / "lists" / "../a.wav", tmp_path / "b.wav"]
    assert "named more than once (e.g. " in capsys.readouterr().err
    scp.write_text("utt_c sox c.flac -t wav - |\n")
    with pytest.raises(KitError, match=r"wav.scp: line 1: a command"):
        list_inputs([str(scp)])


def test_predict_names_what_a_folder_holds_but_it_does_not_read_and_expands_listed_folders(tmp_path, capsys):
    from submit.predict import list_inputs

    mixed, other, empty = tmp_path / "mixed", tmp_path / "other", tmp_path / "empty"
    for folder, names in ((mixed, ("a.wav", "b.m4a", "c.aac", "d.opus")), (other, ("a.wav", "e.flac")),
                          (empty, ("x.amr", "readme.md"))):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"")
    listing = tmp_path / "files.txt"
    listing.write_text("other\n")
    files = list_inputs([str(mixed), str(listing), str(empty)])
    assert files == [mixed / "a.wav", mixed / "d.opus", other / "a.wav", other / "e.flac"]
    err = capsys.readouterr().err
    assert f"{mixed}: 2 audio file(s) not read" in err and str(mixed / "b.m4a") in err
    assert f"{empty}: 1 audio file(s) not read" in err and f"{empty}: no audio file it reads" in err
    assert f"{other}:" not in err


def test_predict_marks_files_that_share_an_id(capsys):
    from submit.predict import mark_shared_ids

    rows = [{"utt_id": "a", "path": "x/a.wav", "warning": ""}, {"utt_id": "b", "path": "x/b.wav", "warning": ""},
            {"utt_id": "a", "path": "y/a.flac", "warning": "little signal"}]
    mark_shared_ids(rows)
    assert rows[0]["warning"] == "id a shared with 1 other file(s)"
    assert rows[1]["warning"] == ""
    assert rows[2]["warning"] == "little signal; id a shared with 1 other file(s)"
    assert "2 files share the id a (x/a.wav, y/a.flac)" in capsys.readouterr().err


def test_predict_tells_a_seeds_folder_or_a_non_experiment_which_folder_to_give(tmp_path):
    seeds, plain = tmp_path / "exp", tmp_path / "plain"
    for n in (2, 1):
        (seeds / f"seed_{n}" / "fusion").mkdir(parents=True)
        (seeds / f"seed_{n}" / "fusion" / "summary.json").write_text("{}")
    plain.mkdir()
    (tmp_path / "a.wav").write_bytes(b"")
    for exp, message in [(seeds, f"--exp {seeds}: holds the runs of --seeds 1,2, not one experiment; give "
                                 f"{seeds / 'ensemble'}"),
                         (plain, f"--exp {plain}: not a trained experiment")]:
        proc = predict("--exp", str(exp), str(tmp_path / "a.wav"), check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in err and message in err, err


def test_predict_refuses_an_experiment_without_its_prepared_data(tiny_recipe, tiny_corpus, tmp_path):
    """New files are read with the test stage's stored options or not at all: an --exp without
    data/test (a seed folder of an older run, a copied systems folder) is a one-line error."""
    work, _ = tiny_recipe
    exp = tmp_path / "exp"
    exp.mkdir()
    for part in ("fusion", *(p.name for p in (work / "exp").iterdir() if (p / "ckpt").is_dir())):
        (exp / part).symlink_to(work / "exp" / part)
    good = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[0]
    proc = predict("--exp", str(exp), str(good), check=False)
    err = proc.stderr.strip()
    stamp = exp / "data" / "test" / ".options.json"
    assert proc.returncode == 2 and "\n" not in err and f"{stamp}: missing" in err, err


def test_new_test_set_without_retraining(tiny_recipe, tiny_corpus, tmp_path):
    work, _ = tiny_recipe
    # the test audio under other names: utterances the experiment has never scored, and a key for
    # them, without building a second corpus
    new_wavs = tmp_path / "seed11" / "wav"
    new_wavs.mkdir(parents=True)
    old_key = read_label_file(tiny_corpus / "keys" / "test_label.txt")
    for utt in old_key:
        shutil.copy(tiny_corpus / "ADD2023_Track3_test" / "wav" / f"{utt}.wav", new_wavs / f"new_{utt}.wav")
    key = tmp_path / "seed11" / "test_label.txt"
    key.write_text(label_lines({f"new_{utt}": label for utt, label in old_key.items()}))
    before = tree_digest(work / "exp", skip="testsets")
    # a system the experiment did not train: refused before anything is prepared
    proc = subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--exp", str(work / "exp"), "--test_dir",
                           str(new_wavs), "--test_name", "nosuch", "--systems", "rawnet2,nosuch"],
                          cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nosuch/config.yaml: missing" in proc.stderr
    trained = proc.stderr.split("systems trained there:")[1].strip().split(",")
    assert trained == sorted(TINY_RECIPE)  # the trained systems, not every folder with a config.yaml
    assert not (work / "exp" / "testsets" / "nosuch").exists() and not (work / "exp" / "testsets" / "data").exists()
    out = run_new_test_set(work, "--test_dir", str(new_wavs), "--test_labels", str(key), "--test_name", "seed11")
    assert "nothing to do" in out and "epoch 1:" not in out  # the train stage skipped
    testset = work / "exp" / "testsets" / "seed11"
    submission = read_label_file(testset / "submission" / "track3.txt")
    assert set(submission) == {w.stem for w in new_wavs.iterdir()}
    assert (testset / "report" / "README.md").is_file() and "open-set macro" in out
    assert tree_digest(work / "exp", skip="testsets") == before  # the trained experiment is untouched
    report_mtime = (testset / "report" / "README.md").stat().st_mtime_ns
    again = run_new_test_set(work, "--test_dir", str(new_wavs), "--test_labels", str(key), "--test_name", "seed11")
    assert again.count("up to date, skipped") >= 4 and "epoch 1:" not in again
    # the evaluate stage's stamp: nothing it reads changed, so the report is not drawn again
    assert f"[evaluate] {testset / 'report'}: up to date, skipped" in again
    assert report_mtime == (testset / "report" / "README.md").stat().st_mtime_ns
    # without --test_name, a folder called wav is named by the one above it: the same test set
    assert f"[evaluate] {testset / 'report'}: up to date, skipped" in run_new_test_set(
        work, "--test_dir", str(new_wavs), "--test_labels", str(key))
    # another folder under a name in use is refused, before anything is prepared over that test set
    other = tmp_path / "other" / "wav"
    shutil.copytree(new_wavs, other)
    proc = subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--exp", str(work / "exp"), "--test_dir",
                           str(other), "--test_name", "seed11"],
                          cwd=ROOT, env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"holds the test set of {new_wavs.resolve()}, not {other.resolve()}" in proc.stderr
    assert report_mtime == (testset / "report" / "README.md").stat().st_mtime_ns


def test_predict_refuses_members_changed_since_the_fusion(tiny_recipe, tiny_corpus, tmp_path):
    """Scores written again after the fusion (a system trained and scored again, not re-fused) no
    longer fit its τ and statistics: a one-line error, as the submission stage gives."""
    work, _ = tiny_recipe
    exp = tmp_path / "exp"
    shutil.copytree(work / "exp", exp, symlinks=True)
    good = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[0]
    assert predict("--exp", str(exp), str(good)).returncode == 0
    logits = exp / "rawnet2" / "scores" / "dev" / "logits.tsv"
    os.utime(logits, ns=(logits.stat().st_atime_ns, logits.stat().st_mtime_ns + 10**9))
    proc = predict("--exp", str(exp), str(good), check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err and f"{logits}: changed since" in err and "before predicting" in err
