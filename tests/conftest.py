"""Shared fixtures: one tiny demo corpus and its prepared splits, built once per test session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_SCALE = "0.05"


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
