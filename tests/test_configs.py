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
    """demo_long.yaml is a full copy of demo.yaml (configs do not inherit): only the schedule and the
    training layout (channels_last: the same function, another float order) may differ, so a change
    to demo.yaml's model, augmentation or scoring must reach both."""
    long, demo = load_config(path).to_dict(), load_config(path.with_name("demo.yaml")).to_dict()
    schedule = {"epochs", "lr_schedule", "warmup_epochs", "channels_last"}
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


@pytest.mark.parametrize("mutation, message", [
    ({"system": ["lfcc_resnet18"]}, "unknown system"),
    ({"train": {"epochs": 0}}, "must be positive"),
    ({"train": {"betas": [0.9]}}, "train.betas"),
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"grad_clip": -1.0}}, "train.grad_clip"),
    ({"train": {"seed": -1}}, "train.seed"),
    ({"augment": {"snr_db": [30, 5]}}, "snr_db"),
    ({"augment": {"snr_db": [5]}}, "snr_db"),
    ({"augment": {"babble_speakers": [7, 0]}}, "babble_speakers"),
    ({"augment": {"codecs": ["nonsense"]}}, "unknown codec"),
    ({"model": {"segment_frames": "abc"}}, "model.segment_frames"),
])
def test_bad_values_are_one_line_errors_naming_the_file(tmp_path, mutation, message):
    """Values that would crash training later (or train something else than the file says) are
    refused when the config is read, in one line that names the file."""
    raw = yaml.safe_load((ROOT / "systems/lfcc_resnet18/conf/demo.yaml").read_text())
    for k, v in mutation.items():
        if isinstance(v, dict):
            raw[k].update(v)
        else:
            raw[k] = v
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(KitError, match=message) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_yaml_keys_given_twice_are_refused_and_exponents_are_numbers(tmp_path):
    """PyYAML alone keeps the last of two equal keys (a second `train:` replaces the first, every
    train setting silently back at its default) and reads YAML 1.1's `1e-3` as a string."""
    text = (ROOT / "systems/lfcc_resnet18/conf/demo.yaml").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(text + "train:\n  epochs: 500\n")
    with pytest.raises(KitError, match=r"key 'train' given twice \(first on line \d+\)") as err:
        load_config(path)
    assert str(err.value).startswith(str(path))
    path.write_text(text.replace("  epochs:", "  epochs: 12\n  epochs:", 1))
    with pytest.raises(KitError, match="key 'epochs' given twice"):
        load_config(path)
    raw = yaml.safe_load(text)
    raw["train"]["lr"] = "LR"
    path.write_text(yaml.safe_dump(raw).replace("lr: LR", "lr: 1e-3"))
    assert load_config(path).train.lr == pytest.approx(1e-3)
    path.write_bytes(text.encode("utf-8") + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(KitError, match="not UTF-8 text"):
        load_config(path)
