#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The wheel a user gets from `pip install .`, in a fresh venv, running `livegen demo` from a
# temporary directory (a few minutes; LIVEGEN_WHEEL_CHECK=0 skips it for a quick local run).
if [ "${LIVEGEN_WHEEL_CHECK:-1}" != 0 ]; then
  bash scripts/wheel_check.sh
fi
exec .venv/bin/python -m pytest -q "$@"
