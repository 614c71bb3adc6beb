"""RegMixup training (train.regmixup_alpha): the loss of the mix it actually made, against
sklearn's log loss; its λ against scipy's Beta distribution; resume. The systems that refuse it:
test_logitnorm.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import softmax
from sklearn.metrics import log_loss

from core.errors import KitError
from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, System, regmixup_loss
from systems.common.config import load_config
from systems.common.engine import train

from .conftest import ROOT
from .test_engine import assert_same_weights, latest_weights, tiny_config

BATCH = 6
# rawnet2/conf/demo.yaml with the head every config had before model.classifier existed
LINEAR_HEAD = {"model.classifier": "linear", "train.am_margin": 0.0}


class RecordingLinear(System):
    """Logits linear in the input; keeps the last batch it saw, so that the test reads the mix
    regmixup_loss made instead of re-deriving its random draws."""

    input_samples = BATCH

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(BATCH, NUM_CLASSES, generator=torch.Generator().manual_seed(3)))
        self.seen = None

    def forward(self, wave):
        self.seen = wave.detach().clone()
        return wave @ self.weight, torch.zeros(len(wave), EMBEDDING_DIM)


def recovered_mix(seen: torch.Tensor) -> tuple[float | None, np.ndarray]:
    """λ and the pairing π from the mixed copy of an identity batch, whose row j is
    λ e_j + (1 − λ) e_π(j) (just e_j when π(j) = j; λ is None when every row is its own pair:
    it then shows nowhere, and the loss does not depend on it)."""
    mixed = seen[BATCH:].numpy().astype(np.float64)
    assert np.allclose(mixed.sum(axis=1), 1) and ((mixed > 1e-7).sum(axis=1) <= 2).all()
    own = np.diag(mixed)
    moved = ~np.isclose(own, 1.0)
    lam = float(own[moved][0]) if moved.any() else None
    assert not moved.any() or np.allclose(own[moved], lam)
    others = mixed - np.diag(own)
    pairing = np.where(moved, others.argmax(axis=1), np.arange(BATCH))
    return lam, pairing


def test_loss_is_the_regmixup_objective_of_the_mix_made():
    torch.manual_seed(0)
    model = RecordingLinear()
    wave = torch.eye(BATCH)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    for _ in range(5):
        loss, clean_logits = regmixup_loss(model, wave, labels, alpha=10.0)
        seen = model.seen
        assert torch.equal(seen[:BATCH], wave)  # the clean half first, unchanged
        lam, pairing = recovered_mix(seen)
        lam = 0.5 if lam is None else lam
        assert 0 < lam < 1 and sorted(pairing) == list(range(BATCH))
        w = model.weight.detach().numpy().astype(np.float64)
        p_clean, p_mixed = softmax(seen[:BATCH].numpy() @ w, axis=1), softmax(seen[BATCH:].numpy() @ w, axis=1)
        y, classes = labels.numpy(), list(range(NUM_CLASSES))
        expected = (log_loss(y, p_clean, labels=classes) + lam * log_loss(y, p_mixed, labels=classes)
                    + (1 - lam) * log_loss(y[pairing], p_mixed, labels=classes))
        assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
        assert torch.allclose(clean_logits, (wave @ model.weight).float())


def test_lambda_follows_beta_alpha_alpha():
    torch.manual_seed(1)
    model = RecordingLinear()
    wave, labels = torch.eye(BATCH), torch.zeros(BATCH, dtype=torch.long)
    for alpha in (0.4, 10.0):
        lams = []
        for _ in range(400):
            regmixup_loss(model, wave, labels, alpha)
            lam, _ = recovered_mix(model.seen)
            if lam is not None:
                lams.append(lam)
        assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 1e-3, alpha


def test_regmixup_training_resumes_to_the_uninterrupted_weights(tiny_prepared, tiny_corpus, tmp_path):
    # LFCC-ResNet18's demo head has the margin, which RegMixup's loss does not combine with
    cfg = tiny_config(tiny_corpus, **LINEAR_HEAD, **{"train.epochs": 2, "train.regmixup_alpha": 10.0})
    plain = tiny_config(tiny_corpus, **LINEAR_HEAD, **{"train.epochs": 2})
    train(cfg, tiny_prepared, tmp_path / "whole", torch.device("cpu"))
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"), stop_after_epochs=1)
    train(cfg, tiny_prepared, tmp_path / "resumed", torch.device("cpu"))
    assert_same_weights(latest_weights(tmp_path / "resumed")[1], latest_weights(tmp_path / "whole")[1])
    # the option trains something else: a plain run from the same seed ends elsewhere
    train(plain, tiny_prepared, tmp_path / "plain", torch.device("cpu"))
    a, b = latest_weights(tmp_path / "plain")[1], latest_weights(tmp_path / "whole")[1]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_negative_alpha_is_a_config_error():
    with pytest.raises(KitError, match="regmixup_alpha -1.0: must be >= 0"):
        load_config(ROOT / "systems/rawnet2/conf/demo.yaml", {"train.regmixup_alpha": -1.0})


def test_option_off_keeps_earlier_checkpoints_current():
    """With RegMixup off, a config hashes as it did before the option existed, so a user's trained
    systems are not trained again; switching it on retrains. The digest below is what commit
    28ff175 (the last one without the option) computed for rawnet2/conf/demo.yaml, whose head was
    then the linear one (LINEAR_HEAD); if demo.yaml's other values change on purpose, recompute it."""
    from systems.common.train_inputs import earlier_config_digest as config_digest

    # the digest earlier kits wrote into checkpoints; the current one leaves score.batch_size out (fits_config takes both)
    path = ROOT / "systems/rawnet2/conf/demo.yaml"
    off = config_digest(load_config(path, LINEAR_HEAD))
    assert off == "deeaceeacd6f55687218abaf42750f612959cf05627db01b3c0ece6319289a83"
    assert config_digest(load_config(path, dict(LINEAR_HEAD, **{"train.regmixup_alpha": 10.0}))) != off
