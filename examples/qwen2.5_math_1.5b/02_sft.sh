#!/usr/bin/env bash
# Qwen2.5-Math-1.5B recipe.
# Stage 1: SFT on the positive traces. Paper: lr 5e-5, global batch 128 sequences, SFT_EPOCHS epochs
# (5; 3 for the ablations of Table 2), max length 32768, 10% warmup then linear decay, AdamW wd 1e-4,
# clip 1.0, bf16, seed 42. Resumes from its own newest checkpoint when rerun or requeued.
#
# Usage: [SFT_EPOCHS=5] [DRY_RUN=1] ./02_sft.sh [extra pretrain_redi.py flags]
# Runs one node, torchrun with GPUS_PER_NODE processes; on SLURM use 02_sft.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
sft_args "$@"
torchrun_launch "$REDI_ROOT/pretrain_redi.py" "${ARGS[@]}"
