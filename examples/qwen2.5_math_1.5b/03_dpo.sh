#!/usr/bin/env bash
# Qwen2.5-Math-1.5B recipe.
# Baseline DPO, step 2 (after 03_dpo_reference): DPO (beta 0.001, lr 2e-7) from the Stage 1 checkpoint
# on the scored pairs; otherwise as 03_redi.
#
# Usage: [SFT_EPOCHS=5] [DRY_RUN=1] ./03_dpo.sh [extra pretrain_redi.py flags]
# Runs one node, torchrun with GPUS_PER_NODE processes; on SLURM use 03_dpo.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
pair_args dpo "$@"
torchrun_launch "$REDI_ROOT/pretrain_redi.py" "${ARGS[@]}"
