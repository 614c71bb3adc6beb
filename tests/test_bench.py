"""`python -m eval.bench --quick`: runs from a clone, prints every figure with its ratio, and the
device and commit; the JSON holds the same figures."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_quick_benchmark_prints_its_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "eval.bench", "--quick", "--systems", "lfcc_resnet18",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("device: ") and "commit " in text
    assert "loader/step" in text and "utterances/s" in text and "x the floor" in text
    assert text.count("peak RSS") == 4 and "every feature-fusion distance" in text
    figures = json.loads(out.read_text())
    loader = figures["loader"]["lfcc_resnet18"]
    assert loader["loader_over_step"] == loader["loader_augmented_per_s"] / loader["step_samples_per_s"]
    assert figures["fusion"]["over_floor"] > 0 and figures["fusion"]["eigenproblem_seconds"] > 0
    assert figures["score"]["lfcc_resnet18"]["utterances_per_s"] > 0
    assert figures["fusion_memory"]["dim"] == 1792 and figures["fusion_memory"]["peak_rss_mb"] > 0
    assert loader["workers_over_step"] == loader["loader_workers_per_s"] / loader["step_samples_per_s"]
    assert loader["gpu_utilisation"] is None and not loader["bf16"]  # CPU: no NVML figure, fp32 step


def test_options_reach_the_sections(tmp_path):
    """--conf/--batch/--steps/--loader_workers/--set land in the figures: the paper config's
    LFCC-ResNet18 (a wider network than the demo's) and a config override the loader honours."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "eval.bench", "--quick", "--systems", "lfcc_resnet18",
                           "--sections", "loader", "--conf", "paper", "--batch", "3", "--steps", "2",
                           "--loader_workers", "2", "--set", "augment.codecs=[mp3]", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["sizes"]["conf"] == "paper" and figures["overrides"] == {"augment.codecs": ["mp3"]}
    loader = figures["loader"]["lfcc_resnet18"]
    assert loader["batch"] == 3 and loader["loader_workers"] == 2 and loader["loader_workers_per_s"] > 0
    assert "DataLoader with 2 workers" in proc.stdout


def test_channel_on_the_device_is_timed_beside_the_loader(tmp_path):
    """augment.effects_on device (what CUDA resolves auto to): the step includes the channel, and
    the same run times the DataLoader with the channel in the workers against the bare step."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "eval.bench", "--quick", "--systems", "lfcc_resnet18",
                           "--sections", "loader", "--conf", "paper", "--batch", "4", "--loader_workers", "1",
                           "--set", "augment.codecs=[mp3]", "augment.effects_on=device", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loader = json.loads(out.read_text())["loader"]["lfcc_resnet18"]
    assert loader["effects_on"] == "device" and loader["shared_collate_per_s"] > 0
    assert loader["effects_in_loader_workers_over_step"] == pytest.approx(
        loader["effects_in_loader_workers_per_s"] * loader["step_without_effects_ms"] / 1000 / loader["batch"])
    assert "channel on the device" in proc.stdout and "the same with the channel in the 1 workers" in proc.stdout


def test_unknown_system_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "eval.bench", "--quick", "--systems", "nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "nope" in proc.stderr
