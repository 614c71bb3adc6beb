#!/usr/bin/env bash
# The kit's test command: set up (idempotent) and run the whole suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash data_prep/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# pytest-xdist: one worker per core, at most 4 (each builds the tiny corpus its tests need once;
# the tiny recipe's tests share one worker, conftest.py); TEST_WORKERS=0 runs in this process
workers=${TEST_WORKERS:-$(nproc)}
[ "$workers" -le 4 ] || workers=4
[ "$workers" -ge 2 ] || workers=0
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadgroup tests "$@"
