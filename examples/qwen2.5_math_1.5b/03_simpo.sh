#!/usr/bin/env bash
# Qwen2.5-Math-1.5B recipe.
# Baseline: SimPO (beta 2, gamma 1, lr 5e-7) from the Stage 1 checkpoint; otherwise as 03_redi.
#
# Usage: [SFT_EPOCHS=5] [DRY_RUN=1] ./03_simpo.sh [extra pretrain_redi.py flags]
# Runs one node, torchrun with GPUS_PER_NODE processes; on SLURM use 03_simpo.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
pair_args simpo "$@"
torchrun_launch "$REDI_ROOT/pretrain_redi.py" "${ARGS[@]}"
