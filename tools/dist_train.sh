#!/usr/bin/env bash
# Distributed training (torchrun), one or several nodes.
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes train on CPU with the gloo backend.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CONFIG GPUS [train.py args...]" >&2; exit 2; }
exec bash "$(dirname "$0")/_torchrun.sh" "$2" train.py "$1" "${@:3}"
