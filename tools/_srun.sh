#!/usr/bin/env bash
# Shared by slurm_train.sh and slurm_test.sh: run tools/SCRIPT as a Slurm job
# with GPUS tasks (GPUS_PER_NODE per node). Extra srun options: SRUN_ARGS.
#   tools/_srun.sh PARTITION JOB_NAME SCRIPT [args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TOOLS=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$TOOLS/$SCRIPT" "$@" --launcher slurm
