"""data_prep/setup_env.sh's choice of installer and its failure lines, with a stand-in venv python.

The stand-in answers `python -m pip ...` the way set-up calls it: `pip config get` finds no index,
`pip install --target DIR uv...` puts a stand-in uv there, and `pip install -r` reports whether uv's
cache was still on disk, then fails. The stand-in uv replays what uv 0.13.9 really printed when it
failed (tests/fixtures/uv_failures), after filling its cache folder as a real download would.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "data_prep" / "setup_env.sh"
UV_LOGS = Path(__file__).parent / "fixtures" / "uv_failures"

FAKE_PYTHON = r"""#!/usr/bin/env bash
# stand-in for the venv's python: only `-m pip ...` as setup_env.sh calls it
[ "$1 $2" = "-m pip" ] || { echo "unexpected call: $*" >&2; exit 3; }
shift 2
if [ "$1" = config ]; then
  # `config get KEY`: the value from FAKE_PIP_CONFIG's KEY=VALUE lines, else pip's "no such key" status
  value=$(printf '%s\n' "${FAKE_PIP_CONFIG:-}" | sed -n "s/^$3=//p")
  [ -n "$value" ] && { echo "$value"; exit 0; }
  exit 1
fi
target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    -r) echo "pip-install-r cache=$(ls -d "$TMPDIR/cache" 2>/dev/null || echo none)" >&2
        [ "$FAKE_PIP_RC" = 0 ] || echo "ERROR: stand-in pip failed" >&2
        exit "$FAKE_PIP_RC" ;;
    *) shift ;;
  esac
done
mkdir -p "$target/bin"
cat > "$target/bin/uv" <<'UV'
#!/usr/bin/env bash
# stand-in uv: writes its arguments one per line to FAKE_UV_ARGS, fills --cache-dir, then prints the
# recorded log and exits with FAKE_UV_RC
printf '%s\n' "$@" > "$FAKE_UV_ARGS"
while [ $# -gt 0 ]; do [ "$1" = --cache-dir ] && { mkdir -p "$2"; echo partial > "$2/wheel.part"; }; shift; done
[ -n "$FAKE_UV_LOG" ] && cat "$FAKE_UV_LOG" >&2
exit "$FAKE_UV_RC"
UV
chmod +x "$target/bin/uv"
"""


PIP_SOURCE_VARIABLES = ("PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_FIND_LINKS", "KIT_INSTALLER")


def run_setup(tmp_path: Path, uv_log: str | None, uv_rc: int, pip_rc: int = 1,
              installer: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in PIP_SOURCE_VARIABLES}
    env.update(KIT_VENV=str(venv), FAKE_UV_RC=str(uv_rc), FAKE_PIP_RC=str(pip_rc),
               FAKE_UV_LOG=str(UV_LOGS / uv_log) if uv_log else "", FAKE_UV_ARGS=str(tmp_path / "uv_args"),
               **(extra_env or {}))
    if installer is not None:
        env["KIT_INSTALLER"] = installer
    done = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=120)
    if "missing Debian packages" in done.stderr:
        pytest.skip("the kit's Debian packages are not installed here (tests/run.sh installs them)")
    return done


def stderr_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if not line.startswith("[setup] warning:")]


def test_uv_out_of_space_reports_error_and_last_cause_and_frees_its_cache(tmp_path):
    done = run_setup(tmp_path, "no_space.log", uv_rc=1)
    assert done.returncode == 1
    lines = stderr_lines(done)
    uv_line = next(line for line in lines if line.startswith("[setup] uv failed"))
    assert uv_line.startswith("[setup] uv failed (Failed to download `nvidia-cufft==12.0.0.61`: failed to write to file")
    assert uv_line.endswith("No space left on device (os error 28)); installing with pip instead")
    assert "hint" not in uv_line and "included because" not in uv_line
    # pip ran after uv's cache was removed
    assert "pip-install-r cache=none" in lines
    assert lines[-1] == f"error: installing requirements.txt into {tmp_path / 'venv'} failed; pip's reason is above" \
        or lines[-1].startswith(f"error: installing requirements.txt into {tmp_path / 'venv'} failed with ")
    assert not (tmp_path / "venv" / ".requirements.sha256").exists()
    assert not (tmp_path / "venv" / ".pip-scratch").exists()


def test_uv_unresolvable_requirement_is_one_line(tmp_path):
    done = run_setup(tmp_path, "unresolvable.log", uv_rc=1)
    uv_line = next(line for line in stderr_lines(done) if line.startswith("[setup] uv failed"))
    assert uv_line == ("[setup] uv failed (No solution found when resolving dependencies: Because "
                       "nonexistent-pkg-xyz-kit was not found in the package registry and you require "
                       "nonexistent-pkg-xyz-kit==1.0, we can conclude that your requirements are unsatisfiable.); "
                       "installing with pip instead")


def test_pip_fallback_that_succeeds_records_the_requirements(tmp_path):
    done = run_setup(tmp_path, "unresolvable.log", uv_rc=1, pip_rc=0)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "venv" / ".requirements.sha256").read_text().strip() == \
        hashlib.sha256((ROOT / "requirements.txt").read_bytes() + (ROOT / "constraints.txt").read_bytes()).hexdigest()


def test_uv_success_does_not_call_pip(tmp_path):
    done = run_setup(tmp_path, None, uv_rc=0)
    assert done.returncode == 0, done.stderr
    assert "pip-install-r" not in done.stderr and "uv failed" not in done.stderr
    assert (tmp_path / "venv" / ".requirements.sha256").is_file()
    assert not (tmp_path / "venv" / ".pip-scratch").exists()


def test_pip_installer_skips_uv(tmp_path):
    done = run_setup(tmp_path, "no_space.log", uv_rc=1, pip_rc=0, installer="pip")
    assert done.returncode == 0, done.stderr
    assert "uv failed" not in done.stderr and "pip-install-r cache=none" in done.stderr


def test_unknown_installer_is_one_line(tmp_path):
    done = run_setup(tmp_path, None, uv_rc=0, installer="conda")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: KIT_INSTALLER=conda: expected uv or pip"]


def uv_arguments(tmp_path: Path) -> list[str]:
    return (tmp_path / "uv_args").read_text().splitlines()


@pytest.mark.parametrize("no_index", ["1", "yes", "TRUE", "on"])
def test_offline_wheel_folders_reach_uv_as_its_flags(tmp_path, no_index):
    done = run_setup(tmp_path, None, uv_rc=0, extra_env={
        "PIP_NO_INDEX": no_index, "PIP_FIND_LINKS": "/wheels/one  /wheels/two"})
    assert done.returncode == 0, done.stderr
    args = uv_arguments(tmp_path)
    assert "--no-index" in args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--find-links"] == ["/wheels/one", "/wheels/two"]
    assert args[-4:] == ["-r", str(ROOT / "requirements.txt"), "-c", str(ROOT / "constraints.txt")]
    assert "pip-install-r" not in done.stderr


@pytest.mark.parametrize("extra_env", [{}, {"PIP_FIND_LINKS": "/wheels"}, {"PIP_NO_INDEX": "0", "PIP_FIND_LINKS": "/wheels"},
                                       {"PIP_NO_INDEX": "off"}])
def test_uv_keeps_its_index_without_pip_no_index(tmp_path, extra_env):
    done = run_setup(tmp_path, None, uv_rc=0, extra_env=extra_env)
    assert done.returncode == 0, done.stderr
    args = uv_arguments(tmp_path)
    assert "--no-index" not in args and "--find-links" not in args


def test_no_index_in_pip_configuration_installs_with_pip(tmp_path):
    done = run_setup(tmp_path, None, uv_rc=0, pip_rc=0, extra_env={"FAKE_PIP_CONFIG": "global.no-index=true"})
    assert done.returncode == 0, done.stderr
    assert "[setup] pip is configured to install without an index; installing with pip" in done.stdout
    assert not (tmp_path / "uv_args").exists() and "pip-install-r" in done.stderr


def test_constraints_pin_every_requirement_within_its_range():
    """constraints.txt holds one exact version of each package requirements.txt names, inside the
    range requirements.txt allows: otherwise set-up could not resolve both files together."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def lines(name: str) -> list[str]:
        text = (ROOT / name).read_text().splitlines()
        return [line.split("#")[0].strip() for line in text if line.split("#")[0].strip()]

    pinned = {}
    for line in lines("constraints.txt"):
        name, _, version = line.partition("==")
        assert version and canonicalize_name(name) not in pinned, f"constraints.txt: {line}"
        pinned[canonicalize_name(name)] = version
    for line in lines("requirements.txt"):
        req = Requirement(line)
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name}: in requirements.txt, not pinned in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} outside {req.specifier}"
