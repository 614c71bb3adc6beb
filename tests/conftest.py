"""Shared fixtures: one tiny demo corpus and its prepared splits, built once per test session."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_SCALE = "0.05"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist with `--dist loadgroup` (tests/run.sh), every test that reads the whole
    tiny recipe runs on one worker, which builds the recipe once instead of once per worker. First,
    so that xdist's own hook sees the group."""
    for item in items:
        if "tiny_recipe" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("tiny_recipe"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker with its group")


def run_module(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "demo"
    run_module("data_prep.demo_corpus", "--out", str(out), "--scale", TINY_SCALE, "--seed", "3")
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    run_module("data_prep.prepare", "--data_root", str(tiny_corpus), "--out", str(out))
    return out


# LFCC-ResNet18 with one block per stage and 8–32 channels: the real code path in seconds
TINY_LFCC_RESNET18 = {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32]}


TINY_SSL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="session")
def tiny_ssl_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random HuBERT and wav2vec2 saved with save_pretrained: stand-ins for a user's local
    chinese-hubert-large / wav2vec2-xls-r-300m directories."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    out = {}
    for kind, (cfg_cls, model_cls) in {"hubert": (HubertConfig, HubertModel),
                                       "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model)}.items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(f"{kind}_ckpt")
        model_cls(cfg_cls(**TINY_SSL)).save_pretrained(path)
        out[kind] = path
    return out


# tiny versions of the default systems for whole-recipe runs
TINY_RECIPE = {
    "lfcc_resnet18": {"model": {"blocks": [1, 1, 1, 1], "channels": [8, 16, 16, 32]}},
    "rawnet2": {"model": {"channels": [8, 16], "gru_hidden": 32, "gru_layers": 1}},
}


def tree_digest(folder: Path, skip: str) -> dict[str, str]:
    """The SHA-256 of every file below `folder`, except below folders named `skip`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and skip not in p.relative_to(folder).parts}


def run_recipe(tiny_corpus: Path, work: Path, *extra: str, check: bool = True):
    """`run_track3.sh` from stage 2 (or a later `--stage` in `extra`) on the tiny corpus with the
    tiny configs in `work/conf`: its console output, or with `check=False` the finished process."""
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["bash", str(ROOT / "run_track3.sh"), "--skip_setup", "--stage", "2", "--data_root", str(tiny_corpus),
           "--musan", str(tiny_corpus / "musan_demo"), "--test_key", str(tiny_corpus / "keys" / "test_label.txt"),
           "--exp", str(work / "exp"), "--submission_dir", str(work / "submission"),
           "--conf_dir", str(work / "conf"), "--systems", ",".join(TINY_RECIPE), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="session")
def tiny_recipe(tiny_corpus, tmp_path_factory) -> tuple[Path, str]:
    """The whole recipe run once on the tiny corpus: (work folder, its console output)."""
    work = tmp_path_factory.mktemp("recipe")
    (work / "conf").mkdir()
    for system, changes in TINY_RECIPE.items():
        raw = yaml.safe_load((ROOT / f"systems/{system}/conf/demo.yaml").read_text())
        raw["model"].update(changes["model"])
        raw["train"].update(epochs=2, batch_size=8)
        (work / "conf" / f"{system}.yaml").write_text(yaml.safe_dump(raw))
    return work, run_recipe(tiny_corpus, work)
