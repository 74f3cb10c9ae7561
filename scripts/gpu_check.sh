#!/usr/bin/env bash
# The GPU readiness check (docs/gpu.md): install what it needs into .venv, then run scripts/gpu_check.py with the
# arguments given (--out, --cpu, --seed). Without CUDA it runs the check's CPU mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1  # the table's rows as they come, also through a pipe

has_cuda() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }

if [ -x .venv/bin/python ] && has_cuda .venv/bin/python; then
  :  # a CUDA environment from an earlier run
elif [ ! -x .venv/bin/python ] && has_cuda python3; then
  # A GPU image whose python3 has a CUDA torch: the venv sees it, and pip keeps it rather than installing the
  # pinned torch over it (a CPU build where the wheel source offers one; nothing at all offline). Offline, point
  # pip at wheels of the rest: PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder> bash scripts/gpu_check.sh
  python3 -m venv --system-site-packages .venv
  grep -v '^torch==' constraints.txt >.venv/constraints-without-torch.txt
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-compile -c .venv/constraints-without-torch.txt -e .
else
  source scripts/setup.sh
fi

if has_cuda .venv/bin/python && ! .venv/bin/python -c 'import flash_attn' 2>/dev/null; then
  # A prebuilt wheel or nothing: building flash-attn from source takes a CUDA toolchain and up to an hour.
  .venv/bin/python -m pip install -q --no-compile --only-binary :all: flash-attn ||
    echo "gpu_check.sh: no flash-attn wheel installs here; the check skips its flash_attention_2 rows" >&2
fi

if command -v nvidia-smi >/dev/null && ! has_cuda .venv/bin/python; then
  echo "gpu_check.sh: this machine has an NVIDIA driver but .venv's torch has no CUDA (a CPU build installed" \
    "earlier?): move .venv away to let this script make one over the machine's CUDA torch" >&2
fi
exec .venv/bin/python scripts/gpu_check.py "$@"
