"""Run an exported system (`EXP/<sys>/model.onnx`, see systems/onnx_export.py) with onnxruntime
alone: no torch, no training code, numpy in and out.

    model = OnnxSystem("exp/rawnet2/model.onnx")
    logits, embedding = model(wave)   # wave: (B, model.input_samples) float32

`system`, `input_samples`, `epoch` and `dev_f1` come from the file's metadata_props. The CUDA
execution provider is used when this onnxruntime build has it (onnxruntime-gpu), else the CPU one;
nodes a provider lacks fall back to the CPU by onnxruntime's own placement.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import fail

INPUT_NAME = "wave"
OUTPUT_NAMES = ("logits", "embedding")


def pick_providers(device: str = "auto") -> list[str]:
    """'auto': CUDA when available, else CPU; 'cpu'; 'cuda' (fails when this onnxruntime has no CUDA)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if not has_cuda:
            fail(f"device {device!r}: this onnxruntime has no CUDAExecutionProvider (it has "
                 f"{', '.join(available)}); install onnxruntime-gpu or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fail(f"device {device!r}: valid are auto, cpu, cuda")


class OnnxSystem:
    """A System's forward from its ONNX export: (B, input_samples) float32 → (logits (B, 7), embedding (B, 256))."""

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            fail(f"{self.path}: no such ONNX file; run python -m systems.onnx_export --exp EXP/<system>")
        providers = pick_providers(device)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: placement notes are not the user's concern
        provider_options = None
        if providers[0] == "CUDAExecutionProvider" and device.startswith("cuda:"):
            provider_options = [{"device_id": int(device.split(":", 1)[1])}, {}]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers,
                                                provider_options=provider_options)
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid files
            fail(f"{self.path}: onnxruntime cannot load it ({type(err).__name__}: "
                 f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "system" not in self.metadata or "input_samples" not in self.metadata:
            fail(f"{self.path}: not an export of this kit (no system / input_samples metadata); "
                 "re-run python -m systems.onnx_export")
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
            fail(f"{self.path}: inputs {inputs} / outputs {outputs}, expected [{INPUT_NAME!r}] / {list(OUTPUT_NAMES)}")
        self.system = self.metadata["system"]
        self.input_samples = int(self.metadata["input_samples"])
        self.epoch = int(self.metadata["epoch"]) if "epoch" in self.metadata else None
        self.dev_f1 = float(self.metadata["dev_f1"]) if "dev_f1" in self.metadata else None
        self.providers = self.session.get_providers()

    def __repr__(self) -> str:
        return f"OnnxSystem({str(self.path)!r}, system={self.system!r}, providers={self.providers})"

    def __call__(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if wave.ndim != 2 or wave.shape[1] != self.input_samples:
            fail(f"{self.path}: input of shape {wave.shape}, expected (batch, {self.input_samples})")
        if wave.shape[0] == 0:  # onnxruntime may refuse an empty batch; the widths come from one window
            logits, embedding = self(np.zeros((1, self.input_samples), np.float32))
            return logits[:0], embedding[:0]
        logits, embedding = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: wave})
        return logits, embedding
