#!/usr/bin/env bash
# What a user gets from `pip install .`: build the wheel, install it into a fresh virtualenv
# beside the dev one (.venv-wheel; the CPU build of PyTorch first, never a plain "torch"), and
# run `livegen demo` from an empty temporary directory, so it must find the shipped model and
# presets inside the installed package. scripts/test.sh runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
dist=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$dist" "$work"' EXIT

rm -rf build  # setuptools' build folder keeps files deleted from the checkout
.venv/bin/pip wheel -q --disable-pip-version-check --no-deps -w "$dist" .
wheel=$(ls "$dist"/livegen-*.whl)

rm -rf .venv-wheel
"$PYTHON" -m venv .venv-wheel
.venv-wheel/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv-wheel/bin/pip install -q --disable-pip-version-check "$wheel"

cd "$work"
"$root/.venv-wheel/bin/livegen" demo --seed 1 > demo.out 2>&1 || { cat demo.out; echo "wheel check: livegen demo failed" >&2; exit 1; }
test -s livegen-demo/demo.mid || { cat demo.out; echo "wheel check: no livegen-demo/demo.mid" >&2; exit 1; }
"$root/.venv-wheel/bin/livegen" presets > presets.out && grep ballad presets.out > /dev/null || { echo "wheel check: shipped presets missing" >&2; exit 1; }
echo "wheel check: $(basename "$wheel") installed into .venv-wheel; livegen demo ran from $work"
