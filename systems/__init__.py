"""Systems: one folder per system (model + YAML configs); shared training, scoring, windows and the LFCC front-end in `common/`.

The registry maps a system name to `module:Class`; the class is imported only when used, so a
system's heavy dependencies (e.g. transformers) load only for that system.
"""
from __future__ import annotations

import importlib

REGISTRY = {
    "lfcc_resnet18": "systems.lfcc_resnet18.model:LFCCResNet18",
    "hubert_ft": "systems.hubert_ft.model:HuBERTFineTune",
    "wav2vec2_ft": "systems.wav2vec2_ft.model:Wav2Vec2FineTune",
    "w2v_asdg": "systems.w2v_asdg.model:W2VASDG",
    "rawnet2": "systems.rawnet2.model:RawNet2",
    "se_res2net50": "systems.se_res2net50.model:SERes2Net50",
    "feature_decomp": "systems.feature_decomp.model:FeatureDecomposition",
}


def model_class(name: str):
    if name not in REGISTRY:
        from core.errors import fail

        fail(f"unknown system {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
