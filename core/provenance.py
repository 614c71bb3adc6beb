"""What made a result: the kit's commit and the versions of the packages its numbers depend on.
The same commit trains different members under other NumPy / SciPy / torch builds (rounding that
training amplifies), so reports and benchmarks name both."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parents[1]
# written by the training stage into each system's folder: a list, one record per training call
TRAIN_ENVIRONMENT = "train_environment.json"

# the packages whose arithmetic or defaults reach the kit's figures
RESULT_PACKAGES = ("torch", "torchaudio", "speechbrain", "numpy", "scipy", "scikit-learn", "pandas",
                   "audiomentations", "av", "soundfile")


def commit_id() -> str:
    """The checkout's short commit, '+dirty' when tracked files changed; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=KIT_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=KIT_ROOT,
                               capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def package_versions(names: tuple[str, ...] = RESULT_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution; 'not installed' where it is absent."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# the CPU features oneDNN and OpenBLAS choose their kernels by: which are present decides both the
# speed (no bf16 scoring without avx512_bf16 or amx_bf16) and the order of a kernel's additions
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU as /proc/cpuinfo names it (model name, family and model number), the features in
    CPU_FEATURES it has, and the cores this process may use. Another machine in a cloud's
    "same" instance type can be another CPU generation."""
    fields, flags = {}, set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "cpu_features": [f for f in CPU_FEATURES if f in flags], "cores": cores}


def machine_line(box: dict) -> str:
    """One line for a `machine()` record, as the report and the benchmark print it."""
    features = ", ".join(box.get("cpu_features") or []) or "none of " + ", ".join(CPU_FEATURES)
    return f"{box.get('cpu')}, {box.get('cores')} cores, CPU features: {features}"


def environment() -> dict:
    """The commit, Python, the result packages' versions and the machine, as one JSON-ready record."""
    return {"commit": commit_id(), "python": platform.python_version(), "packages": package_versions(),
            "machine": machine()}
