"""Running a trained system: its best checkpoint, the model, and scored windows. What the score
stage, training's dev evaluation and `predict` share; it needs no training code (no SpeechBrain),
so inference loads only the model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.errors import fail
from systems import model_class
from systems.common.config import SystemConfig, resolved_pin_memory
from systems.common.windows import SplitWindows


def native_cpu_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def inference_bf16(device: torch.device, bf16: bool) -> bool:
    """Whether scoring runs under bf16 autocast: on CUDA, and on a CPU with native bf16, where
    oneDNN's bf16 kernels run the kit's systems 1.5–2.4× faster than fp32 (eval.bench); a CPU
    without it would emulate bf16, slower than fp32, so it stays fp32."""
    return bf16 and (device.type == "cuda" or (device.type == "cpu" and native_cpu_bf16()))


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=inference_bf16(device, enabled))


def to_channels_last(model: nn.Module) -> nn.Module:
    """2-d convolution weights in channels-last order (the same values), the layout oneDNN and
    cuDNN convolve fastest; a model without 2-d convolutions is left as it is."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Eval mode and channels-last convolution weights."""
    return to_channels_last(model.eval())


@torch.no_grad()
def score_windows(model: nn.Module, windows: SplitWindows, device: torch.device, batch_size: int, bf16: bool,
                  desc: str | None = None, num_workers: int = 0, pin_memory: bool | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Logits and embeddings of every window, batched; rows in `windows` order. `num_workers`
    loader processes read and cut the windows while the model computes; `pin_memory` as in
    train.pin_memory (None: on when scoring on CUDA)."""
    prepare_for_inference(model)
    logits, embs = [], []
    loader = DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=resolved_pin_memory(pin_memory, device))
    for wave, _ in tqdm(loader, desc=desc, unit="batch", disable=desc is None, mininterval=2.0):
        with autocast(device, bf16):
            lo, em = model(wave.to(device, non_blocking=True))
        logits.append(lo.float().cpu().numpy())
        embs.append(em.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(embs)


def utterance_means(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Mean over each utterance's rows offsets[i]:offsets[i + 1] (every utterance has >= 1 window)."""
    return np.add.reduceat(values, offsets[:-1], axis=0) / np.diff(offsets)[:, None]


def window_length(model: nn.Module) -> int:
    return int(model.input_samples)


def window_hop(cfg: SystemConfig, sample_rate: int = 16000) -> int:
    return int(round(cfg.score.window_hop_seconds * sample_rate))


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` (cuda when there is one, else cpu) or a torch device name; a name torch does not know,
    or a GPU this machine lacks, is a one-line error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        fail(f"--device {requested!r}: not a device name (auto, cpu, cuda, cuda:1 ...)")
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        fail(f"--device {requested}: this machine has {torch.cuda.device_count()} usable GPU(s)")
    return device


def build_model(cfg: SystemConfig) -> nn.Module:
    return model_class(cfg.system)(**cfg.model)


def torch_threads(deterministic: bool = False) -> None:
    """Respect an explicit OMP_NUM_THREADS; otherwise use every core we have. `deterministic`:
    deterministic kernels and one CPU thread, since a CPU reduction's order (and so its rounding)
    depends on the thread count: the same seed then gives the same bits on another machine with
    the same library versions and device type, at the cost of speed."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(1)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def load_model_state(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        fail(f"{path}: cannot load checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")


def best_key(ckpt) -> tuple[float, int]:
    """Highest dev F1; among equals the earliest epoch (the first to reach it)."""
    return ckpt.meta["dev_f1"], -ckpt.meta["epoch"]


META_FILE = "CKPT.yaml"  # SpeechBrain: a folder is a checkpoint when this file exists


class BestCheckpoint:
    """The best checkpoint of a training run, read from SpeechBrain's checkpoint folders without
    loading SpeechBrain (inference needs no training code)."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.paramfiles = {p.stem: p for p in path.glob("*.ckpt")}


def best_checkpoint(ckpt_dir: Path) -> BestCheckpoint | None:
    found = []
    for d in sorted(Path(ckpt_dir).glob("CKPT+*")) if Path(ckpt_dir).is_dir() else []:
        meta_path = d / META_FILE
        if not meta_path.is_file():
            continue  # an interrupted save: never complete, never used
        try:
            meta = yaml.safe_load(meta_path.read_text())
        except yaml.YAMLError as err:
            fail(f"{meta_path}: unreadable checkpoint meta ({str(err).splitlines()[0]}); re-run the train stage")
        if not isinstance(meta, dict) or "dev_f1" not in meta or "epoch" not in meta:
            fail(f"{meta_path}: not a checkpoint of this kit; re-run the train stage")
        found.append(BestCheckpoint(d, meta))
    return max(found, key=best_key) if found else None
