"""What made a result: the kit's commit and the versions of the packages its numbers depend on.
The same commit trains different members under other NumPy / SciPy / torch builds (rounding that
training amplifies), so reports and benchmarks name both."""
from __future__ import annotations

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


def environment() -> dict:
    """The commit, Python and the result packages' versions, as one JSON-ready record."""
    return {"commit": commit_id(), "python": platform.python_version(), "packages": package_versions()}
