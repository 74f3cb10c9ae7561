#!/usr/bin/env bash
# Create .venv if needed and install the pinned dependencies plus the toolkit (CPU torch; DeepSpeed without CUDA ops).
# Extras (tests, lmms-eval) are test.sh's.
# Sourced by test.sh and quickstart.sh; run from the repository root.
set -euo pipefail
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned in the same command as deepspeed so nothing pulls a CUDA build; DS_BUILD_OPS=0 skips CUDA ops.
# --no-compile: modules compile when first imported, not every file of torch & co. up front (86 s -> 48 s here).
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-compile -c constraints.txt torch==2.13.0 -e .
