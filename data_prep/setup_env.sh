#!/usr/bin/env bash
# Idempotent set-up of what the kit needs on a Debian machine: the Debian packages behind the demo
# corpus and the codec augmentation, and the project virtual environment from requirements.txt.
# A second call checks and returns in a second or two.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${KIT_VENV:-$root/.venv}
python=${PYTHON:-python3}
# the installer of the Python packages: uv (pip where uv cannot serve) or pip alone
installer=${KIT_INSTALLER:-uv}
case "$installer" in
  uv|pip) ;;
  *) echo "error: KIT_INSTALLER=$installer: expected uv or pip" >&2; exit 2 ;;
esac

debian_packages=(ffmpeg sox libsox-fmt-all espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k
  festvox-us-slt-hts timidity freepats asterisk-core-sounds-en-g722 pocketsphinx-testdata
  asterisk-moh-opsound-g722 sound-theme-freedesktop sound-icons klettres-data)

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      echo "[setup] installing Debian packages: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "error: missing Debian packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
      exit 2
    fi
  fi
else
  for tool in ffmpeg sox; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found; install it (Debian: apt-get install $tool)" >&2; exit 2; }
  done
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
# the versions the kit was tested with (constraints.txt), where that file is there
constraints=()
pinned=("$root/requirements.txt")
if [ -f "$root/constraints.txt" ]; then constraints=(-c "$root/constraints.txt"); pinned+=("$root/constraints.txt"); fi
want=$(cat "${pinned[@]}" | sha256sum | cut -d' ' -f1)
have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "[setup] installing Python packages from requirements.txt${constraints[*]:+ at the versions in constraints.txt} into $venv"
  # PyPI's torch for Linux is the CUDA build: the venv takes 5.9 GB. pip peaks about 2.4 GB above
  # that while the wheels are on disk (uv about 0.1 GB); without a cache the wheels are not kept a
  # second time, and the scratch space sits on the venv's own disk rather than on a small /tmp.
  free_mb() { df -Pm "$venv" | awk 'NR == 2 {print $4}'; }
  free_mb=$(free_mb)
  if [ "${free_mb:-0}" -lt 8500 ]; then
    echo "[setup] warning: $((free_mb / 1024)) GB free under $venv; the install needs about 6 GB at its peak (8.5 GB with pip)" >&2
  fi
  scratch="$venv/.pip-scratch"
  rm -rf "$scratch"
  mkdir -p "$scratch"
  pip_install() {
    TMPDIR="$scratch" "$venv/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "$@"
  }
  # uv installs the versions pip would and downloads in parallel: 81 s here against pip's 167 s.
  # It reads no pip configuration, so an index configured for pip (a mirror) keeps pip; pip is also
  # the fallback wherever uv cannot be installed or fails. Bytecode is compiled at install time, as
  # pip does: where PYTHONDONTWRITEBYTECODE is set, every process would otherwise recompile it.
  if [ "$installer" = uv ] && { [ -n "${PIP_INDEX_URL:-}" ] || "$venv/bin/python" -m pip config get global.index-url >/dev/null 2>&1; }; then
    echo "[setup] pip has its own index configured; installing with pip"
    installer=pip
  fi
  # pip's reading of a yes/no setting
  is_yes() { case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in 1|y|yes|t|true|on) return 0 ;; *) return 1 ;; esac; }
  # An offline install from a wheel folder, asked of pip by its environment (PIP_NO_INDEX with
  # PIP_FIND_LINKS, README "Offline set-up"), goes to uv as uv's own flags, since uv reads neither.
  # Without PIP_NO_INDEX nothing is passed on: a find-links folder beside the index is pip's business.
  uv_sources=()
  if is_yes "${PIP_NO_INDEX:-}"; then
    read -r -a links <<<"${PIP_FIND_LINKS:-}"
    uv_sources+=(--no-index)
    for folder in ${links[@]+"${links[@]}"}; do uv_sources+=(--find-links "$folder"); done
  elif [ "$installer" = uv ] && is_yes "$("$venv/bin/python" -m pip config get global.no-index 2>/dev/null || true)"; then
    echo "[setup] pip is configured to install without an index; installing with pip"
    installer=pip
  fi
  # uv, writing to a file, reports an `error:` line, then `cause:` lines, then hints: the error and
  # its last cause say it. A log without an error line is pip's, from installing uv: its last line.
  uv_failure_reason() {
    local head cause
    head=$(grep -m 1 '^error:' "$1" | sed 's/^error: *//' || true)
    cause=$(grep -E '^ *cause:' "$1" | tail -n 1 | sed -E 's/^ *cause: *//' || true)
    [ -n "$head" ] || head=$(grep -v '^WARNING' "$1" | grep . | tail -n 1 || true)
    echo "${head}${cause:+: $cause}" | cut -c1-300
  }
  if [ "$installer" = uv ]; then
    uv_log="$scratch/uv.log"
    if ! pip_install --target "$scratch/uv" "uv>=0.13,<0.14" >"$uv_log" 2>&1 ||
       ! TMPDIR="$scratch" "$scratch/uv/bin/uv" pip install -q --python "$venv/bin/python" \
           --cache-dir "$scratch/cache" --compile-bytecode ${uv_sources[@]+"${uv_sources[@]}"} \
           -r "$root/requirements.txt" ${constraints[@]+"${constraints[@]}"} >>"$uv_log" 2>&1; then
      echo "[setup] uv failed ($(uv_failure_reason "$uv_log")); installing with pip instead" >&2
      # uv's half-filled cache would otherwise take the disk pip needs
      rm -rf "$scratch/uv" "$scratch/cache"
      installer=pip
    fi
  fi
  if [ "$installer" = pip ] && ! pip_install -r "$root/requirements.txt" ${constraints[@]+"${constraints[@]}"}; then
    rm -rf "$scratch"
    free_mb=$(free_mb)
    if [ "${free_mb:-0}" -lt 6000 ]; then
      echo "error: installing requirements.txt into $venv failed with $free_mb MB free on its disk; the install needs about 6 GB free (8.5 GB with pip)" >&2
    else
      echo "error: installing requirements.txt into $venv failed; pip's reason is above" >&2
    fi
    exit 1
  fi
  rm -rf "$scratch"
  echo "$want" > "$venv/.requirements.sha256"
fi
