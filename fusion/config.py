"""The fusion stage's settings (fusion/conf/fusion.yaml): strict, every key known."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import fail
from fusion.manifold_fusion import FeatureFusionConfig

RULES = ("quantile", "leave-one-out", "fixed")
DEFAULT_TIE_BREAK = ("hubert_ft", "wav2vec2_ft", "w2v_asdg", "se_res2net50", "lfcc_resnet18", "rawnet2")


@dataclass
class ThresholdConfig:
    rule: str = "quantile"
    q: float = 0.05
    tau: float | None = None

    def __post_init__(self):
        if self.rule not in RULES:
            fail(f"threshold.rule {self.rule!r}: valid are {', '.join(RULES)}")
        if self.rule == "fixed" and self.tau is None:
            fail("threshold.rule fixed needs threshold.tau")
        if not 0.0 <= self.q < 1.0:
            fail(f"threshold.q {self.q} must lie in [0, 1)")


@dataclass
class ScoreConfig:
    weights: dict[str, float] | None = None
    clip: float = 20.0  # seed 004 §3.5.2
    scale: float = 0.1


@dataclass
class LabelConfig:
    tie_break: list[str] = field(default_factory=lambda: list(DEFAULT_TIE_BREAK))


@dataclass
class OpenMaxConfig:
    alpha: int = 3
    tail: int = 20


@dataclass
class FusionConfig:
    submit_method: str = "feature"
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    feature: FeatureFusionConfig = field(default_factory=FeatureFusionConfig)
    openmax: OpenMaxConfig = field(default_factory=OpenMaxConfig)


def load_fusion_config(path: str | Path) -> FusionConfig:
    path = Path(path)
    if not path.is_file():
        fail(f"{path}: fusion config does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    sections = {"threshold": ThresholdConfig, "score": ScoreConfig, "label": LabelConfig,
                "feature": FeatureFusionConfig, "openmax": OpenMaxConfig}
    unknown = sorted(set(raw) - set(sections) - {"submit_method"})
    if unknown:
        fail(f"{path}: unknown key(s) {unknown}; valid: {['submit_method', *sections]}")
    built = {}
    for name, cls in sections.items():
        values = raw.get(name) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            fail(f"{path}: {name}: unknown key(s) {bad}; valid: {sorted(known)}")
        built[name] = cls(**values)
    return FusionConfig(submit_method=raw.get("submit_method", "feature"), **built)
