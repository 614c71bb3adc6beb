"""The report's t-SNE figure at the challenge's sizes: a fixed random sample per split, not every
utterance (t-SNE of 8,400 + 79,490 points took 18 minutes on 2 cores)."""
from __future__ import annotations

import numpy as np
import sklearn.manifold

from core.label_files import label_lines
from eval import report


def test_small_splits_are_drawn_whole_and_large_ones_sampled_the_same_way_every_run():
    assert np.array_equal(report.tsne_sample(50, cap=100), np.arange(50))
    assert np.array_equal(report.tsne_sample(100, cap=100), np.arange(100))
    rows = report.tsne_sample(10_000, cap=400)
    assert len(rows) == 400 and len(np.unique(rows)) == 400
    assert np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < 10_000
    assert np.array_equal(rows, report.tsne_sample(10_000, cap=400))
    # eight equal classes keep about their share: 50 each expected, binomial std 6.6
    labels = np.repeat(np.arange(8), 1250)
    assert np.all(np.abs(np.bincount(labels[rows], minlength=8) - 50) <= 20)


def test_the_figure_of_a_split_above_the_cap_embeds_the_sample(tmp_path, monkeypatch):
    fusion, out = tmp_path / "fusion", tmp_path / "report"
    fusion.mkdir()
    out.mkdir()
    rng = np.random.default_rng(1)
    labels = np.arange(120) % 7
    ids = [f"dev_{i:04d}" for i in range(120)]
    np.save(fusion / "fused_embeddings_dev.npy", rng.standard_normal((120, 16)) + labels[:, None])
    (fusion / "dev_ids.txt").write_text("".join(f"{u}\n" for u in ids))
    (fusion / "dev_key.txt").write_text(label_lines(dict(zip(ids, labels.tolist()))))

    embedded = []
    fit_transform = sklearn.manifold.TSNE.fit_transform

    def recording(self, X, *args, **kwargs):
        embedded.append(len(X))
        return fit_transform(self, X, *args, **kwargs)

    monkeypatch.setattr(sklearn.manifold.TSNE, "fit_transform", recording)
    monkeypatch.setattr(report, "TSNE_POINTS_PER_SPLIT", 40)
    assert report.plot_tsne(fusion, None, out)
    assert embedded == [40] and (out / "tsne.png").stat().st_size > 0
    monkeypatch.setattr(report, "TSNE_POINTS_PER_SPLIT", 500)
    assert report.plot_tsne(fusion, None, out)
    assert embedded == [40, 120]


def test_a_report_without_its_t_sne_leaves_no_earlier_one_beside_it(tiny_recipe, tmp_path):
    """A fusion without fused dev embeddings gets a report without the t-SNE section; the figure an
    earlier report drew in the same folder goes with it, as roc_det.png does without a key."""
    import shutil

    work, _ = tiny_recipe
    exp = tmp_path / "exp"
    shutil.copytree(work / "exp", exp, symlinks=True)
    assert (exp / "report" / "tsne.png").is_file()
    (exp / "fusion" / "fused_embeddings_dev.npy").unlink()
    report.write_report(exp, exp / "data" / "test", None)
    assert "tsne.png" not in (exp / "report" / "README.md").read_text()
    assert not (exp / "report" / "tsne.png").exists() and not (exp / "report" / "roc_det.png").exists()
