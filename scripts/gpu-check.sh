#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the CUDA tests and the inference benchmark (CPU and CUDA side
# by side) in one call.  Needs a CUDA build of torch in .venv (install it before scripts/setup.sh).
# Output: the test summary, then bench JSON in ${OUT:-.}/gpu-bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if ok else None); sys.exit(0 if ok else 3)' \
  || { echo "gpu-check: torch sees no CUDA device here" >&2; exit 3; }
status=0
"$PY" -m pytest -q -rs tests/model/test_cuda.py || status=$?
"$PY" -m livegen bench inference --json -o "${OUT:-.}/gpu-bench.json" || status=$?
cat "${OUT:-.}/gpu-bench.json" 2>/dev/null | head -c 4000
exit $status
