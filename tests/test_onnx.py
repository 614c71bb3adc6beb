"""ONNX export of the CNN systems: a trained tiny system's best checkpoint → EXP/model.onnx, the
front-end inside the graph; onnxruntime equals torch (dynamic batch); the backend needs no torch."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
import torch

from core.errors import KitError
from core.stamps import STAMP_NAME
from systems.common.config import load_config
from systems.common.engine import train
from systems.common.inference import best_checkpoint, build_model, load_model_state
from systems.onnx_backend import OnnxSystem
from systems.onnx_export import export_model, export_onnx

from .conftest import ROOT

TOL = 1e-4
COMMON = {"train.epochs": 1, "train.batch_size": 8, "train.num_workers": 0, "train.bf16": False}
TINY = {
    "lfcc_resnet18": {"model.blocks": [1, 1, 1, 1], "model.channels": [8, 16, 16, 32]},
    "se_res2net50": {"model.blocks": [1, 1, 1, 1]},
    "rawnet2": {"model.channels": [8, 16], "model.gru_hidden": 16, "model.gru_layers": 1},
}


@pytest.fixture(scope="module", params=sorted(TINY))
def exported(request, tiny_prepared, tmp_path_factory):
    """(system, exp folder, torch model of its best checkpoint, onnx path, export seconds)."""
    system = request.param
    exp = tmp_path_factory.mktemp(f"onnx_{system}")
    cfg = load_config(ROOT / f"systems/{system}/conf/demo.yaml", dict(COMMON, **TINY[system]))
    train(cfg, tiny_prepared, exp, torch.device("cpu"))
    best = best_checkpoint(exp / "ckpt")
    model = build_model(cfg)
    model.load_state_dict(load_model_state(best.paramfiles["model"]))
    t0 = time.time()
    if system == "lfcc_resnet18":  # one system through the CLI: one line on stdout, the path
        proc = subprocess.run([sys.executable, "-m", "systems.onnx_export", "--exp", str(exp)],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines() == [str(exp / "model.onnx")]
        path = exp / "model.onnx"
    else:
        path = export_onnx(exp)
    return system, exp, model.eval(), path, time.time() - t0


def test_export_matches_torch_with_a_dynamic_batch(exported):
    system, exp, model, path, seconds = exported
    assert path == exp / "model.onnx" and path.is_file()
    # no temporaries left; the one hidden file is the training's stamp
    assert not [p.name for p in exp.iterdir() if p.name.startswith(".") and p.name != STAMP_NAME]
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    best = best_checkpoint(exp / "ckpt")
    assert meta["system"] == system and int(meta["input_samples"]) == model.input_samples
    assert int(meta["epoch"]) == best.meta["epoch"] and float(meta["dev_f1"]) == pytest.approx(best.meta["dev_f1"])
    (wave_in,) = proto.graph.input
    dims = wave_in.type.tensor_type.shape.dim
    assert wave_in.name == "wave" and dims[0].dim_param and dims[1].dim_value == model.input_samples
    assert [o.name for o in proto.graph.output] == ["logits", "embedding"]
    # the front-end is in the graph: the LFCC's STFT, or RawNet2's sinc bank as a Conv with 1025 taps
    ops = {n.op_type for n in proto.graph.node}
    if system == "rawnet2":
        assert any(tuple(t.dims) == (20, 1, 1025) for t in proto.graph.initializer)
    else:
        assert "STFT" in ops
    # standard ONNX only (opset 20), nothing a plain onnxruntime would lack
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 20)] and not proto.functions

    onnx_model = OnnxSystem(path, device="cpu")
    assert (onnx_model.system, onnx_model.input_samples, onnx_model.epoch) == \
        (system, model.input_samples, best.meta["epoch"])
    rng = np.random.default_rng(1)
    figures = {}
    for batch in (1, 3):
        wave = (rng.standard_normal((batch, model.input_samples)) * 0.1).astype(np.float32)
        with torch.no_grad():
            ref_logits, ref_emb = (t.numpy() for t in model(torch.from_numpy(wave)))
        logits, emb = onnx_model(wave)
        assert logits.shape == (batch, 7) and emb.shape == (batch, 256)
        figures[batch] = (float(np.abs(logits - ref_logits).max()), float(np.abs(emb - ref_emb).max()))
        assert max(figures[batch]) <= TOL, (system, batch, figures[batch])

    # one timing run, batch of 8 windows (informational; pytest -s shows it)
    wave = (rng.standard_normal((8, model.input_samples)) * 0.1).astype(np.float32)
    onnx_model(wave[:1])  # warm-up both
    with torch.no_grad():
        model(torch.from_numpy(wave[:1]))
        t0 = time.perf_counter()
        model(torch.from_numpy(wave))
        t_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    onnx_model(wave)
    t_ort = time.perf_counter() - t0
    print(f"\n[onnx] {system}: export {seconds:.1f} s, {path.stat().st_size / 1e6:.2f} MB, max |Δ| "
          f"logits/embedding batch 1 {figures[1][0]:.1e}/{figures[1][1]:.1e}, batch 3 "
          f"{figures[3][0]:.1e}/{figures[3][1]:.1e}; batch 8 CPU: torch {t_torch * 1e3:.0f} ms, "
          f"onnxruntime {t_ort * 1e3:.0f} ms (ort/torch {t_ort / t_torch:.2f})")


NO_TORCH = """
import json, sys
import numpy as np
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from systems.onnx_backend import OnnxSystem
model = OnnxSystem(sys.argv[1])
logits, emb = model(np.load(sys.argv[2]))
np.save(sys.argv[3], logits)
np.save(sys.argv[4], emb)
print(json.dumps({"system": model.system, "input_samples": model.input_samples,
                  "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules
                                      if sys.modules[m] is not None)}))
"""


def test_backend_runs_without_torch(exported, tmp_path):
    system, _, model, path, _ = exported
    wave = (np.random.default_rng(2).standard_normal((2, model.input_samples)) * 0.1).astype(np.float32)
    np.save(tmp_path / "wave.npy", wave)
    out = [tmp_path / "logits.npy", tmp_path / "emb.npy"]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(path), str(tmp_path / "wave.npy"), *map(str, out)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"system": system, "input_samples": model.input_samples, "torch_loaded": False}
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(wave))]
    for got, want in zip(out, ref, strict=True):
        assert np.abs(np.load(got) - want).max() <= TOL


def test_errors_are_one_line(exported, tmp_path):
    system, exp, _, _, _ = exported
    if system != "lfcc_resnet18":
        pytest.skip("the same for every system")
    missing = tmp_path / "never_trained"
    proc = subprocess.run([sys.executable, "-m", "systems.onnx_export", "--exp", str(missing)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert not (missing / "model.onnx").exists()
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.yaml").write_text((exp / "config.yaml").read_text())
    with pytest.raises(KitError, match="no checkpoint"):
        export_onnx(untrained)
    assert not list(untrained.glob("*.onnx")) and not list(untrained.glob(".*"))


def test_backend_refuses_wrong_input(exported):
    _, _, model, path, _ = exported
    onnx_model = OnnxSystem(path, device="cpu")
    with pytest.raises(KitError, match="expected"):
        onnx_model(np.zeros((2, model.input_samples + 1), np.float32))
    logits, emb = onnx_model(np.zeros((0, model.input_samples), np.float32))
    assert logits.shape == (0, 7) and emb.shape == (0, 256)
    with pytest.raises(KitError, match="no such ONNX file"):
        OnnxSystem(path.parent / "nothing.onnx")


class NoOnnxOp(torch.nn.Module):
    """A forward with an op ONNX has no function for (an eigen-decomposition)."""

    input_samples = 160

    def forward(self, wave):
        x = torch.linalg.eigvalsh(wave[:, :16, None] @ wave[:, None, :16]).repeat(1, 16)
        return x[:, :7], x[:, :256]


def test_a_system_that_cannot_be_exported_is_named(tmp_path):
    with pytest.raises(KitError, match=r"^toy_system: cannot be exported to ONNX \(.*eigh") as err:
        export_model(NoOnnxOp(), "toy_system", tmp_path / "model.onnx")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_predict_refuses_an_export_older_than_the_best_checkpoint(exported):
    from submit.predict import check_export_is_current

    system, exp, _, path, _ = exported
    metadata = dict(OnnxSystem(path, device="cpu").metadata)
    cfg = load_config(exp / "config.yaml")
    check_export_is_current(metadata, exp, cfg, path)  # as exported: the system's best checkpoint
    for key, value in (("checkpoint", "CKPT+2020-01-01+00-00-00+00"), ("config_digest", "0" * 64)):
        with pytest.raises(KitError, match=r"trained again since\); re-run python -m systems.onnx_export"):
            check_export_is_current(dict(metadata, **{key: value}), exp, cfg, path)
