"""System configs: one YAML per system, strict about keys, resolved and saved beside the results.

A config has five sections; `model` holds the keyword arguments of the registered model class
(checked against its signature), the others are the dataclasses below. A key the code does not
know is an error, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.atomic import write_text_atomic
from core.config_types import check_types, type_ok
from core.errors import KitError, fail
from core.yaml_files import parse_yaml, read_yaml
from data_prep.augment import AugmentConfig

SECTIONS = ("system", "model", "train", "score", "augment")
# train keys that change how batches are loaded, not what they hold (see TrainConfig)
LOADER_KEYS = ("num_workers", "persistent_workers", "pin_memory", "prefetch_factor")
LR_SCHEDULES = ("constant", "step", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    # learning-rate schedule, stepped after every optimiser step: constant; step (× step_gamma every
    # step_epochs epochs); cosine (to min_lr_ratio · lr at the last step); all after a linear warm-up
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    step_gamma: float = 0.5
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    # RegMixup (Pinto et al., NeurIPS 2022; REFD's fake classifier): every batch is also trained on
    # its mixup copy, λ ~ Beta(α, α) per batch; 0 turns it off. The paper's α is 10–20 (mixes near
    # 50/50); a step costs two forward/backward passes. Only systems trained by the default
    # cross-entropy loss take it (the others' losses have their own extra terms)
    regmixup_alpha: float = 0.0
    # LogitNorm (Wei et al., ICML 2022): the cross-entropy sees each row of logits scaled to norm
    # 1/τ, so that confidence cannot come from a growing norm; 0 turns it off. The paper's τ is
    # 0.04 (CIFAR-10). Training only: scoring reads the logits as they are. Like RegMixup, only
    # systems trained by the default cross-entropy loss take it
    logitnorm_tau: float = 0.0
    # CosFace / AM-softmax margin m (Wang et al., 2018) in cosine units; 0 turns it off. It needs a
    # cosine classifier (model.classifier: cosine, in RawNet2 and LFCC-ResNet18). AM-softmax's paper
    # uses m = 0.35 with s = 30; speaker-recognition recipes use m = 0.2
    am_margin: float = 0.0
    # train.batch_size is the batch of one optimiser step, whatever the split: its items are cut
    # into world size × grad_accumulation equal micro-batches, so it must divide by that product
    grad_accumulation: int = 1
    # how batches are loaded, never what they hold (tests/test_loader.py: the same bits whatever
    # these are), so they stay out of the config digest: changing them resumes, it does not retrain
    num_workers: int = 2
    persistent_workers: bool = False  # keep the workers (and their audio caches) between epochs
    pin_memory: bool | None = None  # None: on when training on CUDA
    prefetch_factor: int = 2  # batches each worker loads ahead
    seed: int = 0
    bf16: bool = True  # autocast: training on GPU; scoring on GPU and on CPUs with native bf16
    deterministic: bool = False  # deterministic kernels, one CPU thread (see engine.torch_threads)
    # 2-d convolution weights and activations in channels-last order while training (the layout
    # oneDNN and cuDNN convolve fastest; the score stage always uses it): the same function, other
    # float rounding, so a seed's run differs from one without it as from one on another thread
    # count. Off keeps the trainings documented before the option bit for bit (README, Systems)
    channels_last: bool = False

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw", "sgd"):
            fail(f"train.optimizer {self.optimizer!r}: valid are adam, adamw, sgd")
        if self.lr_schedule not in LR_SCHEDULES:
            fail(f"train.lr_schedule {self.lr_schedule!r}: valid are {', '.join(LR_SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accumulation < 1:
            fail("train.epochs, train.batch_size and train.grad_accumulation must be positive")
        if self.regmixup_alpha < 0:
            fail(f"train.regmixup_alpha {self.regmixup_alpha}: must be >= 0 (0 turns RegMixup off)")
        if self.logitnorm_tau < 0:
            fail(f"train.logitnorm_tau {self.logitnorm_tau}: must be >= 0 (0 turns LogitNorm off)")
        if not 0 <= self.am_margin < 1:
            fail(f"train.am_margin {self.am_margin}: a cosine margin in [0, 1) (0 turns it off)")
        if self.am_margin > 0 and (self.regmixup_alpha > 0 or self.logitnorm_tau > 0):
            # the margin's loss replaces the cross-entropy that those two modify
            fail(f"train.am_margin {self.am_margin}: not combined with train.regmixup_alpha or train.logitnorm_tau")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            fail("train: num_workers >= 0 and prefetch_factor >= 1")
        if self.warmup_epochs < 0 or self.step_epochs < 1 or not 0 < self.step_gamma <= 1 \
                or not 0 <= self.min_lr_ratio <= 1:
            fail("train: warmup_epochs >= 0, step_epochs >= 1, 0 < step_gamma <= 1, 0 <= min_lr_ratio <= 1")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            fail(f"train.lr {self.lr} and train.weight_decay {self.weight_decay}: lr > 0, weight_decay >= 0, both finite")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            fail(f"train.betas {list(self.betas)}: two values in [0, 1)")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            fail(f"train.grad_clip {self.grad_clip}: a positive norm, or null for none")
        if self.seed < 0:
            fail(f"train.seed {self.seed}: must be >= 0")
        self.betas = tuple(float(b) for b in self.betas)


def resolved_pin_memory(setting: bool | None, device) -> bool:
    """train.pin_memory for a loader feeding `device` (a torch.device): None pins on CUDA only,
    where page-locked host memory makes the copies to the GPU asynchronous."""
    return device.type == "cuda" if setting is None else setting


@dataclass
class ScoreConfig:
    """How the score stage cuts utterances: windows of the model's input length (`model`), every
    `window_hop_seconds`, the last one ending at the utterance's end. An utterance's logits and
    embedding are the mean over its windows; feature fusion uses the windows themselves."""
    batch_size: int = 64
    window_hop_seconds: float = 1.0  # seed 004 §3.5.3

    def __post_init__(self):
        if self.batch_size < 1 or self.window_hop_seconds <= 0:
            fail("score.batch_size and score.window_hop_seconds must be positive")


@dataclass
class SystemConfig:
    system: str
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list):
                return [plain(x) for x in v]
            return v

        return {"system": self.system, "model": plain(self.model),
                "train": plain(dataclasses.asdict(self.train)),
                "score": plain(dataclasses.asdict(self.score)),
                "augment": plain(dataclasses.asdict(self.augment))}

    def save(self, path: str | Path) -> bool:
        """Written only when it differs: a folder that links a trained system's config.yaml (a new
        test set, a seed ensemble) keeps its link when the train stage finds nothing to do. True
        when it was written."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        path = Path(path)
        try:
            if path.read_text() == text:
                return False
        except (OSError, UnicodeDecodeError):
            pass
        write_text_atomic(path, text)
        return True


def _section(cls, values: dict | None, where: str):
    values = values or {}
    if not isinstance(values, dict):
        fail(f"{where}: must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        fail(f"{where}: unknown key(s) {unknown}; valid: {sorted(known)}")
    check_types(cls, values, where)
    try:
        return cls(**values)
    except KitError as err:  # the section's own checks name the key; `where` adds the file
        fail(f"{where.rsplit(': ', 1)[0]}: {err}")


def check_model_keys(system: str, model: dict, where: str) -> None:
    from systems import model_class

    init = model_class(system).__init__
    params = inspect.signature(init).parameters
    valid = {n for n in params if n not in ("self", "num_classes")}
    unknown = sorted(set(model) - valid)
    if unknown:
        fail(f"{where}: unknown model key(s) {unknown} for {system}; valid: {sorted(valid)}")
    # the constructor's annotations are the value types (int sizes, float rates, tuples of them)
    hints = typing.get_type_hints(init)
    for key, value in model.items():
        if key in hints and not type_ok(value, hints[key]):
            name = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            fail(f"{where}.{key}: {value!r} is not a valid {name}")


def from_dict(raw: dict, where: str, overrides: dict[str, Any] | None = None, check_model: bool = True) -> SystemConfig:
    """`check_model=False` leaves the model keys unchecked, which needs the model's class and so
    PyTorch: for a caller that only compares the config's digest with a stamp's (a config that
    matches a checked one is valid) and runs check_model_keys itself before anything else."""
    if not isinstance(raw, dict):
        fail(f"{where}: a config must be a YAML mapping")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        fail(f"{where}: unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    if "system" not in raw:
        fail(f"{where}: missing 'system'")
    from systems import REGISTRY

    if not isinstance(raw["system"], str) or raw["system"] not in REGISTRY:
        fail(f"{where}: unknown system {raw['system']!r}; valid: {', '.join(sorted(REGISTRY))}")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or section == "system" or not key:
            fail(f"override {dotted!r}: expected <section>.<key> with section in {list(SECTIONS[1:])}")
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {})
        raw[section][key] = value
    model = raw.get("model") or {}
    if check_model:
        check_model_keys(raw["system"], model, f"{where}: model")
    return SystemConfig(system=raw["system"], model=model,
                        train=_section(TrainConfig, raw.get("train"), f"{where}: train"),
                        score=_section(ScoreConfig, raw.get("score"), f"{where}: score"),
                        augment=_section(AugmentConfig, raw.get("augment"), f"{where}: augment"))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, check_model: bool = True) -> SystemConfig:
    return from_dict(read_yaml(path, "config file"), str(path), overrides, check_model)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`section.key=value` strings, values parsed as YAML (numbers, booleans, lists)."""
    out = {}
    for item in items:
        if "=" not in item:
            fail(f"override {item!r}: expected section.key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_yaml(v, f"override {item!r}")
    return out
