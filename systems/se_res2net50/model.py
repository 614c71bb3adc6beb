"""SE-Res2Net50 on LFCC (Li et al., "Replay and synthetic speech detection with Res2Net
architecture", ICASSP 2021; reference code lixucuhk/ASV-anti-spoofing-with-Res2Net), as used by
seed 004 §3.3.

Res2Net-50 v1b layout: blocks [3, 4, 6, 3], base width 26, scale 4, expansion 2, a stem of three
3×3 convolutions (1→16→16→16) without max-pooling, stage planes 16/32/64/128 with strides 1/2/2/2,
squeeze-and-excitation (reduction 16) in every bottleneck. The 256-d globally pooled output is the
embedding; a Linear layer gives the 7 logits (924,387 parameters in all).
Input: LFCC (1, 60, 400) segments; utterance score = mean over segments with hop 200.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from systems.common.base import NUM_CLASSES, LFCCSegmentSystem


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                  nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x.mean(dim=(2, 3)))  # (B, C)
        return x * weights[:, :, None, None]


class SERes2NetBottleneck(nn.Module):
    """1×1 → `scale` splits (3×3 convs, hierarchical within a stage, parallel in its first block)
    → 1×1 → BN → SE → + shortcut → ReLU."""

    expansion = 2

    def __init__(self, in_ch: int, planes: int, stride: int = 1, first_in_stage: bool = False,
                 base_width: int = 26, scale: int = 4, se_reduction: int = 16):
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0))
        out_ch = planes * self.expansion
        self.width, self.scale, self.first_in_stage = width, scale, first_in_stage
        self.reduce = nn.Sequential(nn.Conv2d(in_ch, width * scale, 1, bias=False), nn.BatchNorm2d(width * scale),
                                    nn.ReLU(inplace=True))
        self.split_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for _ in range(scale - 1))
        # the untouched last split must match the strided ones in a stage's first block
        self.last_split_pool = nn.AvgPool2d(3, stride, 1) if first_in_stage else nn.Identity()
        self.expand = nn.Sequential(nn.Conv2d(width * scale, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.se = SqueezeExcitation(out_ch, se_reduction)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                                          nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.split(self.reduce(x), self.width, dim=1)
        outs = []
        carry = None
        for i, conv in enumerate(self.split_convs):
            inp = splits[i] if (i == 0 or self.first_in_stage) else carry + splits[i]
            carry = conv(inp)
            outs.append(carry)
        outs.append(self.last_split_pool(splits[-1]))
        out = self.se(self.expand(torch.cat(outs, dim=1)))
        return self.relu(out + self.shortcut(x))


class SERes2Net50(LFCCSegmentSystem):
    def __init__(self, num_classes: int = NUM_CLASSES, lfcc_preset: str = "res2net", segment_frames: int = 400,
                 blocks: tuple[int, ...] = (3, 4, 6, 3), base_width: int = 26,
                 scale: int = 4, se_reduction: int = 16):
        super().__init__(lfcc_preset, segment_frames)
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        stages, in_ch = [], 16
        for planes, n, stride in zip((16, 32, 64, 128), blocks, (1, 2, 2, 2)):
            layers = []
            for j in range(n):
                layers.append(SERes2NetBottleneck(in_ch, planes, stride if j == 0 else 1, first_in_stage=(j == 0),
                                                  base_width=base_width, scale=scale, se_reduction=se_reduction))
                in_ch = planes * SERes2NetBottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.embedding_dim = in_ch  # 256: the pooled output is the embedding
        self.classifier = nn.Linear(in_ch, num_classes)

    def trunk(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after the stem and after each stage (for shape checks)."""
        x = self.stem(self.features(wave))  # (B, 16, 60, 400)
        maps = [x]
        for stage in self.stages:  # (B, 32, 60, 400) → (B, 64, 30, 200) → (B, 128, 15, 100) → (B, 256, 8, 50)
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.trunk(wave)[-1].mean(dim=(2, 3))  # (B, 256)
        return self.classifier(emb), emb
