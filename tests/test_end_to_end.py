"""All stages of run_track3.sh on the tiny corpus, with a tiny config; then a re-run that skips."""
from __future__ import annotations

import json

import numpy as np
import yaml

from core.label_files import read_label_file
from core.scores import SystemScores

from .conftest import TINY_RECIPE, run_recipe


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
