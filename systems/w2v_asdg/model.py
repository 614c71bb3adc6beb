"""W2V-ASDG adapted to 7-way algorithm recognition (Xie et al., "Learning a self-supervised
domain-invariant feature representation for generalized audio deepfake detection", Interspeech
2023; seed 003). The official code was not published; this follows the paper and SSDG (Jia et al.,
CVPR 2020), its basis, as specified in shared/spec/systems.md:

  frozen wav2vec2-XLS-R → last_hidden_state (64,600 samples → 201 × 1024)
  → LCNN (the ASVspoof LFCC-LCNN conv stack with max-feature-map, four 2×2 max-pools)
  → one transformer block whose self-attention only sees ±w frames (w = 8, 8 heads)
  → mean pooling → 256-d embedding → weight-normalised FC → 7 logits
Training adds a single-side adversarial domain discriminator on real utterances only, behind a
gradient-reversal layer with coefficient 2/(1 + e^(−10p)) − 1 (p = training progress), over the
augmentation conditions as domains, and an asymmetric batch-hard triplet loss (margin 0.1) in
which all real utterances share one label: loss = CE + 0.1·adversarial + 0.1·triplet.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from data_prep.augment import DOMAINS
from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, System
from systems.common.ssl import build_backbone


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −coefficient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def grl_coefficient(progress: float) -> float:
    """SSDG/DANN schedule 2/(1 + exp(−10p)) − 1: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class MaxFeatureMap(nn.Module):
    """Split the channels in two halves and keep the element-wise maximum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.max(a, b)


def mfm_conv(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2), MaxFeatureMap())


class LCNN(nn.Module):
    """(B, 1, T, F) → (B, 32, T/16, F/16)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            mfm_conv(1, 64, 5), nn.MaxPool2d(2),  # 32 ch
            mfm_conv(32, 64, 1), nn.BatchNorm2d(32), mfm_conv(32, 96, 3), nn.MaxPool2d(2), nn.BatchNorm2d(48),
            mfm_conv(48, 96, 1), nn.BatchNorm2d(48), mfm_conv(48, 128, 3), nn.MaxPool2d(2),
            mfm_conv(64, 128, 1), nn.BatchNorm2d(64), mfm_conv(64, 64, 3), nn.BatchNorm2d(32),
            mfm_conv(32, 64, 1), nn.BatchNorm2d(32), mfm_conv(32, 64, 3), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def local_attention_mask(length: int, window: int, device) -> torch.Tensor:
    """(length, length) boolean mask, True where attention is NOT allowed (|i − j| > window)."""
    idx = torch.arange(length, device=device)
    return (idx[None, :] - idx[:, None]).abs() > window


class LocalTransformerBlock(nn.Module):
    """Pre-norm transformer block whose self-attention is restricted to ±window frames."""

    def __init__(self, dim: int, heads: int = 8, window: int = 8, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = local_attention_mask(x.shape[1], self.window, x.device)
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])
        return x + self.drop(self.ff(self.norm2(x)))


def batch_hard_triplet(emb: torch.Tensor, groups: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on L2-normalised embeddings (Euclidean): for each anchor, its
    farthest same-group and nearest other-group sample. 0 when no anchor has both."""
    z = F.normalize(emb.float(), dim=1)
    dist = torch.cdist(z, z)
    same = groups[:, None] == groups[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return dist.sum() * 0.0
    hardest_pos = torch.where(pos_mask, dist, torch.full_like(dist, -1.0)).max(1).values
    hardest_neg = torch.where(neg_mask, dist, torch.full_like(dist, float("inf"))).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


class W2VASDG(System):
    def __init__(self, num_classes: int = NUM_CLASSES, embedding_dim: int = EMBEDDING_DIM,
                 ssl_ckpt: str | None = None, random_init: dict | None = None, input_samples: int = 64600,
                 attention_window: int = 8, attention_heads: int = 8, model_dim: int = 256,
                 adv_weight: float = 0.1, triplet_weight: float = 0.1, triplet_margin: float = 0.1,
                 feature_cache_copies: int = 0):
        super().__init__()
        self.feature_cache_copies = feature_cache_copies
        self.frontend, self.is_random = build_backbone(ssl_ckpt, "wav2vec2", random_init)
        self.frontend.eval()
        for p in self.frontend.parameters():
            p.requires_grad = False
        self.input_samples = input_samples
        hidden = self.frontend.config.hidden_size
        self.lcnn = LCNN()
        self.proj = nn.Linear(32 * (hidden // 16), model_dim)
        self.block = LocalTransformerBlock(model_dim, attention_heads, attention_window)
        self.embed = nn.Linear(model_dim, embedding_dim)
        self.classifier = nn.utils.parametrizations.weight_norm(nn.Linear(embedding_dim, num_classes))
        self.discriminator = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.ReLU(),
                                           nn.Linear(embedding_dim, len(DOMAINS)))
        self.adv_weight, self.triplet_weight, self.triplet_margin = adv_weight, triplet_weight, triplet_margin

    def may_skip_parameters(self) -> bool:
        return True  # the domain discriminator has no loss term in a batch without a real utterance

    def train(self, mode: bool = True):
        super().train(mode)
        self.frontend.eval()  # frozen: dropout and normalisation statistics stay in inference mode
        return self

    @torch.no_grad()
    def ssl_features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.frontend(input_values=wave).last_hidden_state  # (B, 201, 1024) for 64,600 samples

    def backend(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.lcnn(feats.unsqueeze(1))  # (B, 32, T/16, H/16)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T/16, 32·H/16)
        x = self.block(self.proj(x))  # (B, T/16, model_dim)
        return self.embed(x.mean(dim=1))  # (B, 256)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.backend(self.ssl_features(wave))
        return self.classifier(emb), emb

    def training_loss(self, wave: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor,
                      progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """CE + adv_weight·(domain CE on real utterances through the GRL) + triplet_weight·triplet.
        `wave` may be cached front-end features (B, frames, hidden) instead of audio (B, samples)."""
        feats = wave.float() if wave.dim() == 3 else self.ssl_features(wave)
        emb = self.backend(feats)
        logits = self.classifier(emb)
        loss = F.cross_entropy(logits.float(), labels)
        real = labels == 0
        if real.any():
            reversed_emb = GradientReversal.apply(emb[real], grl_coefficient(progress))
            adv = F.cross_entropy(self.discriminator(reversed_emb).float(), domains[real])
            loss = loss + self.adv_weight * adv
        # asymmetric: every real utterance shares group 0, each fake algorithm its own
        loss = loss + self.triplet_weight * batch_hard_triplet(emb, labels, self.triplet_margin)
        return loss, logits

    def wrap_training_data(self, dataset, cache_dir, device):
        """With `feature_cache_copies` > 0, training reads front-end features from an on-disk cache
        of that many augmented copies of every training crop (the front-end is frozen, so they
        never change); epoch e uses copy (e − 1) mod copies."""
        if self.feature_cache_copies <= 0:
            return dataset
        from systems.w2v_asdg.cache import CachedFeatures, build_feature_cache

        folder = build_feature_cache(self, dataset, cache_dir, self.feature_cache_copies, device)
        return CachedFeatures(folder)
