#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run tools/SCRIPT on GPUS
# processes per node with torchrun. Multi-node: NNODES, NODE_RANK,
# MASTER_ADDR and PORT, set on every node.
#   tools/_torchrun.sh GPUS SCRIPT [args...]
set -euo pipefail
GPUS=$1
SCRIPT=$2
shift 2
TOOLS=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$TOOLS/$SCRIPT" "$@" --launcher pytorch
