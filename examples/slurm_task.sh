#!/usr/bin/env bash
# One SLURM task per GPU (srun --ntasks-per-node=GPUS): torch.distributed's environment from SLURM's task
# ids, then exec the command, so that the signals srun forwards (SIGUSR1: save and stop) reach the trainer.
# MASTER_ADDR and MASTER_PORT come from the batch script (examples/common.sh slurm_init).
set -euo pipefail
for v in SLURM_PROCID SLURM_LOCALID SLURM_NTASKS MASTER_ADDR MASTER_PORT; do
  if [[ -z ${!v:-} ]]; then
    echo "error: $v is not set: ${0##*/} runs under srun, launched by an examples/*/*.sbatch script" >&2
    exit 1
  fi
done
export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"
exec "$@"
