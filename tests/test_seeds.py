"""`--seeds`: one whole run per training seed, then every method as mean ± std over the seeds."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import softmax

from core.errors import KitError
from core.label_files import label_lines, read_label_file
from eval.seeds import write_summary
from fusion.members import load_members
from fusion.seed_ensemble import lay_out

from .conftest import ROOT, TINY_RECIPE, run_recipe, tree_digest


def write_results(exp, seed, rows):
    folder = exp / f"seed_{seed}" / "report"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(rows))


def test_mean_and_sample_std_per_method(tmp_path):
    f1 = {1: 0.61, 2: 0.70, 3: 0.64}
    for seed, v in f1.items():
        write_results(tmp_path, seed, [
            {"method": "feature", "submitted": True, "dev_f1": 0.9, "test_f1": v, "tau": 0.2},
            {"method": "score", "submitted": False, "dev_f1": 0.8, "test_f1": v / 2, "tau": None},
            *([{"method": "only_in_seed_1", "submitted": False, "dev_f1": 0.5}] if seed == 1 else []),
        ])
    rows = {r["method"]: r for r in write_summary(tmp_path, [1, 2, 3])}
    assert set(rows) == {"submitted", "feature", "score"}  # a method missing from a seed is left out
    assert rows["submitted"]["test_f1"] == rows["feature"]["test_f1"]
    assert rows["feature"]["test_f1"]["mean"] == pytest.approx(statistics.mean(f1.values()))
    assert rows["feature"]["test_f1"]["std"] == pytest.approx(statistics.stdev(f1.values()))
    assert rows["score"]["test_f1"]["std"] == pytest.approx(statistics.stdev(v / 2 for v in f1.values()))
    assert "tau" not in rows["score"]  # not a number in every seed: not averaged
    text = (tmp_path / "report" / "README.md").read_text()
    assert f"{statistics.mean(f1.values()):.4f} ± {statistics.stdev(f1.values()):.4f}" in text
    assert (tmp_path / "report" / "per_seed.png").stat().st_size > 1000


def test_the_submitted_row_follows_each_seeds_choice_and_conditions_are_averaged(tmp_path):
    """With `submit_method: auto` each seed may submit another method: the `submitted` row takes each
    seed's submitted figures; the per-condition tables of the seeds are averaged beside it."""
    chosen = {1: "score", 2: "two_stage", 3: "score"}
    f1 = {1: {"score": 0.80, "two_stage": 0.78}, 2: {"score": 0.82, "two_stage": 0.85},
          3: {"score": 0.79, "two_stage": 0.70}}
    closed = {1: 0.90, 2: 0.93, 3: 0.91}
    for seed in chosen:
        write_results(tmp_path, seed, [{"method": m, "submitted": m == chosen[seed], "test_f1": f1[seed][m]}
                                       for m in ("score", "two_stage")])
        (tmp_path / f"seed_{seed}" / "report" / "conditions.json").write_text(json.dumps([
            {"condition": "all", "n": 10, "closed_set_accuracy": closed[seed], "open_set_f1": f1[seed][chosen[seed]]},
            {"condition": "noise", "n": 4, "closed_set_accuracy": closed[seed] - 0.1, "open_set_f1": None}]))
    rows = write_summary(tmp_path, [1, 2, 3])
    assert rows[0]["method"] == "submitted" and rows[0]["methods"] == ["score", "two_stage", "score"]
    assert rows[0]["test_f1"]["values"] == pytest.approx([0.80, 0.85, 0.79])
    by_name = {r["method"]: r for r in rows[1:]}
    assert by_name["score"]["submitted_in"] == [1, 3] and by_name["two_stage"]["submitted_in"] == [2]
    conditions = json.loads((tmp_path / "report" / "conditions_over_seeds.json").read_text())
    assert [c["condition"] for c in conditions] == ["all", "noise"]
    assert conditions[1]["closed_set_accuracy"]["mean"] == pytest.approx(statistics.mean(closed.values()) - 0.1)
    assert conditions[0]["closed_set_accuracy"]["std"] == pytest.approx(statistics.stdev(closed.values()))
    assert "open_set_f1" not in conditions[1]  # not a number in every seed
    text = (tmp_path / "report" / "README.md").read_text()
    assert "**submitted** (score, two_stage, score)" in text and "## The submitted method per condition" in text

    # seeds 1 and 2 again, their reports without the conditions, beside an ensemble fused over 1-3:
    # the summary keeps neither the earlier run's conditions nor that ensemble
    for seed in chosen:
        (tmp_path / f"seed_{seed}" / "report" / "conditions.json").unlink()
    ensemble = tmp_path / "ensemble"
    (ensemble / "report").mkdir(parents=True)
    (ensemble / "fusion").mkdir()
    (ensemble / "report" / "results.json").write_text(json.dumps([{"method": "score", "submitted": True, "test_f1": 0.9}]))
    (ensemble / "fusion" / "summary.json").write_text(json.dumps({"systems": [f"a_seed{k}" for k in chosen]}))
    assert "## The ensemble of the seeds" in (write_summary(tmp_path, [1, 2, 3]) and (tmp_path / "report" / "README.md").read_text())
    write_summary(tmp_path, [1, 2])
    assert not (tmp_path / "report" / "conditions_over_seeds.json").exists()
    text = (tmp_path / "report" / "README.md").read_text()
    assert "per condition" not in text and "ensemble of the seeds" not in text


def test_the_per_generator_tables_are_averaged_in_a_new_test_sets_folder(tmp_path):
    """`--testset NAME`: the seeds' reports of a new test set, summed up in EXP/testsets/NAME/report,
    with the unknown class per generator averaged and each seed's best method named."""
    auroc = {1: 0.70, 2: 0.75, 3: 0.66}
    for seed, v in auroc.items():
        report = tmp_path / f"seed_{seed}" / "testsets" / "held" / "report"
        report.mkdir(parents=True)
        (report / "results.json").write_text(json.dumps([{"method": "score", "submitted": True, "test_f1": 0.8}]))
        (report / "generators.json").write_text(json.dumps([
            {"generator": "klatt", "n": 6, "unknown_recall": 0.5, "auroc": v, "fpr95": None,
             "best_method": "stack" if seed < 3 else "score", "best_auroc": v + 0.1}]))
    write_summary(tmp_path, [1, 2, 3], "held")
    assert not (tmp_path / "report").exists()  # the experiment's own summary is left alone
    out = tmp_path / "testsets" / "held" / "report"
    (row,) = json.loads((out / "generators_over_seeds.json").read_text())
    assert row["auroc"]["mean"] == pytest.approx(statistics.mean(auroc.values()))
    assert row["best_auroc"]["std"] == pytest.approx(statistics.stdev(auroc.values()))
    assert "fpr95" not in row and row["best_method"] == ["stack", "stack", "score"]
    text = (out / "README.md").read_text()
    assert "| klatt (best: score, stack) |" in text and "`seed_N/testsets/held/report/`" in text


def test_the_per_class_tables_are_averaged_with_each_seeds_confusion(tmp_path):
    recall = {1: 0.36, 2: 0.55, 3: 0.48}
    for seed, v in recall.items():
        write_results(tmp_path, seed, [{"method": "score", "submitted": True, "test_f1": 0.8}])
        (tmp_path / f"seed_{seed}" / "report" / "classes.json").write_text(json.dumps([
            {"label": 0, "n": 84, "precision": 0.4, "recall": v, "closed_set_recall": v + 0.01,
             "mistaken_for": 6 if seed != 2 else 7, "mistaken_share": 0.5},
            {"label": 7, "n": 420, "precision": None, "recall": 0.05, "mistaken_for": 6, "mistaken_share": 0.8}]))
    write_summary(tmp_path, [1, 2, 3])
    classes = json.loads((tmp_path / "report" / "classes_over_seeds.json").read_text())
    assert [c["label"] for c in classes] == [0, 7]
    assert classes[0]["recall"]["mean"] == pytest.approx(statistics.mean(recall.values()))
    assert classes[0]["closed_set_recall"]["std"] == pytest.approx(statistics.stdev(recall.values()))
    assert classes[0]["mistaken_for"] == [6, 7, 6]
    assert "precision" not in classes[1] and "closed_set_recall" not in classes[1]
    text = (tmp_path / "report" / "README.md").read_text()
    assert "## The submitted method per class" in text and "0 real (taken for: fake 6, unknown, fake 6)" in text


@pytest.mark.parametrize("damage, message", [
    (None, "seed_2/report/results.json: missing"),
    ("{not json", "not valid JSON"),
    ('{"method": 1}', "not a results list"),
])
def test_bad_seed_results_are_one_line_errors(tmp_path, damage, message):
    write_results(tmp_path, 1, [{"method": "feature", "test_f1": 0.5}])
    if damage is not None:
        (tmp_path / "seed_2" / "report").mkdir(parents=True)
        (tmp_path / "seed_2" / "report" / "results.json").write_text(damage)
    proc = subprocess.run([sys.executable, "-m", "eval.seeds", "--exp", str(tmp_path), "--seeds", "1,2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and message in proc.stderr


CONDITIONS_OK = '[{"condition": "all", "closed_set_accuracy": 0.9}]'
CLASSES_OK = '[{"label": 0, "recall": 0.9, "mistaken_for": 6}]'


@pytest.mark.parametrize("name, good, damage, message", [
    ("conditions.json", CONDITIONS_OK, "[1, 2", "not valid JSON"),
    ("conditions.json", CONDITIONS_OK, '[{"n": 3}]', "not a conditions list"),
    ("classes.json", CLASSES_OK, '[{"n": 3}]', "not a per-class list"),
    ("classes.json", CLASSES_OK, '[{"label": 9, "n": 3}]', "a label outside 0–7"),
    ("classes.json", CLASSES_OK, '[{"label": 0, "mistaken_for": "six"}]', "a label outside 0–7"),
    ("classes.json", CLASSES_OK, '[{"label": true}]', "a label outside 0–7"),
])
def test_a_bad_per_seed_table_is_a_one_line_error(tmp_path, name, good, damage, message):
    for seed in (1, 2):
        write_results(tmp_path, seed, [{"method": "feature", "submitted": True, "test_f1": 0.5}])
        (tmp_path / f"seed_{seed}" / "report" / name).write_text(damage if seed == 2 else good)
    proc = subprocess.run([sys.executable, "-m", "eval.seeds", "--exp", str(tmp_path), "--seeds", "1,2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"seed_2/report/{name}" in proc.stderr and message in proc.stderr


@pytest.mark.parametrize("seeds", ["1,x", "1,,2", "2,2"])
def test_recipe_refuses_a_bad_seed_list(seeds):
    proc = subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--seeds", seeds, "--stage", "9"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--seeds" in proc.stderr


@pytest.mark.parametrize("systems", ["rawnet2,rawnet2", "rawnet2,,lfcc_resnet18", "a b"])
def test_recipe_refuses_a_bad_system_list_before_any_stage(systems):
    proc = subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--systems", systems, "--stage", "9"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --systems") and proc.stderr.count("\n") == 1


def test_recipe_with_two_seeds(tiny_corpus, tiny_recipe, tmp_path):
    """Stages 3-7 per seed in EXP/seed_N on one prepared data set; the summary over both seeds in
    EXP/report; both seeds' systems fused as one ensemble in EXP/ensemble, through links, whose
    submission is the one in the submission folder and which `predict` reads like any experiment."""
    work = tmp_path
    (work / "conf").mkdir()
    for f in (tiny_recipe[0] / "conf").iterdir():
        (work / "conf" / f.name).write_text(f.read_text())
    # one epoch per seed keeps this test short; the prepared data of the shared recipe is copied,
    # which stage 2 then finds up to date (a copied experiment stays current)
    for f in (work / "conf").iterdir():
        f.write_text(f.read_text().replace("epochs: 2", "epochs: 1"))
    exp = work / "exp"
    shutil.copytree(tiny_recipe[0] / "exp" / "data", exp / "data", symlinks=True)
    out = run_recipe(tiny_corpus, work, "--seeds", "4,5")
    assert "up to date" in out.split("Stage 3")[0]
    for seed in (4, 5):
        for system in TINY_RECIPE:
            cfg = (exp / f"seed_{seed}" / system / "config.yaml").read_text()
            assert f"seed: {seed}" in cfg
        assert (exp / f"seed_{seed}" / "submission" / "track3.txt").is_file()
    assert not (exp / "lfcc_resnet18").exists()  # no run outside the seed folders
    # stage 4 alone checks each seed's training against the YAML with that seed, as stage 3 ran it
    again = run_recipe(tiny_corpus, work, "--seeds", "4,5", "--stage", "4", "--stop_stage", "4")
    assert again.count("nothing to do") == 2 * len(TINY_RECIPE) and "Stage 3" not in again
    ensemble = exp / "ensemble"
    members = [f"{system}_seed{seed}" for seed in (4, 5) for system in TINY_RECIPE]
    for m in members:
        assert (ensemble / m / "ckpt").is_symlink() and (ensemble / m / "scores").is_symlink()
    assert (ensemble / members[-1] / "ckpt").resolve() == (exp / "seed_5" / list(TINY_RECIPE)[-1] / "ckpt").resolve()
    # the training check on a member (stage 3 of `--exp EXP/ensemble --test_dir`) answers from the
    # seed's linked stamp and writes nothing into the ensemble
    member = ensemble / members[0]
    listed = sorted(p.name for p in member.iterdir())
    assert all((member / n).is_symlink() for n in listed) and ".options.json" in listed
    proc = subprocess.run([sys.executable, "-m", "systems.train", "--config", str(member / "config.yaml"),
                           "--data", str(exp / "data"), "--exp", str(member)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stderr
    assert sorted(p.name for p in member.iterdir()) == listed and all((member / n).is_symlink() for n in listed)
    # the ensemble's `score` is the mean of all four networks' softmaxes (a deep ensemble)
    seeds_data = [load_members(exp / f"seed_{seed}", list(TINY_RECIPE), splits=("test",))["test"] for seed in (4, 5)]
    expected = np.mean([softmax(d.logits[s], axis=1) for d in seeds_data for s in TINY_RECIPE], axis=0)
    fused_ids = (ensemble / "fusion" / "test_ids.txt").read_text().split()
    assert fused_ids == seeds_data[0].ids
    np.testing.assert_allclose(np.load(ensemble / "fusion" / "score" / "test_scores.npy"), expected, atol=1e-6)
    submitted = read_label_file(ensemble / "submission" / "track3.txt")
    assert read_label_file(work / "submission" / "track3.txt") == submitted
    assert f"Members: {', '.join(members)}." in (exp / "report" / "README.md").read_text()
    wavs = sorted((tiny_corpus / "ADD2023_Track3_test" / "wav").iterdir())[:2]
    proc = subprocess.run([sys.executable, "-m", "submit.predict", "--exp", str(ensemble), *map(str, wavs)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = [int(line.split("\t")[2]) for line in proc.stdout.strip().split("\n")[1:]]
    assert labels == [submitted[w.stem] for w in wavs]
    # a seed folder is an experiment too: its data links EXP/data, and predict gives its submission
    seed_exp = exp / "seed_5"
    assert (seed_exp / "data").is_symlink() and (seed_exp / "data").resolve() == (exp / "data").resolve()
    proc = subprocess.run([sys.executable, "-m", "submit.predict", "--exp", str(seed_exp), *map(str, wavs)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_submitted = read_label_file(seed_exp / "submission" / "track3.txt")
    assert [int(line.split("\t")[2]) for line in proc.stdout.strip().split("\n")[1:]] == [seed_submitted[w.stem] for w in wavs]
    # the ensemble as an experiment of its own takes a new test set: stage 3 finds nothing to do
    # and leaves every link a link
    new_wavs = tmp_path / "new_test"
    new_wavs.mkdir()
    for w in wavs:
        (new_wavs / w.name).write_bytes(w.read_bytes())
    proc = new_test_set("--exp", str(ensemble), "--test_dir", str(new_wavs), "--stop_stage", "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("nothing to do") == len(members)
    assert all((ensemble / m / "config.yaml").is_symlink() for m in members)
    summary = json.loads((exp / "report" / "results_over_seeds.json").read_text())
    feature = next(r for r in summary if r["method"] == "feature")
    per_seed = [next(r for r in json.loads((exp / f"seed_{s}" / "report" / "results.json").read_text())
                     if r["method"] == "feature")["test_f1"] for s in (4, 5)]
    assert feature["test_f1"]["values"] == pytest.approx(per_seed)
    assert "mean ± std over seeds" in out
    check_new_test_set_over_seeds(tiny_corpus, exp, submitted, tmp_path)


def new_test_set(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "run_track3.sh"), "--skip_setup", *args], cwd=ROOT,
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True)


def check_new_test_set_over_seeds(tiny_corpus, exp, submitted, tmp_path):
    """`--seeds` with `--test_dir`: every seed scores the new test set, prepared once; the ensemble
    fuses the seeds' test scores; EXP/testsets/NAME gets the mean ± std over the seeds and the
    ensemble's submission; nothing outside the testsets folders changes."""
    new_wavs = tmp_path / "renamed"
    new_wavs.mkdir()
    old_key = read_label_file(tiny_corpus / "keys" / "test_label.txt")
    for utt in old_key:  # the test audio under names the experiment has never scored
        shutil.copy(tiny_corpus / "ADD2023_Track3_test" / "wav" / f"{utt}.wav", new_wavs / f"new_{utt}.wav")
    key = tmp_path / "renamed_key.txt"
    key.write_text(label_lines({f"new_{utt}": label for utt, label in old_key.items()}))
    refused = new_test_set("--exp", str(exp), "--test_dir", str(new_wavs))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "add --seeds 4,5 (or give --exp" in refused.stderr
    before = tree_digest(exp, skip="testsets")
    proc = new_test_set("--exp", str(exp), "--seeds", "4,5", "--test_dir", str(new_wavs), "--test_labels", str(key))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("nothing to do") == 2 * len(TINY_RECIPE)  # every seed's systems, as trained
    assert proc.stdout.count("Stage 2 (prepare): " + str(new_wavs)) == 1
    shared = exp / "testsets" / "renamed"
    per_seed_f1 = []
    for seed in (4, 5):
        run = exp / f"seed_{seed}" / "testsets" / "renamed"
        assert (run / "data").is_symlink() and (run / "data").resolve() == (shared / "data").resolve()
        rows = json.loads((run / "report" / "results.json").read_text())
        per_seed_f1.append(next(r for r in rows if r["method"] == "feature")["test_f1"])
    ensemble = exp / "ensemble" / "testsets" / "renamed"
    for seed in (4, 5):
        for system in TINY_RECIPE:
            scores = ensemble / f"{system}_seed{seed}" / "scores"
            assert scores.resolve() == (exp / f"seed_{seed}" / "testsets" / "renamed" / system / "scores").resolve()
    new_submission = read_label_file(ensemble / "submission" / "track3.txt")
    assert read_label_file(shared / "submission" / "track3.txt") == new_submission
    # the same audio under other names: the labels the ensemble gave it in training's own run
    assert new_submission == {f"new_{utt}": submitted[utt] for utt in old_key}
    over_seeds = json.loads((shared / "report" / "results_over_seeds.json").read_text())
    assert next(r for r in over_seeds if r["method"] == "feature")["test_f1"]["values"] == pytest.approx(per_seed_f1)
    assert "ensemble/testsets/renamed/report/" in (shared / "report" / "README.md").read_text()
    assert tree_digest(exp, skip="testsets") == before  # the trained runs are untouched


def test_ensemble_layout_refuses_one_seed_a_missing_system_and_a_foreign_file(tmp_path):
    for seed in (1, 2):
        member = tmp_path / f"seed_{seed}" / "rawnet2"
        (member / "ckpt").mkdir(parents=True)
        (member / "scores").mkdir()
        (member / "config.yaml").write_text("system: rawnet2\n")
    (tmp_path / "data").mkdir()
    with pytest.raises(KitError, match="two or more distinct seeds"):
        lay_out(tmp_path, [1], ["rawnet2"])
    with pytest.raises(KitError, match="seed_3/rawnet2/config.yaml: missing; train and score rawnet2 for seed 3"):
        lay_out(tmp_path, [1, 3], ["rawnet2"])
    assert lay_out(tmp_path, [1, 2], ["rawnet2"]) == ["rawnet2_seed1", "rawnet2_seed2"]
    before = sorted(str(p) for p in (tmp_path / "ensemble").rglob("*"))
    assert lay_out(tmp_path, [1, 2], ["rawnet2"]) == ["rawnet2_seed1", "rawnet2_seed2"]  # a second call changes nothing
    assert sorted(str(p) for p in (tmp_path / "ensemble").rglob("*")) == before
    assert (tmp_path / "ensemble" / "data").resolve() == (tmp_path / "data").resolve()
    (tmp_path / "ensemble" / "rawnet2_seed2" / "ckpt").unlink()
    (tmp_path / "ensemble" / "rawnet2_seed2" / "ckpt").mkdir()
    with pytest.raises(KitError, match="ckpt: exists and is not a link to"):
        lay_out(tmp_path, [1, 2], ["rawnet2"])


def test_a_broken_ensemble_report_is_one_line_naming_the_file(tmp_path):
    for seed in (1, 2):
        write_results(tmp_path, seed, [{"method": "score", "submitted": True, "dev_f1": 0.9, "test_f1": 0.8}])
    broken = tmp_path / "ensemble" / "report" / "results.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("[{\"method\": ")
    proc = subprocess.run([sys.executable, "-m", "eval.seeds", "--exp", str(tmp_path), "--seeds", "1,2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{broken}: not valid JSON" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    broken.write_text(json.dumps([{"method": "stack", "submitted": True, "test_f1": 0.84, "test_auroc": 0.89},
                                  {"method": "softmax:rawnet2_seed1", "test_f1": 0.7}]))
    summary = tmp_path / "ensemble" / "fusion" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text("{\"systems\": [")
    proc = subprocess.run([sys.executable, "-m", "eval.seeds", "--exp", str(tmp_path), "--seeds", "1,2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"{summary}: the ensemble's fusion summary is corrupt or truncated" in proc.stderr
    summary.write_text(json.dumps({"systems": ["rawnet2_seed1", "rawnet2_seed2"]}))
    write_summary(tmp_path, [1, 2])
    text = (tmp_path / "report" / "README.md").read_text()
    assert "| **stack** (submitted) | 0.8400 | 0.8900 |" in text and "| softmax:rawnet2_seed1" not in text
    assert "Members: rawnet2_seed1, rawnet2_seed2." in text
