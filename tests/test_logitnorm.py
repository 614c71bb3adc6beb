"""LogitNorm training (train.logitnorm_tau): the loss against the authors' code and sklearn's log
loss, through the training step alone and with RegMixup; the option's config and digest rules; the
systems that refuse the default loss's options (LogitNorm, RegMixup)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.metrics import log_loss

from core.errors import KitError
from systems.common.base import logitnorm_cross_entropy
from systems.common.config import load_config
from systems.common.engine import TrainingStep, train
from systems.common.train_inputs import config_digest

from .conftest import ROOT, TINY_SSL
from .test_engine import latest_weights, tiny_config
from .test_regmixup import BATCH, LINEAR_HEAD, RecordingLinear, recovered_mix

FIXTURE = ROOT / "tests/fixtures/logitnorm_reference/logitnorm_reference.npz"
CLASSES = list(range(7))


def normalised_log_loss(logits: np.ndarray, labels: np.ndarray, tau: float) -> float:
    """sklearn's mean log loss of the softmax of the rows scaled to norm 1/τ."""
    rows = logits / (np.linalg.norm(logits, axis=1, keepdims=True) * tau)
    return log_loss(labels, softmax(rows, axis=1), labels=CLASSES)


def test_loss_equals_the_authors_code():
    ref = np.load(FIXTURE)
    for i, tau in enumerate(ref["tau"]):
        for b, (logits, labels) in enumerate(zip(ref["logits"], ref["labels"])):
            got = logitnorm_cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), float(tau))
            assert float(got) == pytest.approx(ref["loss"][i, b], rel=2e-6), (tau, b)


def test_loss_ignores_the_rows_scale_and_is_plain_cross_entropy_when_off():
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((32, 7)) * 4, rng.integers(0, 7, 32)
    scale = rng.uniform(0.1, 50, size=(32, 1))
    t, y = torch.from_numpy(logits), torch.from_numpy(labels)
    on = float(logitnorm_cross_entropy(t, y, 0.04))
    assert on == pytest.approx(normalised_log_loss(logits, labels, 0.04), rel=1e-5)
    assert float(logitnorm_cross_entropy(t * torch.from_numpy(scale), y, 0.04)) == pytest.approx(on, rel=1e-5)
    off = float(logitnorm_cross_entropy(t, y, 0.0))
    assert off == pytest.approx(log_loss(labels, softmax(logits, axis=1), labels=CLASSES), rel=1e-5)
    assert float(logitnorm_cross_entropy(t * torch.from_numpy(scale), y, 0.0)) != pytest.approx(off, rel=1e-3)


def test_training_step_trains_on_the_normalised_logits_alone_and_with_regmixup():
    torch.manual_seed(0)
    model = RecordingLinear()
    wave, labels = torch.eye(BATCH), torch.tensor([0, 1, 2, 3, 4, 5])
    w = model.weight.detach().numpy().astype(np.float64)
    y = labels.numpy()
    loss, logits = TrainingStep(model, logitnorm_tau=0.04)(wave, labels, torch.zeros(BATCH), 0.0)
    assert float(loss.detach()) == pytest.approx(normalised_log_loss(np.eye(BATCH) @ w, y, 0.04), rel=1e-5)
    assert torch.allclose(logits, wave @ model.weight)  # the logits stay as the network gives them
    for _ in range(3):
        loss, _ = TrainingStep(model, regmixup_alpha=10.0, logitnorm_tau=0.1)(wave, labels, torch.zeros(BATCH), 0.0)
        lam, pairing = recovered_mix(model.seen)
        lam = 0.5 if lam is None else lam
        clean, mixed = model.seen[:BATCH].numpy() @ w, model.seen[BATCH:].numpy() @ w
        expected = (normalised_log_loss(clean, y, 0.1) + lam * normalised_log_loss(mixed, y, 0.1)
                    + (1 - lam) * normalised_log_loss(mixed, y[pairing], 0.1))
        assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_the_option_reaches_training(tiny_prepared, tiny_corpus, tmp_path):
    # the linear head: LFCC-ResNet18's demo head has the margin, which LogitNorm does not combine with
    train(tiny_config(tiny_corpus, **LINEAR_HEAD, **{"train.epochs": 1}), tiny_prepared, tmp_path / "plain",
          torch.device("cpu"))
    train(tiny_config(tiny_corpus, **LINEAR_HEAD, **{"train.epochs": 1, "train.logitnorm_tau": 0.04}), tiny_prepared,
          tmp_path / "logitnorm", torch.device("cpu"))
    a, b = latest_weights(tmp_path / "plain")[1], latest_weights(tmp_path / "logitnorm")[1]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("option, value", [("regmixup_alpha", 10.0), ("logitnorm_tau", 0.04)])
def test_system_with_its_own_loss_refuses_the_default_loss_options(option, value, tiny_prepared, tiny_corpus,
                                                                    tmp_path):
    cfg = load_config(ROOT / "systems/w2v_asdg/conf/demo.yaml",
                      {"model.input_samples": 16000, "model.random_init": dict(TINY_SSL),
                       f"train.{option}": value, "train.num_workers": 0,
                       "augment.musan": str(tiny_corpus / "musan_demo")})
    with pytest.raises(KitError, match=rf"{option} {value}: w2v_asdg trains with its own loss"):
        train(cfg, tiny_prepared, tmp_path / "exp", torch.device("cpu"))
    assert not (tmp_path / "exp" / "ckpt").exists() or not any((tmp_path / "exp" / "ckpt").iterdir())


def test_negative_tau_is_a_config_error():
    with pytest.raises(KitError, match="logitnorm_tau -0.1: must be >= 0"):
        load_config(ROOT / "systems/rawnet2/conf/demo.yaml", {"train.logitnorm_tau": -0.1})


def test_option_off_keeps_earlier_checkpoints_current():
    """Off, the option leaves the digest where it was before it existed (the value pinned in
    test_regmixup.py); on, it retrains."""
    from systems.common.train_inputs import earlier_config_digest

    # the digest earlier kits wrote into checkpoints; the current one leaves score.batch_size out (fits_config takes both)
    path = ROOT / "systems/rawnet2/conf/demo.yaml"
    off = earlier_config_digest(load_config(path, LINEAR_HEAD))
    assert off == "deeaceeacd6f55687218abaf42750f612959cf05627db01b3c0ece6319289a83"
    assert earlier_config_digest(load_config(path, dict(LINEAR_HEAD, **{"train.logitnorm_tau": 0.04}))) != off
    assert config_digest(load_config(path, dict(LINEAR_HEAD, **{"train.logitnorm_tau": 0.04}))) != \
        config_digest(load_config(path, LINEAR_HEAD))
