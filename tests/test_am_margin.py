"""The additive-margin (CosFace / AM-softmax) option of RawNet2 and LFCC-ResNet18: `model.classifier: cosine` gives
logits s·cos(embedding, class weight), checked against sklearn's cosine similarity;
`train.am_margin` trains them with the margin taken from the target class, checked against
scipy's log-softmax of the margin-shifted logits; resume, refusals, digest, ONNX export."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from sklearn.metrics.pairwise import cosine_similarity

from core.errors import KitError
from systems.common.base import NUM_CLASSES, CosineClassifier, additive_margin_cross_entropy
from systems.common.config import load_config
from systems.common.engine import train
from systems.onnx_backend import OnnxSystem
from systems.onnx_export import export_model
from systems.lfcc_resnet18.model import LFCCResNet18
from systems.rawnet2.model import RawNet2

from .conftest import ROOT
from .test_engine import assert_same_weights, latest_weights
from .test_regmixup import LINEAR_HEAD

CONFIG = ROOT / "systems/rawnet2/conf/demo.yaml"
# rawnet2/conf/paper.yaml's digest at ecc7d2b, before it named its classifier
PAPER_BEFORE = "135ef38ffa330dd55d75ff309c4d65913268c563667894fc8448d677b7335d1a"
TINY = {"model.channels": [8, 16], "model.gru_hidden": 16, "model.gru_layers": 1, "train.batch_size": 8,
        "train.num_workers": 0, "train.bf16": False, "train.epochs": 2}


def tiny_cosine(tiny_corpus, **extra):
    settings = dict(TINY, **{"augment.musan": str(tiny_corpus / "musan_demo"), "model.classifier": "cosine"})
    return load_config(CONFIG, dict(settings, **extra))


def test_loss_is_the_cosface_objective():
    rng = np.random.default_rng(0)
    scale, labels = 30.0, np.array([0, 3, 6, 2, 2])
    cos = rng.uniform(-1, 1, size=(5, NUM_CLASSES))
    for margin in (0.0, 0.2, 0.35):
        got = additive_margin_cross_entropy(torch.tensor(scale * cos), torch.tensor(labels), margin, scale)
        # Wang et al.'s eq.: the target's logit is s·(cos θ_y − m), every other s·cos θ_j
        shifted = scale * cos
        shifted[np.arange(len(labels)), labels] -= scale * margin
        # scipy's log-softmax, not sklearn's log loss, which clips probabilities at s = 30
        expected = -np.mean(log_softmax(shifted, axis=1)[np.arange(len(labels)), labels])
        assert float(got) == pytest.approx(expected, rel=1e-6)
    # the margin makes the same logits cost more
    logits, y = torch.tensor(scale * cos), torch.tensor(labels)
    assert additive_margin_cross_entropy(logits, y, 0.2, scale) > additive_margin_cross_entropy(logits, y, 0.0, scale)


def test_cosine_classifier_is_scaled_cosine_similarity():
    torch.manual_seed(0)
    head = CosineClassifier(32, NUM_CLASSES, scale=20.0)
    x = torch.randn(9, 32) * torch.rand(9, 1) * 10  # rows of any norm
    expected = 20.0 * cosine_similarity(x.numpy(), head.weight.detach().numpy())
    np.testing.assert_allclose(head(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_margin_training_resumes_and_trains_something_else(tiny_prepared, tiny_corpus, tmp_path):
    cfg = tiny_cosine(tiny_corpus, **{"train.am_margin": 0.2})
    train(cfg, tiny_prepared, tmp_path / "whole", torch.device("cpu"))
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"), stop_after_epochs=1)
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"))
    assert_same_weights(latest_weights(tmp_path / "resumed")[1], latest_weights(tmp_path / "whole")[1])
    # the margin trains something else: the same cosine model from the same seed without it ends elsewhere
    plain = tiny_cosine(tiny_corpus, **{"train.am_margin": 0.0})
    train(plain, tiny_prepared, tmp_path / "plain", torch.device("cpu"))
    a, b = latest_weights(tmp_path / "plain")[1], latest_weights(tmp_path / "whole")[1]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("overrides, message", [
    ({"train.am_margin": 1.5}, r"train.am_margin 1.5: a cosine margin in \[0, 1\)"),
    ({"train.am_margin": -0.1}, r"train.am_margin -0.1: a cosine margin in \[0, 1\)"),
])
def test_margin_out_of_range_is_a_config_error(overrides, message):
    with pytest.raises(KitError, match=message):
        load_config(CONFIG, overrides)


@pytest.mark.parametrize("system", [RawNet2, LFCCResNet18])
def test_unknown_classifier_and_bad_scale_are_one_line_errors(system):
    with pytest.raises(KitError, match="model.classifier 'arcface': valid are linear, cosine"):
        system(classifier="arcface")
    with pytest.raises(KitError, match="model.cosine_scale 0.0: must be > 0"):
        system(classifier="cosine", cosine_scale=0.0)


LFCC_TINY = {"blocks": (1, 1, 1, 1), "channels": (4, 8, 8, 8)}


def test_cosine_lfcc_resnet18_logits_are_scaled_cosines_of_its_embedding():
    """CosFace's head: s·cos of the exported embedding itself (no ReLU in between, unlike the
    linear head), so the margin shapes the embedding the fusion and the scorers read."""
    torch.manual_seed(0)
    model = LFCCResNet18(classifier="cosine", cosine_scale=25.0, **LFCC_TINY).eval()
    with torch.no_grad():
        logits, emb = model(torch.randn(4, model.input_samples))
    expected = 25.0 * cosine_similarity(emb.numpy(), model.head.classify.weight.detach().numpy())
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert model.cosine_scale() == 25.0 and LFCCResNet18(**LFCC_TINY).cosine_scale() is None


def test_linear_lfcc_resnet18_keeps_its_checkpoint_layout():
    """Checkpoints trained before the option load into the default (linear) head: same names, same shapes."""
    names = {k: tuple(v.shape) for k, v in LFCCResNet18().state_dict().items() if k.startswith("head.")}
    assert names == {"head.embed.weight": (256, 512), "head.embed.bias": (256,),
                     "head.classify.1.weight": (NUM_CLASSES, 256), "head.classify.1.bias": (NUM_CLASSES,)}


# lfcc_resnet18/conf/paper.yaml's digest at cc6fefb, before it named its classifier and margin
LFCC_PAPER_BEFORE = "fcafcb1ea684869cb675a1b150f56ad2f82b1d211b96fa541de3594ba3395705"


def test_lfcc_paper_config_keeps_its_digest():
    """paper.yaml writes out the linear head and no margin: its trained systems stay current."""
    from systems.common.train_inputs import earlier_config_digest, fits_config

    paper = load_config(ROOT / "systems/lfcc_resnet18/conf/paper.yaml")
    assert paper.model["classifier"] == "linear" and paper.train.am_margin == 0.0
    # the digest earlier kits wrote into checkpoints; the current one leaves score.batch_size out (fits_config takes both)
    assert earlier_config_digest(paper) == LFCC_PAPER_BEFORE and fits_config(LFCC_PAPER_BEFORE, paper)


def test_margin_on_a_linear_lfcc_resnet18_is_refused(tiny_prepared, tiny_corpus, tmp_path):
    cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml",
                      {"model.classifier": "linear", "train.am_margin": 0.2, "train.epochs": 1,
                       "train.bf16": False, "augment.musan": str(tiny_corpus / "musan_demo")})
    with pytest.raises(KitError, match="lfcc_resnet18 has no cosine classifier") as err:
        train(cfg, tiny_prepared, tmp_path / "exp", torch.device("cpu"))
    assert "\n" not in str(err.value)


NOT_COMBINED = "not combined with train.regmixup_alpha or train.logitnorm_tau"


@pytest.mark.parametrize("overrides, message", [
    ({"model.classifier": "linear", "train.am_margin": 0.2}, "rawnet2 has no cosine classifier"),
    ({"train.am_margin": 0.2, "train.logitnorm_tau": 0.1}, NOT_COMBINED),
    ({"train.am_margin": 0.2, "train.regmixup_alpha": 10.0}, NOT_COMBINED),
])
def test_margin_refusals_come_before_training(overrides, message, tiny_prepared, tiny_corpus, tmp_path):
    with pytest.raises(KitError, match=message) as err:
        train(tiny_cosine(tiny_corpus, **overrides), tiny_prepared, tmp_path / "exp", torch.device("cpu"))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "exp").glob("ckpt/CKPT*"))  # refused before the first epoch


def test_option_off_keeps_earlier_checkpoints_current():
    """With the linear head and no margin, rawnet2's configs hash as before the options existed,
    written out or not: demo.yaml as 28ff175 computed it (test_regmixup.py), paper.yaml as ecc7d2b
    (the last commit without the keys) did. The cosine head retrains, and so does the margin."""
    from systems.common.train_inputs import earlier_config_digest as config_digest
    from systems.common.train_inputs import fits_config

    # the digest earlier kits wrote into checkpoints; the current one leaves score.batch_size out (fits_config takes both)
    plain = config_digest(load_config(CONFIG, LINEAR_HEAD))
    assert plain == "deeaceeacd6f55687218abaf42750f612959cf05627db01b3c0ece6319289a83"
    assert fits_config(plain, load_config(CONFIG, LINEAR_HEAD))
    assert config_digest(load_config(ROOT / "systems/rawnet2/conf/paper.yaml")) == PAPER_BEFORE
    cosine = config_digest(load_config(CONFIG, {"train.am_margin": 0.0}))
    margin = config_digest(load_config(CONFIG))
    assert len({plain, cosine, margin}) == 3


def test_cosine_rawnet2_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    model = RawNet2(channels=(8, 16), gru_hidden=16, gru_layers=1, classifier="cosine").eval()
    export_model(model, "rawnet2", tmp_path / "model.onnx")
    wave = torch.randn(3, model.input_samples)
    logits, emb = OnnxSystem(tmp_path / "model.onnx")(wave.numpy())
    with torch.no_grad():
        ref_logits, ref_emb = model(wave)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-3)
    np.testing.assert_allclose(emb, ref_emb.numpy(), atol=1e-3)
    assert np.abs(logits).max() <= 30.0 + 1e-3  # s·cos is bounded by s
