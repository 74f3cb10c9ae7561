#!/usr/bin/env bash
# Fresh machine to green tests: create .venv, install the pinned dependencies and the toolkit, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned in the same command as deepspeed so nothing pulls a CUDA build; DS_BUILD_OPS=0 skips CUDA ops.
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0 -e ".[test]"
exec .venv/bin/python -m pytest -q "$@"
