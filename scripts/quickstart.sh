#!/usr/bin/env bash
# Fresh machine to the quickstart table: set up .venv, generate the synthetic data set, extract frames, train the
# baseline and the four-stage scheme, evaluate both. Extra arguments go to `llavolta quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/llavolta quickstart "$@"
