#!/usr/bin/env bash
# Qwen2.5-Math-7B recipe.
# Stage 2: REDI (alpha 0.8, lr 1e-6) on (correct, incorrect) pairs from the Stage 1 checkpoint; global
# batch 32 pairs, 1 epoch, max prompt 800, max total 19800 tokens. Resumes when rerun or requeued.
# Layout (config.sh): 8 GPUs TP2 x CP2 x DP2 with recompute; 16 GPUs TP4 x CP2 x DP2.
#
# Usage: [SFT_EPOCHS=5] [DRY_RUN=1] ./03_redi.sh [extra pretrain_redi.py flags]
# Runs one node, torchrun with GPUS_PER_NODE processes; on SLURM use 03_redi.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_7b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
pair_args redi "$@"
torchrun_launch "$REDI_ROOT/pretrain_redi.py" "${ARGS[@]}"
