"""LFCC-ResNet18: the organisers' ADD 2023 Track 3 baseline (S06 with a softmax threshold, S07 with
OpenMax; Yi et al., ADD 2023, and Yan et al., seed 000 §IV).

Standard ResNet18 (He et al., 2016; BasicBlock [2, 2, 2, 2], 64–512 channels, 7×7/2 stem with
3×3/2 max-pool) with a 1-channel LFCC input, adaptive average pooling, a 256-d embedding layer
and a 7-way classifier (`model.classifier`: seed 004's linear one, or cosine for train.am_margin).
"""
from __future__ import annotations

import torch
from torch import nn

from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, EmbeddingHead, LFCCSegmentSystem


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class LFCCResNet18(LFCCSegmentSystem):
    def __init__(self, num_classes: int = NUM_CLASSES, embedding_dim: int = EMBEDDING_DIM,
                 lfcc_preset: str = "res2net", segment_frames: int = 400,
                 blocks: tuple[int, ...] = (2, 2, 2, 2), channels: tuple[int, ...] = (64, 128, 256, 512),
                 classifier: str = "linear", cosine_scale: float = 30.0):
        super().__init__(lfcc_preset, segment_frames)
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 7, 2, 3, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, in_ch = [], channels[0]
        for i, (n, ch) in enumerate(zip(blocks, channels)):
            for j in range(n):
                layers.append(BasicBlock(in_ch, ch, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = ch
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = EmbeddingHead(in_ch, embedding_dim, num_classes, classifier, cosine_scale)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(self.features(wave))  # (B, 64, 15, 100) for a (1, 60, 400) input
        x = self.layers(x)  # (B, 512, 2, 13)
        return self.head(self.pool(x).flatten(1))
