#!/usr/bin/env bash
# Distributed evaluation (torchrun), one or several nodes.
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2; exit 2; }
exec bash "$(dirname "$0")/_torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
