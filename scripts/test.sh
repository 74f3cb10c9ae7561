#!/usr/bin/env bash
# Fresh machine to green tests: create .venv, install the pinned dependencies and the toolkit, lint, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The lmms-eval wrapper's test: lmms-eval's runtime (the eval extra), then lmms-eval itself without its declared
# dependencies, whose torchvision is a CUDA-only build for torch 2.13 (see README, "lmms-eval").
.venv/bin/python -m pip install -q --no-compile -c constraints.txt torch==2.13.0 -e ".[test,eval]"
.venv/bin/python -m pip install -q --no-compile -c constraints.txt --no-deps lmms-eval==0.7.3
# The house rules before the tests: lint and format (ruff), and the layers (import-linter, pyproject.toml).
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest -q "$@"
