#!/usr/bin/env bash
# Fresh machine to green tests: create .venv, install the pinned dependencies and the toolkit, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
