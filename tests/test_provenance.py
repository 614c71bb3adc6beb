"""The environment a report names: the commit as git prints it and the versions as the packages
themselves report them (independent of importlib.metadata, which core.provenance reads)."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import scipy
import sklearn
import torch

from core.provenance import KIT_ROOT, TRAIN_ENVIRONMENT, commit_id, environment, package_versions


def test_package_versions_are_the_imported_packages_own():
    versions = package_versions()
    assert versions["numpy"] == np.__version__ and versions["scipy"] == scipy.__version__
    assert versions["scikit-learn"] == sklearn.__version__
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert package_versions(("no-such-distribution-here",)) == {"no-such-distribution-here": "not installed"}


def test_commit_is_gits_short_head():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=KIT_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        assert commit_id() == "unknown"
        return
    assert commit_id().split("+")[0] == head.stdout.strip()


def test_report_names_its_environment(tmp_path):
    from eval.report import training_environments, write_report

    from .test_metrics_ood import synthetic_experiment

    exp, prepared, key_path, _, _ = synthetic_experiment(tmp_path)
    systems = json.loads((exp / "fusion" / "summary.json").read_text())["systems"]
    trained = [{"first_epoch": 1, "device": "cpu", "processes": 1, "commit": "abc1234", "python": "3.11.7",
                "packages": {"numpy": "0.0.1"}}]
    (exp / systems[0] / TRAIN_ENVIRONMENT).write_text(json.dumps(trained))
    write_report(exp, prepared, str(key_path))
    recorded = json.loads((exp / "report" / "environment.json").read_text())
    assert recorded["report"] == environment()
    assert recorded["training"] == {s: trained if s == systems[0] else None for s in systems}
    text = (exp / "report" / "README.md").read_text()
    assert f"numpy {np.__version__}" in text and "commit abc1234" in text and "numpy 0.0.1" in text
    assert f"- {systems[1]}: no record of its training environment" in text
    # a folder that links a trained system's files (seed ensemble, new test set) finds its record
    linked = tmp_path / "linked"
    shutil.copytree(exp / "fusion", linked / "fusion")
    for s in systems:
        (linked / s).mkdir(parents=True)
        (linked / s / "config.yaml").symlink_to(exp / s / "config.yaml")
    assert training_environments(linked, systems) == recorded["training"]


def test_training_records_each_call_that_trains(tiny_prepared, tiny_corpus, tmp_path, capsys):
    """Two calls that each train leave two records (the second from the epoch it resumes at), a call
    with nothing to train none; an unreadable record is said and replaced; a changed config, which
    trains from scratch, starts the list again."""
    from systems.common.engine import train

    from .test_engine import tiny_config

    cfg, cpu = tiny_config(tiny_corpus), torch.device("cpu")
    exp = tmp_path / "exp"

    def first_epochs():
        return [r["first_epoch"] for r in json.loads((exp / TRAIN_ENVIRONMENT).read_text())]

    train(cfg, tiny_prepared, exp, cpu, stop_after_epochs=1)
    train(cfg, tiny_prepared, exp, cpu, stop_after_epochs=1)
    train(cfg, tiny_prepared, exp, cpu)
    assert first_epochs() == [1, 2, 3]
    train(cfg, tiny_prepared, exp, cpu)
    records = json.loads((exp / TRAIN_ENVIRONMENT).read_text())
    assert [r["first_epoch"] for r in records] == [1, 2, 3]
    assert all(r["packages"]["numpy"] == np.__version__ and r["device"] == "cpu" for r in records)

    cfg.train.lr *= 2
    train(cfg, tiny_prepared, exp, cpu, stop_after_epochs=1)
    assert first_epochs() == [1]
    (exp / TRAIN_ENVIRONMENT).write_text("[{truncated")
    capsys.readouterr()
    train(cfg, tiny_prepared, exp, cpu, stop_after_epochs=1)
    assert "train_environment.json: unreadable" in capsys.readouterr().out
    assert first_epochs() == [2]

    # a resume killed before it saved an epoch (its record written, as a call's first act) trained
    # nothing that the checkpoints hold: the call that resumes there again replaces its record
    from systems.common.engine import record_training_environment

    record_training_environment(exp, 3, cpu, 1)
    assert first_epochs() == [2, 3]
    train(cfg, tiny_prepared, exp, cpu)
    assert first_epochs() == [2, 3]


def test_machine_reads_cpuinfo(tmp_path):
    from core.provenance import machine, machine_line

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC 9R14 96-Core Processor\n"
                    "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 sha_ni\n\n"
                    "processor\t: 1\ncpu family\t: 99\nmodel\t\t: 1\nmodel name\t: another\nflags\t\t: fpu\n")
    box = machine(info)
    assert box["cpu"] == "AMD EPYC 9R14 96-Core Processor (family 25, model 17)"
    assert box["cpu_features"] == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert box["cores"] >= 1
    assert machine(tmp_path / "absent")["cpu_features"] == []
    assert machine_line(box) == (f"AMD EPYC 9R14 96-Core Processor (family 25, model 17), {box['cores']} cores, "
                                 "CPU features: avx2, fma, avx512f, avx512_bf16")
    assert machine_line({"cpu": "x", "cores": 2, "cpu_features": []}) == \
        "x, 2 cores, CPU features: none of avx2, fma, avx512f, avx512_bf16, amx_bf16"


def test_machine_agrees_with_torch_and_onednn():
    """This machine's record against the libraries' own dispatch: ATen's CPU capability and
    oneDNN's bf16 support (which decides bf16 scoring) must show in the features."""
    from core.provenance import machine
    from systems.common.inference import native_cpu_bf16

    features = machine()["cpu_features"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        assert "avx512f" in features
    if capability == "AVX2":
        assert "avx2" in features
    if native_cpu_bf16():
        assert "avx512_bf16" in features or "amx_bf16" in features
    assert environment()["machine"] == machine()
