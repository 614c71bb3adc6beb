"""SSL fine-tunes load a local checkpoint through the user's path, freeze what they should, and
never download anything."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from core.errors import KitError
from systems.common.config import load_config
from systems.common.engine import make_optimizer
from systems.common.inference import build_model
from systems.common.ssl import SSLFineTune

from .conftest import ROOT


@pytest.mark.parametrize("system, kind", [("hubert_ft", "hubert"), ("wav2vec2_ft", "wav2vec2")])
def test_paper_config_loads_the_saved_checkpoint(tiny_ssl_checkpoints, system, kind):
    ckpt = tiny_ssl_checkpoints[kind]
    cfg = load_config(ROOT / f"systems/{system}/conf/paper.yaml", {"model.ssl_ckpt": str(ckpt)})
    model = build_model(cfg)
    assert not model.is_random
    assert cfg.model["gradient_checkpointing"]  # paper.yaml: on, so
    on = getattr(type(model.ssl), "is_activation_checkpointing", None) or type(model.ssl).is_gradient_checkpointing
    assert on.fget(model.ssl)
    saved = AutoModel.from_pretrained(str(ckpt), local_files_only=True).state_dict()
    for name, value in model.ssl.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)

    model.train()
    logits, emb = model(torch.randn(2, 16000))
    assert logits.shape == (2, 7) and emb.shape == (2, 256)
    F.cross_entropy(logits, torch.tensor([1, 5])).backward()
    assert all(p.grad is None for p in model.ssl.feature_extractor.parameters())
    assert any(p.grad is not None for p in model.ssl.encoder.parameters())


def test_missing_or_broken_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(KitError, match="ssl_ckpt is not set"):
        build_model(load_config(ROOT / "systems/hubert_ft/conf/paper.yaml"))
    with pytest.raises(KitError, match="not a transformers checkpoint"):
        SSLFineTune(ssl_ckpt=str(tmp_path), kind="hubert")


def test_random_init_is_flagged(capsys):
    with pytest.warns(UserWarning, match="NOT meaningful"):
        model = build_model(load_config(ROOT / "systems/hubert_ft/conf/demo.yaml"))
    assert model.is_random
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out


def test_layerwise_learning_rates(tiny_ssl_checkpoints):
    model = SSLFineTune(ssl_ckpt=str(tiny_ssl_checkpoints["hubert"]), layer_lr_decay=0.5, head_lr_scale=10.0)
    groups = model.optimizer_groups(1e-3)
    top_layer = list(model.ssl.encoder.layers)[-1]
    bottom_layer = list(model.ssl.encoder.layers)[0]

    def lr_of(param):
        return next(g["lr"] for g in groups if any(p is param for p in g["params"]))

    assert lr_of(next(model.head.parameters())) == pytest.approx(1e-2)
    assert lr_of(next(top_layer.parameters())) == pytest.approx(1e-3)
    assert lr_of(next(bottom_layer.parameters())) == pytest.approx(5e-4)
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable
    assert isinstance(make_optimizer(load_config(ROOT / "systems/hubert_ft/conf/demo.yaml"), model),
                      torch.optim.Adam)


def test_report_flags_random_frontends(tmp_path, tiny_ssl_checkpoints):
    from eval.report import random_frontend_systems

    random_cfg = load_config(ROOT / "systems/hubert_ft/conf/demo.yaml")
    real_cfg = load_config(ROOT / "systems/wav2vec2_ft/conf/paper.yaml",
                           {"model.ssl_ckpt": str(tiny_ssl_checkpoints["wav2vec2"])})
    lfcc_cfg = load_config(ROOT / "systems/lfcc_resnet18/conf/demo.yaml")
    for name, cfg in (("hubert_ft", random_cfg), ("wav2vec2_ft", real_cfg), ("lfcc_resnet18", lfcc_cfg)):
        cfg.save(tmp_path / name / "config.yaml")
    assert random_frontend_systems(tmp_path, ["hubert_ft", "wav2vec2_ft", "lfcc_resnet18"]) == ["hubert_ft"]
