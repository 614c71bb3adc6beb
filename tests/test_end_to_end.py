"""All stages of run_track3.sh on the tiny corpus, with a tiny config; then a re-run that skips."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from core.label_files import read_label_file
from core.scores import SystemScores
from core.stamps import STAMP_NAME, options_digest

from .conftest import ROOT, TINY_RECIPE, run_recipe


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


def test_a_copied_experiment_stays_current(tiny_corpus, tiny_recipe, tmp_path):
    """`cp -a` of the whole work folder: every stage of the copy is up to date (nothing scored,
    fused or drawn again); a score stamp of an earlier kit (absolute paths) counts and is restamped."""
    work, _ = tiny_recipe
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)  # copy2: times kept, links as links, as cp -a
    again = run_recipe(tiny_corpus, copy)
    assert "checkpoint of epoch" not in again, again  # the score stage's line when it scores
    assert again.count("[score]") == 3 * len(TINY_RECIPE) and again.count("up to date, skipped") >= 3 * len(TINY_RECIPE) + 2
    assert "submission method" not in again and f"[fuse] {copy / 'exp' / 'fusion'}: up to date, skipped" in again
    assert f"[evaluate] {copy / 'exp' / 'report'}: up to date, skipped" in again

    system = copy / "exp" / "lfcc_resnet18"
    folder = system / "scores" / "test"
    stamp = json.loads((folder / STAMP_NAME).read_text())
    recorded = stamp["options"]["checkpoint"]["path"]
    assert not Path(recorded).is_absolute() and (system / recorded).is_file()
    # as the kit wrote it before: the checkpoint and manifest by their absolute paths
    for key, root in (("checkpoint", system), ("manifest", system)):
        stamp["options"][key]["path"] = str((root / stamp["options"][key]["path"]).resolve())
    stamp["digest"] = options_digest(stamp["options"])
    (folder / STAMP_NAME).write_text(json.dumps(stamp))
    proc = subprocess.run([sys.executable, "-m", "systems.score", "--exp", str(system), "--data", str(copy / "exp" / "data"),
                           "--splits", "test"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "up to date, skipped" in proc.stdout and "checkpoint of epoch" not in proc.stdout
    assert json.loads((folder / STAMP_NAME).read_text())["options"]["checkpoint"]["path"] == recorded
