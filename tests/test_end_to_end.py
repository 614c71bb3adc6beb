"""All stages of run_track3.sh on the tiny corpus, with a tiny config; then a re-run that skips."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from core.label_files import read_label_file
from core.scores import SystemScores
from core.stamps import STAMP_NAME, options_digest

from .conftest import TINY_RECIPE, run_module, run_recipe


def test_recipe_end_to_end(tiny_corpus, tiny_recipe):
    tmp_path, out = tiny_recipe
    for stage in ("Stage 2 (prepare)", "Stage 3 (train)", "Stage 4 (score)", "Stage 5 (fuse)",
                  "Stage 6 (submit)", "Stage 7 (evaluate)"):
        assert stage in out
    exp = tmp_path / "exp"
    assert yaml.safe_load((exp / "lfcc_resnet18" / "config.yaml").read_text())["train"]["epochs"] == 2

    key = read_label_file(tiny_corpus / "keys" / "test_label.txt")
    for system in TINY_RECIPE:
        test = SystemScores(exp / system / "scores" / "test")
        assert sorted(test.ids) == sorted(key)
        assert test.embeddings.shape == (len(key), 256)
        assert test.window_offsets[0] == 0 and test.window_offsets[-1] == len(test.window_embeddings)
        assert np.all(np.diff(test.window_offsets) >= 1)
    train = SystemScores(exp / "lfcc_resnet18" / "scores" / "train")
    assert set(train.labels.tolist()) == set(range(7))

    summary = json.loads((exp / "fusion" / "summary.json").read_text())
    expected = {"softmax:lfcc_resnet18", "openmax:rawnet2", "label", "score", "score_aug", "feature",
                "feature_softmax", "feature_paper"}
    assert expected <= set(summary["methods"])
    # submit_method auto: of the methods over both members giving class shares, the first within one
    # bootstrap SE of the best dev F1 at τ
    fused = {m: info["dev_f1_at_tau"] for m, info in summary["methods"].items()
             if ":" not in m and m not in ("two_stage", "label")}
    tied = [m for m, f1 in fused.items() if max(fused.values()) - f1 <= summary["auto_dev_f1_se"]]
    assert summary["auto_tied"] == tied and summary["submit_method"] == tied[0]
    assert summary["submit_method"] in fused and summary["submit_choice"].startswith("auto")
    assert abs(summary["methods"]["score"]["dev_rejected"] - 0.05) < 0.2
    sub = read_label_file(tmp_path / "submission" / "track3.txt")
    assert set(sub) == set(key)
    results = json.loads((exp / "report" / "results.json").read_text())
    assert {r["method"] for r in results} == set(summary["methods"])
    assert all(0.0 <= r["test_f1"] <= 1.0 for r in results)
    for figure in ("max_scores.png", "f1_vs_tau.png", "tsne.png", "confusion.png", "roc_det.png"):
        assert (exp / "report" / figure).stat().st_size > 1000, figure
    assert "open-set macro (ADD 2023 Track 3)" in out

    again = run_recipe(tiny_corpus, tmp_path)
    assert "up to date, skipped" in again and "nothing to do" in again


def as_an_earlier_kit_stamped(stamp_path, paths, new_options=()):
    """Rewrite a stamp as an earlier kit wrote it, with `paths` {option: absolute path} and without
    the `new_options` it did not hold."""
    stamp = json.loads(stamp_path.read_text())
    for key in new_options:
        del stamp["options"][key]
    for key, path in paths.items():
        if isinstance(stamp["options"][key], dict):
            stamp["options"][key]["path"] = path
        else:
            stamp["options"][key] = path
    stamp["digest"] = options_digest(stamp["options"])
    stamp_path.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def assert_all_current(out, work):
    assert "[train]" in out and "training from scratch" not in out and "augmented copy of dev_clean up to date" in out
    assert "checkpoint of epoch" not in out, out  # the score stage's line when it scores
    assert out.count("[score]") == 3 * len(TINY_RECIPE) and out.count("up to date, skipped") >= 3 * len(TINY_RECIPE) + 2
    assert "submission method" not in out and f"[fuse] {work / 'exp' / 'fusion'}: up to date, skipped" in out
    assert f"[evaluate] {work / 'exp' / 'report'}: up to date, skipped" in out


def test_a_copied_experiment_stays_current(tiny_corpus, tiny_recipe, tmp_path):
    """`cp -a` of the whole work folder: every stage of the copy is up to date (nothing prepared,
    trained, scored, fused or drawn again), also when an earlier kit stamped it elsewhere (files
    inside the experiment by absolute path); its score stamps are then rewritten, its augmented
    dev's stamp is not (training digests it)."""
    work, _ = tiny_recipe
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)  # copy2: times kept, links as links, as cp -a
    assert_all_current(run_recipe(tiny_corpus, copy), copy)

    system, elsewhere = copy / "exp" / "lfcc_resnet18", "/elsewhere/exp"
    scores = system / "scores" / "test" / STAMP_NAME
    recorded = json.loads(scores.read_text())["options"]
    assert not Path(recorded["checkpoint"]["path"]).is_absolute()
    assert (system / recorded["checkpoint"]["path"]).is_file()
    as_an_earlier_kit_stamped(scores, {"checkpoint": f"{elsewhere}/lfcc_resnet18/{recorded['checkpoint']['path']}",
                                       "manifest": f"{elsewhere}/data/test/manifest.tsv"})
    moved = tmp_path / "moved"
    shutil.copytree(copy, moved, symlinks=True)
    assert_all_current(run_recipe(tiny_corpus, moved), moved)
    restamped = json.loads((moved / "exp" / "lfcc_resnet18" / "scores" / "test" / STAMP_NAME).read_text())["options"]
    assert restamped["checkpoint"]["path"] == recorded["checkpoint"]["path"]

    # the augmented dev as an earlier kit stamped it elsewhere (training, which digests that stamp,
    # would then have been trained on it: prepare alone here)
    dev = moved / "exp" / "data" / "dev" / STAMP_NAME
    as_an_earlier_kit_stamped(dev, {"clean": f"{elsewhere}/data/dev_clean"}, new_options=("clean_inputs",))
    dev_bytes = dev.read_bytes()
    proc = run_module("data_prep.prepare", "--data_root", str(tiny_corpus), "--out", str(moved / "exp" / "data"),
                      "--augment_dev", str(tiny_corpus / "musan_demo"))
    assert "augmented copy of dev_clean up to date, skipped" in proc.stdout and dev.read_bytes() == dev_bytes


def test_stages_6_and_7_alone_refuse_what_the_fusion_was_not_made_of(tiny_corpus, tiny_recipe, tmp_path):
    """Run alone, the submit stage refuses a fusion of other systems than --systems; the evaluate
    stage refuses a submission older than the fusion (an earlier fusion's, left in the submission
    folder) and a fusion older than its score files, as the submit stage does. One error line each."""
    import os

    work, _ = tiny_recipe
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)

    def refused(*extra: str) -> str:
        proc = run_recipe(tiny_corpus, copy, *extra, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and err.startswith("error:") and "\n" not in err, proc.stdout[-2000:] + proc.stderr
        return err

    stage = lambda n: ("--stage", str(n), "--stop_stage", str(n))  # noqa: E731
    members = ",".join(TINY_RECIPE)
    assert f"fused from {members}, not --systems lfcc_resnet18" in refused(*stage(6), "--systems", "lfcc_resnet18")

    summary, submission = copy / "exp" / "fusion" / "summary.json", copy / "submission" / "track3.txt"
    made = submission.stat().st_mtime_ns
    os.utime(summary, ns=(made, made + 10 ** 9))  # as a fusion made after the submission
    assert f"{submission}: older than {copy / 'exp' / 'fusion'}" in refused(*stage(7))
    run_recipe(tiny_corpus, copy, "--stage", "6", "--stop_stage", "7")  # submitting again clears it

    scores = copy / "exp" / "rawnet2" / "scores" / "dev" / "logits.tsv"
    st = scores.stat()
    os.utime(scores, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    err = refused(*stage(7))
    assert str(scores) in err and "changed since" in err and "before reporting" in err


def test_stage_4_alone_reads_the_system_yaml(tiny_corpus, tiny_recipe, tmp_path):
    """Stage 4 run without stage 3 takes a run setting edited into a system's YAML since training
    (the scoring batch size) and refuses a training setting, naming it, instead of scoring the
    checkpoints of the config they were trained with as if the edit were not there."""
    work, _ = tiny_recipe
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)
    conf, trained = copy / "conf" / "rawnet2.yaml", copy / "exp" / "rawnet2" / "config.yaml"
    raw = yaml.safe_load(conf.read_text())
    batch = yaml.safe_load(trained.read_text())["score"]["batch_size"] + 3
    raw.setdefault("score", {})["batch_size"] = batch
    conf.write_text(yaml.safe_dump(raw))
    killed = copy / "exp" / "rawnet2" / "scores" / ".dev.partial"  # a killed rescoring's staging
    killed.mkdir()
    run_recipe(tiny_corpus, copy, "--stage", "4", "--stop_stage", "4")
    assert yaml.safe_load(trained.read_text())["score"]["batch_size"] == batch
    assert not killed.exists()  # swept by the stage that found the split current

    lr = yaml.safe_load(trained.read_text())["train"]["lr"]
    raw["train"]["lr"] = lr * 2
    conf.write_text(yaml.safe_dump(raw))
    proc = run_recipe(tiny_corpus, copy, "--stage", "4", "--stop_stage", "7", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("error:") and "\n" not in err, proc.stdout[-2000:] + proc.stderr
    assert str(conf) in err and f"train.lr: {lr} → {lr * 2}" in err and "Stage 5" not in proc.stdout
