"""The interface every system implements, and the LFCC-segment front half shared by two of them.

A system is an `nn.Module` with
  forward(wave: (B, train_samples) float) -> (logits (B, 7), embedding (B, 256))
  train_samples   length of the training crop (random crop, repeat-padded when shorter)
  view_hop        hop between scoring views; an utterance's logits and embedding are the mean
                  over its `train_samples`-long views (one repeat-padded view when shorter)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from data_prep.features import LFCC
from data_prep.views import sliding_windows

NUM_CLASSES = 7
EMBEDDING_DIM = 256


class System(nn.Module):
    train_samples: int
    view_hop: int

    def views(self, x: np.ndarray) -> np.ndarray:
        return sliding_windows(x, self.train_samples, self.view_hop)


class EmbeddingHead(nn.Module):
    """pooled features → Linear → 256-d embedding; ReLU → Linear → 7 logits (two FC layers, seed 004)."""

    def __init__(self, in_dim: int, embedding_dim: int = EMBEDDING_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.embed = nn.Linear(in_dim, embedding_dim)
        self.classify = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, num_classes))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(pooled)
        return self.classify(emb), emb


class LFCCSegmentSystem(System):
    """LFCC (1, 60, segment_frames) images; utterance score = mean over segments with hop `segment_hop`
    frames (seed 004 SE-Res2Net: 400-frame segments, hop 200)."""

    def __init__(self, lfcc_preset: str = "res2net", segment_frames: int = 400, segment_hop: int = 200):
        super().__init__()
        self.lfcc = LFCC(lfcc_preset)
        hop = self.lfcc.cfg.hop_length
        self.segment_frames = segment_frames
        self.train_samples = (segment_frames - 1) * hop  # centred STFT: 1 + samples // hop frames
        self.view_hop = segment_hop * hop

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.lfcc(wave)[..., : self.segment_frames]  # (B, 60, 400)
        return feats.unsqueeze(1)  # (B, 1, 60, 400)
