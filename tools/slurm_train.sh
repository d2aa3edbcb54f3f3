#!/usr/bin/env bash
# Training on a Slurm cluster (8 GPUs on one node by default).
#   GPUS=8 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2; exit 2; }
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
exec bash "$(dirname "$0")/_srun.sh" "$PARTITION" "$JOB_NAME" train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
