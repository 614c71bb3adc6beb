"""Fine-tuned self-supervised speech models (HuBERT, wav2vec 2.0) as 7-way recognisers.

Seed 004 §3.3: chinese-hubert-large followed by two fully connected layers, batch 24, 40 epochs.
Here: `AutoModel.from_pretrained(<local dir>)` (never a download), mean pooling of the last hidden
state over frames → FC (hidden → 256, the embedding) → ReLU → FC (256 → 7). The CNN feature
encoder is frozen by default; layer-wise learning-rate decay and gradient checkpointing are options.

With no checkpoint directory a small randomly initialised model is built from `random_init`; the
training log and the report say loudly that its results are not meaningful.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import fail
from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, EmbeddingHead, System

RANDOM_INIT_WARNING = ("no SSL checkpoint given (model.ssl_ckpt): using a small RANDOMLY INITIALISED {kind} model; "
                       "its results are NOT meaningful")


def build_backbone(ssl_ckpt: str | None, kind: str, random_init: dict | None) -> tuple[nn.Module, bool]:
    """(model, is_random). Loads only from local files."""
    from transformers import AutoModel, HubertConfig, Wav2Vec2Config

    if ssl_ckpt:
        path = Path(ssl_ckpt).expanduser()
        if not (path / "config.json").is_file():
            fail(f"{path}: not a transformers checkpoint folder (no config.json); give the local directory "
                 "of e.g. chinese-hubert-large or wav2vec2-xls-r-300m")
        try:
            return AutoModel.from_pretrained(str(path), local_files_only=True), False
        except Exception as err:  # transformers raises many types for a broken folder
            fail(f"{path}: cannot load the SSL checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})")
    if random_init is None:
        fail(f"model.ssl_ckpt is not set: give the local {kind} checkpoint directory (run_track3.sh "
             f"--{kind}_ckpt DIR), or a model.random_init config for a random model")
    configs = {"hubert": HubertConfig, "wav2vec2": Wav2Vec2Config}
    if kind not in configs:
        fail(f"model.kind {kind!r}: valid are {sorted(configs)}")
    warnings.warn(RANDOM_INIT_WARNING.format(kind=kind))
    print(f"[ssl] WARNING: {RANDOM_INIT_WARNING.format(kind=kind)}")
    return AutoModel.from_config(configs[kind](**random_init)), True


class SSLFineTune(System):
    def __init__(self, num_classes: int = NUM_CLASSES, embedding_dim: int = EMBEDDING_DIM,
                 ssl_ckpt: str | None = None, kind: str = "hubert", random_init: dict | None = None,
                 input_samples: int = 64000, freeze_feature_encoder: bool = True,
                 gradient_checkpointing: bool = False, layer_lr_decay: float = 1.0, head_lr_scale: float = 1.0,
                 normalise_input: bool = True):
        super().__init__()
        self.ssl, self.is_random = build_backbone(ssl_ckpt, kind, random_init)
        self.input_samples = input_samples
        self.layer_lr_decay, self.head_lr_scale = layer_lr_decay, head_lr_scale
        self.normalise_input = normalise_input
        if freeze_feature_encoder:
            for p in self.ssl.feature_extractor.parameters():
                p.requires_grad = False
        if gradient_checkpointing:
            # transformers 5 renamed it (the old name warns, and goes in v6); earlier 5.x have the old one only
            enable = getattr(self.ssl, "activation_checkpointing_enable", None) or self.ssl.gradient_checkpointing_enable
            enable()
        self.head = EmbeddingHead(self.ssl.config.hidden_size, embedding_dim, num_classes)

    def may_skip_parameters(self) -> bool:
        return True  # the encoders drop whole layers at random in training (config.layerdrop)

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Layer-wise learning rates: the top transformer layer gets lr, each one below it
        lr·decay more; the CNN encoder and projection get the lowest; the head lr·head_lr_scale."""
        layers = list(self.ssl.encoder.layers)
        n = len(layers)
        groups, seen = [], set()

        def add(params, scale):
            params = [p for p in params if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, "lr": lr * scale})

        add(self.head.parameters(), self.head_lr_scale)
        for i, layer in enumerate(layers):
            add(layer.parameters(), self.layer_lr_decay ** (n - 1 - i))
        add(self.ssl.parameters(), self.layer_lr_decay ** n)
        return groups

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalise_input:  # the wav2vec2/HuBERT feature extractors' zero-mean, unit-variance input
            wave = (wave - wave.mean(dim=1, keepdim=True)) / (wave.std(dim=1, keepdim=True) + 1e-7)
        hidden = self.ssl(input_values=wave).last_hidden_state  # (B, frames, hidden)
        return self.head(hidden.mean(dim=1))
