"""Post-hoc unknown-class scores of one member: max logit, energy, GEN, kNN, NSD, Mahalanobis, ViM.

Each gives one score per utterance, higher = more like the known classes (the kit's convention,
fusion/calibrate.py); the class decision stays the argmax of the member's logits. `held_out`
(the leave-one-out τ rule) removes a class everywhere a score uses it: its logit column, its
training embeddings, its class mean, its row of the classifier.

The scores need only the export contract (logits and embeddings per utterance). pytorch-ood
implements most of them, but it pulls torchvision and can upgrade the pinned torch; each score is a
few lines of numpy here, tested against scipy/sklearn and hand-worked cases (tests/test_ood_scores.py).

Memory is bounded for the real data (79,490 test × 22,400 training utterances): every utterance ×
training-set product is computed over row chunks of at most CHUNK_ELEMENTS entries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import fail
from core.labels import kept_classes
from fusion.logit_fusion import softmax

# 2^22 float32 similarities (16 MB) per chunk of test rows × training rows
CHUNK_ELEMENTS = 1 << 22  # 79,490 × 22,400 exact kNN: ~1.5 min on 2 busy CPU cores (4,000 test rows: 4.6 s)


@dataclass
class OODConfig:
    # Sun et al. 2022 use k = 50 for CIFAR-10's 50,000 training images; 10 for the demo's few hundred
    knn_k: int = 10
    vim_dim: int | None = None  # principal dimension D; None: half the embedding size
    # GEN (Liu et al. 2023): the paper's γ = 0.1; its M = 100 is for ImageNet's 1,000 classes, and
    # with 7 (or 6) classes every probability is informative, so None keeps all kept classes
    gen_gamma: float = 0.1
    gen_top: int | None = None

    def __post_init__(self):
        if self.knn_k < 1:
            fail(f"ood.knn_k {self.knn_k} must be at least 1")
        if self.vim_dim is not None and self.vim_dim < 1:
            fail(f"ood.vim_dim {self.vim_dim} must be at least 1 (or null: half the embedding size)")
        if not 0.0 < self.gen_gamma <= 1.0:
            fail(f"ood.gen_gamma {self.gen_gamma} must lie in (0, 1]")
        if self.gen_top is not None and self.gen_top < 1:
            fail(f"ood.gen_top {self.gen_top} must be at least 1 (or null: all kept classes)")


def kept_logits(logits: np.ndarray, held_out: int | None) -> np.ndarray:
    return np.asarray(logits, dtype=np.float64)[:, kept_classes(held_out)]


def kept_rows(labels: np.ndarray, held_out: int | None) -> np.ndarray:
    """Training utterances of the kept classes."""
    return np.flatnonzero(np.isin(labels, kept_classes(held_out)))


def score_matrix(logits: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The (N, kept) score matrix every τ rule and decision reads (fusion/calibrate.py): the logits
    shifted per row so that the argmax column holds the utterance's known-ness score. Its row max is
    the score and its argmax the logits' argmax (other columns are forced strictly below, even
    where the shift loses a tiny logit gap to rounding); softmax of a row is the member's softmax."""
    logits = np.asarray(logits, dtype=np.float64)
    known = np.asarray(known, dtype=np.float64)[:, None]
    top = logits.max(axis=1, keepdims=True)
    out = known + (logits - top)
    below = np.nextafter(known, -np.inf)
    return np.where(logits < top, np.minimum(out, below), known)


def logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Hendrycks et al. 2022 (MaxLogit): the largest logit."""
    return np.asarray(logits, dtype=np.float64).max(axis=1)


def energy(logits: np.ndarray) -> np.ndarray:
    """Liu et al. 2020, temperature 1: the negative free energy, log Σ exp(logit)."""
    return logsumexp(np.asarray(logits, dtype=np.float64))


def gen(logits: np.ndarray, gamma: float, top: int | None = None) -> np.ndarray:
    """Liu et al. 2023 (GEN): −Σ p^γ (1 − p)^γ over the `top` largest softmax probabilities
    (None, or more than the classes: all of them), the negative generalized entropy. A confident
    softmax has one p near 1 and the rest near 0, both of which make p^γ (1 − p)^γ small."""
    p = softmax(np.asarray(logits, dtype=np.float64))
    n_classes = p.shape[1]
    top = n_classes if top is None else min(top, n_classes)
    largest = np.sort(p, axis=1)[:, n_classes - top:]
    # an underflowed p = 0 (or a saturated p = 1) contributes 0: numpy's 0.0 ** γ is 0 for γ > 0
    return -(largest ** gamma * (1.0 - largest) ** gamma).sum(axis=1)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def row_chunks(n_rows: int, row_width: int):
    """Slices of at most CHUNK_ELEMENTS // row_width rows (at least one)."""
    step = max(1, CHUNK_ELEMENTS // max(1, row_width))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def knn_cosine(query: np.ndarray, train: np.ndarray, k: int) -> np.ndarray:
    """Sun et al. 2022: cosine similarity of each L2-normalised query to its k-th nearest
    L2-normalised training embedding (= 1 − ‖z − z_(k)‖² / 2, the paper's distance, made a
    similarity). Exact, in float32 chunks of ≤ CHUNK_ELEMENTS query × training similarities."""
    if k > len(train):
        fail(f"ood.knn_k {k} exceeds the {len(train)} training utterances available")
    q = l2_normalise(query).astype(np.float32)
    t = l2_normalise(train).astype(np.float32)
    out = np.empty(len(q))
    for rows in row_chunks(len(q), len(t)):
        sim = q[rows] @ t.T  # (chunk, n_train)
        # the k-th largest similarity: partition puts it at position n − k
        out[rows] = np.partition(sim, len(t) - k, axis=1)[:, len(t) - k]
    return out


def nsd(query_emb: np.ndarray, query_logits: np.ndarray, train_emb: np.ndarray,
        train_logits: np.ndarray) -> np.ndarray:
    """NSD (Xie et al., Interspeech 2024, REFD's unknown score), as in the authors' released code:
    training embeddings L2-normalised and each scaled by its own log Σ exp(logit); the score is the
    mean cosine similarity of the normalised query to those scaled embeddings, times the query's
    log Σ exp(logit). The mean over all training embeddings is a dot product with their mean, so
    it costs one vector, not a query × training matrix."""
    scaled_mean = (l2_normalise(train_emb) * energy(train_logits)[:, None]).mean(axis=0)
    return (l2_normalise(query_emb) @ scaled_mean) * energy(query_logits)


@dataclass
class ClassGaussian:
    means: np.ndarray  # (C, D) class means
    precision: np.ndarray  # (D, D) pseudo-inverse of the shared covariance


def fit_class_gaussian(emb: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> ClassGaussian:
    """Lee et al. 2018: class means and one covariance shared by all classes (the within-class
    scatter over all N training embeddings, / N); its pseudo-inverse (as sklearn's
    EmpiricalCovariance takes) keeps a rank-deficient covariance usable."""
    emb = np.asarray(emb, dtype=np.float64)
    means = np.stack([emb[labels == c].mean(axis=0) for c in classes])
    centred = emb - means[np.searchsorted(classes, labels)]
    cov = centred.T @ centred / len(emb)
    return ClassGaussian(means, np.linalg.pinv(cov, hermitian=True))


def mahalanobis(model: ClassGaussian, emb: np.ndarray) -> np.ndarray:
    """Lee et al. 2018's confidence score: −min over classes of the squared Mahalanobis distance."""
    emb = np.asarray(emb, dtype=np.float64)
    best = np.full(len(emb), np.inf)
    for rows in row_chunks(len(emb), emb.shape[1]):
        for mean in model.means:
            diff = emb[rows] - mean
            best[rows] = np.minimum(best[rows], ((diff @ model.precision) * diff).sum(axis=1))
    return -best


@dataclass
class LinearFit:
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)
    relative_residual: float  # ‖logits − fit‖_F / ‖logits − their mean‖_F on the training exports
    determined: bool  # more training utterances than unknowns (D + 1); otherwise the fit is exact by construction


def fit_last_linear(emb: np.ndarray, logits: np.ndarray) -> LinearFit:
    """The classifier's last linear map, logits ≈ emb @ W.T + b, by least squares on the training
    exports (the export contract has no weights). Exact for members whose logits are a linear map of
    the exported embedding (RawNet2, SE-Res2Net50, W2V-ASDG: utterance means of linear window
    outputs stay linear); approximate where a ReLU sits between them (the shared two-FC head of
    LFCC-ResNet18 and the SSL fine-tunes), which the residual shows."""
    emb = np.asarray(emb, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    design = np.column_stack([emb, np.ones(len(emb))])
    coef, *_ = np.linalg.lstsq(design, logits, rcond=None)
    spread = np.linalg.norm(logits - logits.mean(axis=0))
    residual = float(np.linalg.norm(logits - design @ coef) / max(spread, 1e-12))
    return LinearFit(coef[:-1].T, coef[-1], residual, len(emb) > design.shape[1])


# what the classifier's last linear layer may read: the exported embedding itself, or the embedding
# after a ReLU (the shared two-FC head, systems/common/base.py, exports the embedding before it)
FEATURE_MAPS = {"embedding": lambda e: e, "relu(embedding)": lambda e: np.maximum(e, 0.0)}


def fit_classifier_input(emb: np.ndarray, logits: np.ndarray) -> tuple[str, LinearFit]:
    """The feature map (FEATURE_MAPS) under which the logits are best a linear map of the exported
    embedding, with that fit; a tie (e.g. an exact, underdetermined fit) keeps the embedding."""
    fits = {name: fit_last_linear(f(np.asarray(emb, dtype=np.float64)), logits) for name, f in FEATURE_MAPS.items()}
    best = min(fits, key=lambda name: (fits[name].relative_residual, name != "embedding"))
    return best, fits[best]


@dataclass
class ViMModel:
    origin: np.ndarray  # (D,) u = −W⁺ b
    principal: np.ndarray  # (D, dim) principal subspace of the training embeddings about u
    alpha: float


def fit_vim(emb: np.ndarray, logits: np.ndarray, fit: LinearFit, dim: int) -> ViMModel:
    """ViM (Wang et al. 2022, "Virtual-logit Matching"): origin u = −W⁺b, principal subspace of the training embeddings
    about u (top `dim` eigenvectors of their uncentred covariance), α = mean max logit / mean
    residual norm over the training utterances. `logits` and `fit` are over the kept classes."""
    emb = np.asarray(emb, dtype=np.float64)
    if not 1 <= dim < emb.shape[1]:
        fail(f"ood.vim_dim {dim} must lie in 1–{emb.shape[1] - 1} for {emb.shape[1]}-d embeddings")
    origin = -np.linalg.pinv(fit.weight) @ fit.bias
    x = emb - origin
    _, vecs = np.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues
    principal = vecs[:, ::-1][:, :dim]
    residual = np.linalg.norm(x - (x @ principal) @ principal.T, axis=1)
    mean_residual = residual.mean()
    # below 1e-6 of the embeddings' size the "residual" is rounding: they span ≤ dim dimensions
    if mean_residual <= 1e-6 * np.linalg.norm(x, axis=1).mean():
        fail(f"vim: the {len(x)} training embeddings span at most {dim} dimensions, leaving no residual; "
             "lower ood.vim_dim")
    alpha = float(np.asarray(logits, dtype=np.float64).max(axis=1).mean() / mean_residual)
    return ViMModel(origin, principal, alpha)


def vim(model: ViMModel, emb: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """ViM's known-ness: log Σ exp(logit) − α‖x^P⊥‖, the energy minus the virtual logit. The paper's
    score, the softmax probability of the virtual logit, is a decreasing function of it."""
    x = np.asarray(emb, dtype=np.float64) - model.origin
    residual = np.linalg.norm(x - (x @ model.principal) @ model.principal.T, axis=1)
    return energy(logits) - model.alpha * residual
