"""The interface every system implements, and the LFCC-segment front half shared by two of them.

A system is an `nn.Module` with
  forward(wave: (B, input_samples) float) -> (logits (B, 7), embedding (B, 256))
  input_samples   its input length: the training crop and the scoring window (random crop in
                  training, windows every `score.window_hop_seconds` in scoring; an utterance shorter
                  than one window is repeat-padded, as training pads it)
and three hooks with defaults that a system overrides when it needs to (SpeechBrain's style:
methods, never `hasattr` probes): its training loss, its optimiser parameter groups, and a
wrapper around its training data.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import AngularMargin
from torch import nn
from torch.utils.data import Dataset

from core.errors import fail
from core.labels import NUM_KNOWN
from systems.common.lfcc import LFCC

NUM_CLASSES = NUM_KNOWN
EMBEDDING_DIM = 256  # seed 004 §3.4: every member exports a 256-d penultimate layer


class System(nn.Module):
    input_samples: int

    def training_loss(self, wave: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor,
                      progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one training batch; `domains` are the augmentation conditions and
        `progress` runs 0 → 1 over training (for schedules inside a loss). Default: cross-entropy."""
        return default_training_loss(self, wave, labels, logitnorm_tau=0.0)

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Parameter groups for the optimiser. Default: every trainable parameter at `lr`."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def cosine_scale(self) -> float | None:
        """The scale s when the logits are s·cos(embedding, class weight) (a CosineClassifier),
        which an additive angular margin needs; None for an unconstrained linear classifier."""
        return next((m.scale for m in self.modules() if isinstance(m, CosineClassifier)), None)

    def may_skip_parameters(self) -> bool:
        """Whether a training step can leave a trainable parameter out of its loss (a loss term that
        only some batches have, a dropped layer). Several processes (DDP) then search for such
        parameters in every step, at a cost; without the search such a step stops them. Default: no."""
        return False

    def wrap_training_data(self, dataset: Dataset, cache_dir: Path, device: torch.device) -> Dataset:
        """The dataset training iterates. Its keys are (epoch, index) pairs (systems/common/sampling.py:
        loader workers never see an `epoch` attribute set after they start), so an item must depend
        on (seed, epoch, index) alone. Default: the augmented crops unchanged."""
        return dataset


def overrides_training_loss(system: System) -> bool:
    return type(system).training_loss is not System.training_loss


def logitnorm_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy of the logits, each row first scaled to norm 1/τ when τ > 0: LogitNorm (Wei et
    al., ICML 2022), which keeps training from lowering the loss by growing the logits' norm, the
    cause of confident softmaxes far from the data. Only training sees the scaling: the system's
    logits, and every score made from them, stay as the network gives them. τ = 0: plain
    cross-entropy."""
    logits = logits.float()
    if tau > 0:
        # the 1e-7 is the authors' guard against a zero row
        logits = logits / (torch.linalg.vector_norm(logits, dim=-1, keepdim=True) + 1e-7) / tau
    return F.cross_entropy(logits, labels)


def default_training_loss(system: System, wave: torch.Tensor, labels: torch.Tensor,
                          logitnorm_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of the default loss: the cross-entropy, LogitNorm's when `logitnorm_tau` > 0."""
    logits, _ = system(wave)
    return logitnorm_cross_entropy(logits, labels, logitnorm_tau), logits


def additive_margin_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, margin: float,
                                  scale: float) -> torch.Tensor:
    """CosFace / AM-softmax (Wang et al., 2018): the cross-entropy of cosine logits s·cos θ_j with
    the margin m taken from each row's target class, s·(cos θ_y − m), the shift made by
    SpeechBrain's AngularMargin. Each class must then win by m in cosine, which packs its
    embeddings into a tighter cone than the plain softmax does."""
    logits = logits.float()
    target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return F.cross_entropy(AngularMargin(margin, scale)(logits / scale, target), labels)


class CosineClassifier(nn.Module):
    """logits = s·cos(x, w_j): input and class weights L2-normalised, no bias (NormFace / CosFace)."""

    def __init__(self, in_dim: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))


CLASSIFIERS = ("linear", "cosine")


def classifier_layer(kind: str, in_dim: int, num_classes: int, cosine_scale: float) -> nn.Module:
    """The last layer, `model.classifier`: linear (affine logits) or cosine (s·cos, which
    train.am_margin needs)."""
    if kind not in CLASSIFIERS:
        fail(f"model.classifier {kind!r}: valid are {', '.join(CLASSIFIERS)}")
    if not cosine_scale > 0:
        fail(f"model.cosine_scale {cosine_scale}: must be > 0")
    return nn.Linear(in_dim, num_classes) if kind == "linear" else CosineClassifier(in_dim, num_classes, cosine_scale)


def regmixup_loss(system: System, wave: torch.Tensor, labels: torch.Tensor,
                  alpha: float, logitnorm_tau: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """RegMixup (Pinto et al., NeurIPS 2022, eq. 3 with η = 1): the batch's cross-entropy plus the
    mixup cross-entropy of its mixed copy λx + (1 − λ)x_π, with one λ ~ Beta(α, α) per batch and π
    a random pairing of the batch. Mixing the waveforms superposes two utterances, the audio form
    of mixing images. Both halves go through one forward pass, as in the authors' code, so that
    BatchNorm normalises them together. Each cross-entropy is LogitNorm's when `logitnorm_tau` > 0.
    Returns (loss, the clean half's logits)."""
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    pairing = torch.randperm(len(wave), device=wave.device)
    logits, _ = system(torch.cat([wave, lam * wave + (1 - lam) * wave[pairing]]))
    logits = logits.float()
    clean, mixed = logits[: len(wave)], logits[len(wave):]
    tau = logitnorm_tau
    loss = (logitnorm_cross_entropy(clean, labels, tau) + lam * logitnorm_cross_entropy(mixed, labels, tau)
            + (1 - lam) * logitnorm_cross_entropy(mixed, labels[pairing], tau))
    return loss, clean


class EmbeddingHead(nn.Module):
    """pooled features → Linear → 256-d embedding; ReLU → Linear → 7 logits (two FC layers, seed 004).
    With the cosine classifier the logits are s·cos(embedding, class weight), on the embedding
    itself as in CosFace: a ReLU first would confine the cosines to the positive orthant."""

    def __init__(self, in_dim: int, embedding_dim: int = EMBEDDING_DIM, num_classes: int = NUM_CLASSES,
                 classifier: str = "linear", cosine_scale: float = 30.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, embedding_dim)
        last = classifier_layer(classifier, embedding_dim, num_classes, cosine_scale)
        self.classify = nn.Sequential(nn.ReLU(), last) if classifier == "linear" else last

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(pooled)
        return self.classify(emb), emb


class LFCCSegmentSystem(System):
    """LFCC (1, 60, segment_frames) images of `input_samples`-long windows (seed 004 SE-Res2Net:
    400-frame segments)."""

    def __init__(self, lfcc_preset: str = "res2net", segment_frames: int = 400):
        super().__init__()
        self.lfcc = LFCC(lfcc_preset)
        self.segment_frames = segment_frames
        # centred STFT: 1 + samples // hop frames, so this is the shortest input giving the segment
        self.input_samples = (segment_frames - 1) * self.lfcc.cfg.hop_length

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.lfcc(wave)[..., : self.segment_frames]  # (B, 60, 400)
        return feats.unsqueeze(1)  # (B, 1, 60, 400)
