"""The fusion stage's settings (fusion/conf/fusion.yaml): strict, every key known."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from core.config_types import check_types
from core.errors import KitError, fail
from core.yaml_files import read_yaml
from fusion.auto_select import AutoConfig
from fusion.manifold_fusion import FeatureFusionConfig
from fusion.ood_scores import OODConfig
from fusion.stacking import StackConfig

RULES = ("quantile", "leave-one-out", "fixed")
DEFAULT_TIE_BREAK = ("hubert_ft", "wav2vec2_ft", "w2v_asdg", "se_res2net50", "lfcc_resnet18", "rawnet2", "feature_decomp")


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


# submit_method: AUTO_SUBMIT = the fused method with the best dev F1 at its τ (fusion/run.py, fusion.yaml)
AUTO_SUBMIT = "auto"


@dataclass
class FusionConfig:
    submit_method: str = AUTO_SUBMIT
    auto: AutoConfig = field(default_factory=AutoConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    feature: FeatureFusionConfig = field(default_factory=FeatureFusionConfig)
    openmax: OpenMaxConfig = field(default_factory=OpenMaxConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    stack: StackConfig = field(default_factory=StackConfig)


def load_fusion_config(path: str | Path) -> FusionConfig:
    path = Path(path)
    raw = read_yaml(path, "fusion config")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        fail(f"{path}: a fusion config must be a YAML mapping, not {type(raw).__name__}")
    sections = {"auto": AutoConfig, "threshold": ThresholdConfig, "score": ScoreConfig, "label": LabelConfig,
                "feature": FeatureFusionConfig, "openmax": OpenMaxConfig, "ood": OODConfig,
                "stack": StackConfig}
    unknown = sorted(set(raw) - set(sections) - {"submit_method"}, key=str)
    if unknown:
        fail(f"{path}: unknown key(s) {unknown}; valid: {['submit_method', *sections]}")
    submit_method = raw.get("submit_method", AUTO_SUBMIT)
    if not isinstance(submit_method, str):
        fail(f"{path}: submit_method must be a method name, not {submit_method!r}")
    built = {}
    for name, cls in sections.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            fail(f"{path}: {name}: must be a mapping of keys to values, not {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known, key=str)
        if bad:
            fail(f"{path}: {name}: unknown key(s) {bad}; valid: {sorted(known)}")
        check_types(cls, values, f"{path}: {name}")
        try:
            built[name] = cls(**values)
        except KitError as err:
            fail(f"{path}: {err}")
        except (TypeError, ValueError) as err:  # a value of the wrong type, caught by a comparison
            fail(f"{path}: {name}: a value has the wrong type ({err}): {values}")
    return FusionConfig(submit_method=submit_method, **built)
