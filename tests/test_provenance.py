"""The environment a report names: the commit as git prints it and the versions as the packages
themselves report them (independent of importlib.metadata, which core.provenance reads)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import scipy
import sklearn
import torch

from core.provenance import KIT_ROOT, commit_id, environment, package_versions


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
    from eval.report import write_report

    from .test_metrics_ood import synthetic_experiment

    exp, prepared, key_path, _, _ = synthetic_experiment(tmp_path)
    write_report(exp, prepared, str(key_path))
    recorded = json.loads((exp / "report" / "environment.json").read_text())
    assert recorded == environment()
    assert f"numpy {np.__version__}" in (exp / "report" / "README.md").read_text()
