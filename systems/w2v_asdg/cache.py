"""On-disk cache of frozen front-end features for W2V-ASDG training.

`copies` augmented crops of every training utterance (the engine's own seeded crops and MUSAN /
codec augmentation: copy c is exactly what epoch c + 1 would have drawn) go once through the
frozen wav2vec2 front-end; their last hidden states are stored as float16 in one memory-mapped
array (copies, N, frames, hidden) with the labels and domains beside it. XLS-R-300M on 64,600
samples gives 201 × 1024 values: 0.41 MB per copy, so 0.41 GB per 1,000 utterances per copy.
The cache is rebuilt only when its options (data, copies, seed, front-end, augmentation) change.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.atomic import atomic_dir, remove_staging_of
from core.prepared_split import CODEC_FOLDER
from core.stamps import STAMP_NAME, current_or_restamped, file_signature, folder_listing, options_digest, write_stamp
from systems.common.sampling import item_key


def frontend_digest(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.frontend.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().float().numpy().tobytes()[:4096])
    return h.hexdigest()


def augmentation_inputs(dataset) -> str:
    """What the cached copies drew from besides the config: the noise bank's files (drawn by their
    place in a sorted list) and the split's codec variants (by their stamp). In the stamp's
    `inputs`, which stamps written before it existed lack, so that an upgrade rebuilds nothing."""
    parts = {}
    cfg = dataset.augmenter.cfg if dataset.augmenter is not None else None
    if cfg is not None and cfg.musan:
        parts["bank"] = folder_listing(cfg.musan)
    codec_stamp = dataset.split.folder / CODEC_FOLDER / STAMP_NAME
    if cfg is not None and cfg.p_codec > 0 and codec_stamp.is_file():
        parts["codec_variants"] = hashlib.sha256(codec_stamp.read_bytes()).hexdigest()
    return options_digest(parts)


def build_feature_cache(model, dataset, cache_dir: Path, copies: int, device) -> Path:
    import dataclasses

    cache_dir = Path(cache_dir)
    augment = dataclasses.asdict(dataset.augmenter.cfg) if dataset.augmenter is not None else None
    manifest = dataset.split.folder / "manifest.tsv"
    # the manifest named from the system's folder: a copy of the experiment (cp -a) finds its cache current
    options = {"manifest": file_signature(manifest, cache_dir.parent), "copies": copies,
               "seed": dataset.seed, "samples": dataset.n, "frontend": frontend_digest(model), "augment": augment,
               "version": 1}
    inputs = augmentation_inputs(dataset)
    if current_or_restamped(cache_dir, options, dict(options, manifest=file_signature(manifest)), inputs):
        remove_staging_of(cache_dir)
        return cache_dir
    n = len(dataset)
    with torch.no_grad():
        probe = model.ssl_features(torch.zeros(1, dataset.n, device=device))
    frames, hidden = probe.shape[1:]
    with atomic_dir(cache_dir) as tmp:
        feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float16,
                                          shape=(copies, n, frames, hidden))
        labels = np.zeros((copies, n), np.int64)
        domains = np.zeros((copies, n), np.int64)
        for c in range(copies):
            dataset.epoch = c + 1
            loader = DataLoader(dataset, batch_size=16, shuffle=False)
            row = 0
            for wave, label, domain in tqdm(loader, desc=f"feature cache copy {c + 1}/{copies}", unit="batch"):
                with torch.no_grad():
                    out = model.ssl_features(wave.to(device)).float().cpu().numpy()
                feats[c, row:row + len(out)] = out.astype(np.float16)
                labels[c, row:row + len(out)] = label.numpy()
                domains[c, row:row + len(out)] = domain.numpy()
                row += len(out)
        feats.flush()
        del feats
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "domains.npy", domains)
        write_stamp(tmp, options, inputs=inputs)
    return cache_dir


class CachedFeatures(Dataset):
    """(features (frames, hidden) float32, label, domain) of copy (epoch − 1) mod copies."""

    def __init__(self, folder: Path):
        self.feats = np.load(Path(folder) / "features.npy", mmap_mode="r")
        self.labels = np.load(Path(folder) / "labels.npy")
        self.domains = np.load(Path(folder) / "domains.npy")
        self.epoch = 1

    def __len__(self) -> int:
        return self.feats.shape[1]

    def __getitem__(self, key):
        epoch, i = item_key(key, self.epoch)  # (epoch, index) from the engine's sampler
        c = (epoch - 1) % self.feats.shape[0]
        return (torch.from_numpy(np.asarray(self.feats[c, i], dtype=np.float32)), int(self.labels[c, i]),
                int(self.domains[c, i]))
