"""Every system config loads strictly, uses only known keys, and builds its model."""
from __future__ import annotations

import pytest
import torch
import yaml

from core.errors import KitError
from systems import REGISTRY
from systems.common.config import load_config
from systems.common.inference import build_model

from .conftest import ROOT

CONFIGS = sorted((ROOT / "systems").glob("*/conf/*.yaml"))


def test_every_system_has_demo_and_paper_configs():
    for name in REGISTRY:
        assert (ROOT / "systems" / name / "conf" / "demo.yaml").is_file(), name
        assert (ROOT / "systems" / name / "conf" / "paper.yaml").is_file(), name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_config_dry_runs(path, tiny_ssl_checkpoints):
    raw_model = yaml.safe_load(path.read_text()).get("model") or {}
    overrides = {}
    if "ssl_ckpt" in raw_model and raw_model.get("random_init") is None:
        # the user's local checkpoint directory, here a tiny saved one
        overrides["model.ssl_ckpt"] = str(tiny_ssl_checkpoints[raw_model.get("kind", "wav2vec2")])
    cfg = load_config(path, overrides)
    assert cfg.system == path.parent.parent.name
    model = build_model(cfg)
    wave = torch.randn(1, model.input_samples)
    model.eval()
    with torch.no_grad():
        logits, emb = model(wave)
    assert logits.shape == (1, 7) and emb.shape == (1, 256)
    # every key written in the YAML survives into the resolved config (none silently dropped)
    raw = yaml.safe_load(path.read_text())
    resolved = cfg.to_dict()
    for section, values in raw.items():
        if isinstance(values, dict):
            assert set(values) <= set(resolved[section]), section


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_demo_and_paper_share_keys(path):
    other = path.with_name("paper.yaml" if path.name == "demo.yaml" else "demo.yaml")
    if not other.is_file():
        pytest.skip("no sibling")
    a, b = yaml.safe_load(path.read_text()), yaml.safe_load(other.read_text())
    assert {k: set(v) if isinstance(v, dict) else None for k, v in a.items()} == \
           {k: set(v) if isinstance(v, dict) else None for k, v in b.items()}


@pytest.mark.parametrize("path", sorted((ROOT / "systems").glob("*/conf/demo_long.yaml")),
                         ids=lambda p: p.parent.parent.name)
def test_demo_long_is_demo_with_a_longer_schedule(path):
    """demo_long.yaml is a full copy of demo.yaml (configs do not inherit): only the schedule may
    differ, so a change to demo.yaml's model, augmentation or scoring must reach both."""
    long, demo = load_config(path).to_dict(), load_config(path.with_name("demo.yaml")).to_dict()
    schedule = {"epochs", "lr_schedule", "warmup_epochs"}
    for section in (long.keys() | demo.keys()) - {"train"}:
        assert long.get(section) == demo.get(section), section
    assert {k: v for k, v in long["train"].items() if k not in schedule} == \
           {k: v for k, v in demo["train"].items() if k not in schedule}
    assert long["train"]["epochs"] > demo["train"]["epochs"]


@pytest.mark.parametrize("mutation, message", [
    ({"train": {"epoch": 3}}, "unknown key"),
    ({"model": {"layers": 3}}, "unknown model key"),
    ({"extra": {}}, "unknown section"),
    ({"system": "nope"}, "unknown system"),
    ({"train": {"optimizer": "lbfgs"}}, "valid are adam"),
])
def test_unknown_keys_are_errors(tmp_path, mutation, message):
    raw = yaml.safe_load((ROOT / "systems/lfcc_resnet18/conf/demo.yaml").read_text())
    for k, v in mutation.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k].update(v)
        else:
            raw[k] = v
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(KitError, match=message):
        load_config(path)
