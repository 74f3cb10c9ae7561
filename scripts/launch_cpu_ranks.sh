#!/usr/bin/env bash
# Rehearse a multi-rank run on a laptop: N CPU ranks (gloo) through torchrun, as a cluster launch would start them.
#   scripts/launch_cpu_ranks.sh [-n RANKS] [-m MODULE] CONFIG.yaml [key=value ...] [--resume auto]
# MODULE defaults to video_llavolta.train (image_llavolta.train, video_llavolta.qa_inference also work).
# Each rank logs its micro-batches to OUTPUT_DIR/steps/rank<R>.jsonl (step_log=true); a dead or stuck rank makes
# the others fail after collective_timeout seconds (60 here) instead of hanging. See docs/distributed.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=2
module=video_llavolta.train
while getopts "n:m:" opt; do
  case $opt in
    n) ranks=$OPTARG ;;
    m) module=$OPTARG ;;
    *) echo "usage: $0 [-n RANKS] [-m MODULE] CONFIG.yaml [key=value ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-n RANKS] [-m MODULE] CONFIG.yaml [key=value ...]" >&2; exit 2; }
extra=()
# Training: every rank's own step log and a short collective timeout (overridable: later key=value wins).
case $module in *.train) extra=(step_log=true collective_timeout=60) ;; esac
# One thread per rank: ranks share the laptop's cores; CUDA hidden so every rank takes the CPU (gloo) path.
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CUDA_VISIBLE_DEVICES="" exec .venv/bin/python -m torch.distributed.run \
  --nproc-per-node "$ranks" --master-addr 127.0.0.1 --master-port "$port" -m "$module" \
  "$1" "${extra[@]}" "${@:2}"
