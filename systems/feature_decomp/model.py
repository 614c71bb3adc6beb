"""Feature-decomposition learning with synthesizer feature augmentation (Zhang et al., "Robust
AI-Synthesized Speech Detection Using Feature Decomposition Learning and Synthesizer Feature
Augmentation", seed 002 §III), adapted from binary detection to the 7 known classes of Track 3.
No reference code is used; ResNet blocks are those of systems/lfcc_resnet18.

  log-magnitude STFT (window 512, hop 187; eq. 1)                      (B, 1, 257, frames)
  main stream: ResNet18 stem + blocks 1-3 (64/128/256)                 (B, 256, 257/16, frames/16)
  synthesizer stream: ResNet18 block 4 (512) → average pool → F_s      (B, 512)
  content stream: a second block 4 → average pool → F_c                (B, 512)
  final head on F_c || F_s: Linear → 256-d embedding → ReLU → Linear → 7 logits

The paper's single linear L_cls (2N → 1, sigmoid) becomes two FC layers (2N → 256 → 7) so that, like
every member, the system exports a 256-d penultimate embedding; its BCE real/fake loss becomes CE
over the 7 known classes (no real-vs-fake auxiliary: the 7-way CE already separates class 0).

Training loss (eq. 14), β = `loss_weights`:
  L = L_cls + β0·L_cls_aug + β1·(L_cls_s + 0.5·L_con_s) + β2·(L_cls_c + L*_cls_s) + β3·L_con_cls
  L_cls_s    CE of the synthesizer classifier L_s on F_s (the 7 classes replace synthesizer labels)
  L_con_s    cosine contrastive loss (eq. 4, margin α) on F_s
  L_cls_c    CE of the compression (10) and speed (16) heads on F_c (pseudo_labels.py)
  L*_cls_s   CE between L_s(F_c) and the uniform distribution; only the content block learns from it
             (the paper "freezes other modules"): L_s's weights enter detached and the content block
             is run a second time on the detached main-stream output, with its own parameters but
             copies of its normalisation statistics
  L_cls      CE of the head on feature-blended F_c, F_s (Algorithm 1, within each class)
  L_cls_aug  focal loss (α 0.25, γ 2) of the head on shuffled pairs (blended F_c of sample π(i),
             blended F_s of sample i), labelled with sample i's class: the class lives in the
             synthesizer stream, the content stream is trained to carry none of it
  L_con_cls  cosine contrastive loss on the unblended F_c || F_s
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core.errors import fail
from systems.common.base import EMBEDDING_DIM, NUM_CLASSES, EmbeddingHead, System
from systems.feature_decomp.pseudo_labels import NUM_COMPRESSIONS, NUM_SPEEDS, unpack
from systems.lfcc_resnet18.model import BasicBlock

LOG_FLOOR = 1e-7  # seed 002 eq. 1


def resnet_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet18 block: `blocks` BasicBlocks, the first one striding (He et al., 2016)."""
    return nn.Sequential(*(BasicBlock(in_ch if j == 0 else out_ch, out_ch, stride if j == 0 else 1)
                           for j in range(blocks)))


def cosine_contrastive(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Seed 002 eq. 4: (1/B²) Σ_i [Σ_{j: same label} (1 − s_ij) + Σ_{j: other label} max(s_ij − α, 0)]."""
    zn = F.normalize(z.float(), dim=1)
    sim = zn @ zn.T
    same = labels[:, None] == labels[None, :]
    return torch.where(same, 1 - sim, F.relu(sim - margin)).sum() / len(z) ** 2


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Seed 002 eq. 13 (Lin et al., 2017) over classes: mean of −α (1 − p_t)^γ log p_t."""
    log_pt = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-alpha * (1 - log_pt.exp()) ** gamma * log_pt).mean()


def shuffle_pairs(content: torch.Tensor, synth: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 002 §III-F.2 for 7 classes: rows (F_c of sample π(i) || F_s of sample i) for a random
    permutation π, labelled with sample i's class, the class its synthesizer features carry."""
    order = torch.randperm(len(labels), device=labels.device)
    return torch.cat([content[order], synth], 1), labels


def partners_within_class(labels: torch.Tensor) -> torch.Tensor:
    """For each sample, a random sample of the same class (possibly itself)."""
    partner = torch.arange(len(labels), device=labels.device)
    for c in labels.unique():
        members = torch.nonzero(labels == c).squeeze(1)
        pick = torch.randint(len(members), (len(members),), device=labels.device)
        partner[members] = members[pick]
    return partner


def blend_features(z: torch.Tensor, labels: torch.Tensor, noise_level: float,
                   eps: float = 1e-6) -> torch.Tensor:
    """Seed 002 Algorithm 1 on (B, N) features: z_i takes the mean/std mixed r : 1 − r (r ~ U(0.5, 1))
    with those of a random z_j of its class, then z* ← z*·(1 + r1·Beta(2,5)·U(−1,1)) + r2·Beta(2,5)·N(0,1)
    with per-sample amplitudes r1, r2 ~ U(0, η), η = `noise_level` (0: no noise)."""
    b = len(z)
    partner = partners_within_class(labels)
    mu, sigma = z.mean(1, keepdim=True), z.std(1, keepdim=True)
    r = torch.empty(b, 1, device=z.device).uniform_(0.5, 1.0)
    mu_mix = r * mu + (1 - r) * mu[partner]
    sigma_mix = r * sigma + (1 - r) * sigma[partner]
    out = sigma_mix * (z - mu) / (sigma + eps) + mu_mix
    if noise_level > 0:
        beta = torch.distributions.Beta(torch.tensor(2.0, device=z.device), torch.tensor(5.0, device=z.device))
        r1 = torch.empty(b, 1, device=z.device).uniform_(0, noise_level)
        r2 = torch.empty(b, 1, device=z.device).uniform_(0, noise_level)
        scale = 1 + r1 * beta.sample(z.shape) * torch.empty_like(z).uniform_(-1, 1)
        shift = r2 * beta.sample(z.shape) * torch.randn_like(z)
        out = out * scale + shift
    return out


class FeatureDecomposition(System):
    def __init__(self, num_classes: int = NUM_CLASSES, embedding_dim: int = EMBEDDING_DIM,
                 input_samples: int = 48000, n_fft: int = 512, hop_length: int = 187,
                 blocks: tuple[int, ...] = (2, 2, 2, 2), channels: tuple[int, ...] = (64, 128, 256, 512),
                 contrastive_margin: float = 0.4, loss_weights: tuple[float, ...] = (1.0, 0.5, 0.5, 0.5),
                 blend_noise: float = 10.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 codec_variants: int = 2, transform_prob: float = 1.0):
        super().__init__()
        if len(blocks) != 4 or len(channels) != 4 or len(loss_weights) != 4:
            fail("feature_decomp: model.blocks, model.channels and model.loss_weights need 4 values each")
        if not 0.0 <= transform_prob <= 1.0 or blend_noise < 0:
            fail("feature_decomp: model.transform_prob must lie in [0, 1] and model.blend_noise be >= 0")
        self.input_samples, self.n_fft, self.hop_length = input_samples, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.margin, self.loss_weights = contrastive_margin, tuple(loss_weights)
        self.blend_noise, self.focal_alpha, self.focal_gamma = blend_noise, focal_alpha, focal_gamma
        self.codec_variants, self.transform_prob = codec_variants, transform_prob
        c1, c2, c3, c4 = channels
        self.main = nn.Sequential(
            nn.Conv2d(1, c1, 7, 2, 3, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            resnet_stage(c1, c1, blocks[0], 1), resnet_stage(c1, c2, blocks[1], 2), resnet_stage(c2, c3, blocks[2], 2))
        self.synth_block = resnet_stage(c3, c4, blocks[3], 2)
        self.content_block = resnet_stage(c3, c4, blocks[3], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.synth_classifier = nn.Linear(c4, num_classes)  # L_s
        self.compression_head = nn.Linear(c4, NUM_COMPRESSIONS)  # L_c^1
        self.speed_head = nn.Linear(c4, NUM_SPEEDS)  # L_c^2
        self.head = EmbeddingHead(2 * c4, embedding_dim, num_classes)  # L_cls

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), n_fft=self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=True, return_complex=True).abs()
        return torch.log(spec + LOG_FLOOR).unsqueeze(1)  # (B, 1, 257, 1 + samples // hop)

    def streams(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(main-stream output F_H, synthesizer features F_s, content features F_c)."""
        hidden = self.main(self.spectrogram(wave))  # (B, 256, 17, 17) for 48,000 samples
        synth = self.pool(self.synth_block(hidden)).flatten(1)  # (B, 512)
        content = self.pool(self.content_block(hidden)).flatten(1)  # (B, 512)
        return hidden, synth, content

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, synth, content = self.streams(wave)
        return self.head(torch.cat([content, synth], 1))

    def loss_terms(self, wave: torch.Tensor, labels: torch.Tensor,
                   pseudo: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The seven terms of eq. 14 by name, and the head's logits on the unblended features."""
        compression, speed = unpack(pseudo)
        hidden, synth, content = self.streams(wave)
        terms = {"cls_s": F.cross_entropy(self.synth_classifier(synth).float(), labels),
                 "con_s": cosine_contrastive(synth, labels, self.margin),
                 "cls_c": F.cross_entropy(self.compression_head(content).float(), compression)
                 + F.cross_entropy(self.speed_head(content).float(), speed)}
        # adversarial pass: content block only; running statistics are updated once, by the pass above
        state = {name: p for name, p in self.content_block.named_parameters()}
        state.update({name: b.clone() for name, b in self.content_block.named_buffers()})
        content_alone = self.pool(functional_call(self.content_block, state, (hidden.detach(),))).flatten(1)
        adv_logits = F.linear(content_alone, self.synth_classifier.weight.detach(),
                              self.synth_classifier.bias.detach())
        terms["adv"] = -F.log_softmax(adv_logits.float(), dim=1).mean(1).mean()  # CE with the uniform target
        synth_mix = blend_features(synth, labels, self.blend_noise)
        content_mix = blend_features(content, labels, self.blend_noise)
        logits, _ = self.head(torch.cat([content_mix, synth_mix], 1))
        terms["cls"] = F.cross_entropy(logits.float(), labels)
        pairs, pair_labels = shuffle_pairs(content_mix, synth_mix, labels)
        terms["cls_aug"] = focal_loss(self.head(pairs)[0], pair_labels, self.focal_alpha, self.focal_gamma)
        terms["con_cls"] = cosine_contrastive(torch.cat([content, synth], 1), labels, self.margin)
        with torch.no_grad():
            clean_logits, _ = self.head(torch.cat([content, synth], 1))
        return terms, clean_logits

    def training_loss(self, wave: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor,
                      progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 14. `domains` carries the packed (compression, speed) pseudo-labels of
        `PseudoLabelCrops` (wrap_training_data), not augmentation conditions."""
        t, logits = self.loss_terms(wave, labels, domains)
        b0, b1, b2, b3 = self.loss_weights
        loss = t["cls"] + b0 * t["cls_aug"] + b1 * (t["cls_s"] + 0.5 * t["con_s"]) \
            + b2 * (t["cls_c"] + t["adv"]) + b3 * t["con_cls"]
        return loss, logits

    def wrap_training_data(self, dataset, cache_dir, device):
        """The engine's crops replaced by pseudo-labelled ones, read from an on-disk codec cache."""
        from systems.feature_decomp.pseudo_labels import PseudoLabelCrops, build_codec_cache

        if dataset.augmenter is not None and dataset.augmenter.cfg.p_codec > 0:
            fail("feature_decomp: augment.p_codec must be 0 (codecs are the content stream's pseudo-labels)")
        folder = build_codec_cache(dataset.split, cache_dir, self.codec_variants, dataset.seed)
        return PseudoLabelCrops(dataset, folder, self.transform_prob)
