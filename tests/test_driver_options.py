"""run_track3.sh's own checks of its command line: one `error:` line, exit 2, nothing written."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def driver(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", *args], cwd=cwd,
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("error:") and "\n" not in err, (proc.returncode, proc.stderr)
    return err


@pytest.mark.parametrize("option", ["--stage", "--stop_stage", "--exp", "--test_dir", "--seeds"])
def test_an_option_without_its_value(option):
    assert f"{option} needs a value" in one_error_line(driver(option))


def test_a_stage_range_that_runs_nothing():
    assert "--stage 5 is after --stop_stage 2" in one_error_line(driver("--stage", "5", "--stop_stage", "2"))


def trained_looking_exp(tmp_path):
    """What the new-test-set path checks before it writes: a fusion summary and prepared data."""
    exp = tmp_path / "exp"
    (exp / "fusion").mkdir(parents=True)
    (exp / "fusion" / "summary.json").write_text('{"systems": ["lfcc_resnet18"]}')
    (exp / "data" / "train").mkdir(parents=True)
    (exp / "data" / "test").mkdir()
    (exp / "data" / "test" / "manifest.tsv").write_text("the experiment's own test split\n")
    new = tmp_path / "new"
    new.mkdir()
    return exp, new


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", ["..", ".", "../lfcc_resnet18", "a/b"])
def test_a_test_name_that_leads_out_of_testsets_is_refused_before_anything_is_written(tmp_path, name):
    exp, new = trained_looking_exp(tmp_path)
    before = tree(tmp_path)
    err = one_error_line(driver("--exp", str(exp), "--test_dir", str(new), "--test_name", name))
    assert "--test_name" in err and "one folder name" in err
    assert tree(tmp_path) == before
    assert (exp / "data" / "test" / "manifest.tsv").read_text() == "the experiment's own test split\n"


def test_a_missing_answer_key_is_refused_before_hours_of_scoring(tmp_path):
    exp, new = trained_looking_exp(tmp_path)
    err = one_error_line(driver("--exp", str(exp), "--test_dir", str(new), "--test_labels", str(tmp_path / "no.txt")))
    assert f"--test_labels {tmp_path / 'no.txt'}: no such file" in err
    assert not (exp / "testsets").exists()


@pytest.mark.parametrize("key_text, says", [
    ("a.wav 0\nb.wav x\n", ":2: label 'x' is not an integer"),
    ("a.wav 0\n", "no label for 1 .wav file(s)"),
    ("a.wav 0\nb.wav 7\nc.wav 1\n", "1 id(s) not in the test folder"),
])
def test_a_malformed_answer_key_is_refused_before_hours_of_scoring(tmp_path, key_text, says):
    exp, new = trained_looking_exp(tmp_path)
    for name in ("a.wav", "b.wav"):
        (new / name).write_bytes(b"")  # only the names are compared before stage 2
    key = tmp_path / "key.txt"
    key.write_text(key_text)
    err = one_error_line(driver("--exp", str(exp), "--test_dir", str(new), "--test_labels", str(key)))
    assert str(key) in err and says in err
    assert not (exp / "testsets").exists()


def test_an_experiment_without_its_data_says_how_to_link_it(tmp_path):
    """A seed folder of a run made before seed folders linked EXP/data."""
    exp, new = trained_looking_exp(tmp_path)
    for p in sorted((exp / "data").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (exp / "data").rmdir()
    err = one_error_line(driver("--exp", str(exp), "--test_dir", str(new)))
    assert f"{exp}/data: missing" in err and "ln -s ../data" in err


@pytest.mark.parametrize("new_test_set", [False, True])
def test_a_plain_run_on_an_experiment_of_seeds_is_sent_to_its_seeds(tmp_path, new_test_set):
    """Without --seeds, on a folder that holds only `--seeds 1,3` runs: one line naming the seeds,
    before anything is written (a plain run there trained seed-0 systems beside the seeds' and
    overwrote the summary over them)."""
    exp = tmp_path / "exp"
    for seed in (3, 1):
        (exp / f"seed_{seed}" / "fusion").mkdir(parents=True)
        (exp / f"seed_{seed}" / "fusion" / "summary.json").write_text("{}")
    (exp / "data" / "train").mkdir(parents=True)
    (exp / "report").mkdir()
    (exp / "report" / "README.md").write_text("# Results over 2 training seeds\n")
    new = tmp_path / "new"
    new.mkdir()
    before = tree(tmp_path)
    extra = ["--test_dir", str(new)] if new_test_set else ["--stage", "5", "--stop_stage", "7"]
    err = one_error_line(driver("--exp", str(exp), *extra))
    assert "holds the runs of --seeds 1,3: add --seeds 1,3" in err
    assert tree(tmp_path) == before
