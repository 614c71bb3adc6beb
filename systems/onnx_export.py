"""Export a trained system to ONNX, front-end included, for scoring without torch.

    python -m systems.onnx_export --exp EXP/<sys> [--out PATH]

Reads `EXP/config.yaml` and the best checkpoint in `EXP/ckpt/` (by dev open-set F1, as the score
stage does) and writes `EXP/model.onnx` atomically (a temporary sibling renamed when complete). The
graph is the whole `System.forward`: input `wave` (batch, input_samples) float32 with a dynamic
batch axis; outputs `logits` (batch, 7) and `embedding` (batch, 256), always float32 (no bf16).
The front-ends are inside it: the LFCC's torch.stft becomes an ONNX STFT node (opset 20); RawNet2's
fixed sinc bank, applied by FFT in torch, is exported as the same correlation written as one Conv
(`DirectSincConv`, swapped into a copy of the model: onnxruntime's DFT is ~10x slower than the
direct form), so neither model file is changed. Before the file is written, onnxruntime and the
torch model score the same random batch and the export fails unless they agree. metadata_props:
`system`, `input_samples`, the checkpoint's `epoch`, `dev_f1`, folder name and config digest, the
exporter, the opset and that check's `check_max_abs_diff`. `systems/onnx_backend.py` runs the file
with onnxruntime alone.

Exporter: torch.onnx.export(dynamo=True) (torch.export + onnxscript). The CNN systems
(lfcc_resnet18, se_res2net50, rawnet2) are the supported targets; the SSL systems (hubert_ft,
wav2vec2_ft, w2v_asdg) export the same way and pass the same check on small random backbones,
but have not been tried with full-size pretrained checkpoints (a graph over 2 GB is refused).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import atomic_path
from core.errors import ArgumentParser, fail, run_cli
from systems.common.config import load_config
from systems.common.inference import best_checkpoint, build_model, load_model_state
from systems.common.train_inputs import fits_config

ONNX_NAME = "model.onnx"
OPSET = 20  # STFT (17) and DFT with its axis as an input (20)
INPUT_NAME = "wave"
OUTPUT_NAMES = ("logits", "embedding")
MAX_BYTES = 2_000_000_000  # protobuf's limit for one file (no external-data sidecars: one atomic file)
# the export's own check, on a random batch: onnxruntime vs torch, relative to the outputs' scale
CHECK_BATCH = 2
CHECK_RTOL = 1e-3


def load_trained(exp_dir: Path) -> tuple[nn.Module, object, object]:
    """(model in eval mode on CPU with its best checkpoint, config, checkpoint) of a trained system."""
    exp_dir = Path(exp_dir)
    if not (exp_dir / "config.yaml").is_file():
        fail(f"{exp_dir}: not a trained system folder (no config.yaml); run the train stage")
    cfg = load_config(exp_dir / "config.yaml")
    best = best_checkpoint(exp_dir / "ckpt")
    if best is None:
        fail(f"{exp_dir / 'ckpt'}: no checkpoint; run the train stage for {exp_dir.name}")
    if not fits_config(best.meta.get("config_digest"), cfg):
        fail(f"{best.path}: trained with another config than {exp_dir / 'config.yaml'}; re-run the train stage")
    if "model" not in best.paramfiles:
        fail(f"{best.path}: no model.ckpt in the checkpoint; re-run the train stage")
    model = build_model(cfg)
    try:
        model.load_state_dict(load_model_state(best.paramfiles["model"], "cpu"))
    except RuntimeError as err:
        fail(f"{best.paramfiles['model']}: does not fit the {cfg.system} model of {exp_dir / 'config.yaml'} "
             f"({str(err).splitlines()[0]})")
    return model.eval(), cfg, best


class DirectSincConv(nn.Module):
    """Export-only stand-in for rawnet2's FixedSincConv: the same 'valid' cross-correlation with the
    same fixed bank, as one Conv node. onnxruntime's DFT is far slower than torch's FFT (batch 8 of
    64,600 samples on CPU: about 1.9 s against 0.18 s for the direct convolution), and the direct
    form is at least as close to the exact correlation (|Δ| ~1e-7 of outputs ~0.2). The torch model
    keeps its FFT; the export's check compares the graph with it."""

    def __init__(self, sinc: nn.Module):
        super().__init__()
        self.register_buffer("filters", sinc.filters.detach().clone(), persistent=False)  # (n_filters, 1, taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x.float(), self.filters)


def export_friendly(model: nn.Module) -> nn.Module:
    """`model`, or a copy of it with export-only stand-ins (DirectSincConv) swapped in."""
    from systems.rawnet2.model import FixedSincConv

    targets = [name for name, m in model.named_modules() if isinstance(m, FixedSincConv)]
    if not targets:
        return model
    model = copy.deepcopy(model)
    for name in targets:
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, attr, DirectSincConv(getattr(holder, attr)))
    return model


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records (e.g. about torchvision ops it skips)
    are not ours to print; a failure still surfaces as an exception."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check(onnx_model: bytes, model: nn.Module, input_samples: int, system: str) -> float:
    """Max |onnxruntime − torch| over both outputs on a seeded random batch; fails when they disagree."""
    import onnxruntime as ort

    wave = np.random.default_rng(0).standard_normal((CHECK_BATCH, input_samples)).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = [t.float().numpy() for t in model(torch.from_numpy(wave))]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: wave})
    except Exception as err:  # onnxruntime raises its own types for graphs it cannot load or run
        fail(f"{system}: the exported graph does not run in onnxruntime ({type(err).__name__}: "
             f"{str(err).splitlines()[0] if str(err) else ''})")
    worst = 0.0
    for name, g, e in zip(OUTPUT_NAMES, got, expected):
        if g.shape != e.shape:
            fail(f"{system}: ONNX output {name} has shape {g.shape}, torch gives {e.shape}")
        diff = float(np.abs(g - e).max())
        if not diff <= CHECK_RTOL * max(1.0, float(np.abs(e).max())):
            fail(f"{system}: ONNX output {name} differs from torch by up to {diff:.3g}; not exported")
        worst = max(worst, diff)
    return worst


def _reason(err: Exception) -> str:
    """One line from the exporter's error: the first line of its '## Exception summary', if any."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [ln.strip() for ln in text.split("## Exception summary", 1)[-1].splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if "## Exception summary" in text:
        first = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>: ", r"\1: ", first)
    else:
        first = f"{type(err).__name__}: {first}"
    return first[:300] + ("…" if len(first) > 300 else "")


def export_model(model: nn.Module, system: str, out_path: Path, metadata: dict | None = None) -> dict:
    """Export an eval-mode System to `out_path` (atomic) and return what went into metadata_props."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it; say so in one line)
    except ImportError:
        fail("ONNX export needs the onnx and onnxscript packages: pip install -r requirements.txt")
    model = model.eval().float()
    input_samples = int(model.input_samples)
    n_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if n_bytes > MAX_BYTES:
        fail(f"{system}: {n_bytes / 1e9:.1f} GB of weights, over the 2 GB a single ONNX file can hold; not exported")
    example = torch.zeros(CHECK_BATCH, input_samples)  # batch 2: a batch of 1 would be specialised away
    t0 = time.time()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(export_friendly(model), (example,), dynamo=True, opset_version=OPSET,
                                        verbose=False, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True)
    except Exception as err:  # torch.export / onnxscript raise many types for what they cannot translate
        fail(f"{system}: cannot be exported to ONNX ({_reason(err)})")
    props = {"system": system, "input_samples": str(input_samples), "exporter": f"torch {torch.__version__} dynamo",
             "opset": str(OPSET)}
    props.update({k: str(v) for k, v in (metadata or {}).items()})
    proto = program.model_proto
    worst = _check(proto.SerializeToString(), model, input_samples, system)
    props["check_max_abs_diff"] = f"{worst:.3g}"
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
    props["export_seconds"] = f"{time.time() - t0:.1f}"
    return props


def export_onnx(exp_dir: Path, out_path: Path | None = None) -> Path:
    """Export the best checkpoint of the trained system in `exp_dir` to `exp_dir/model.onnx` (or `out_path`)."""
    exp_dir = Path(exp_dir)
    model, cfg, best = load_trained(exp_dir)
    out_path = Path(out_path) if out_path is not None else exp_dir / ONNX_NAME
    export_model(model, cfg.system, out_path,
                 {"epoch": best.meta["epoch"], "dev_f1": best.meta["dev_f1"], "checkpoint": best.path.name,
                  "config_digest": best.meta.get("config_digest", "")})
    return out_path


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True, help="a trained system's folder (config.yaml, ckpt/)")
    ap.add_argument("--out", default=None, help=f"output file (default: EXP/{ONNX_NAME})")
    args = ap.parse_args()
    print(export_onnx(Path(args.exp), Path(args.out) if args.out else None))


if __name__ == "__main__":
    run_cli(main)
