#!/usr/bin/env bash
# Qwen2.5-Math-1.5B recipe.
# Baseline DPO, step 1: score every pair once with the frozen reference (the Stage 1 model) ->
# WORK_DIR/data/pairs_ref-sft<E>ep.jsonl (ref_chosen_logp / ref_rejected_logp). Then 03_dpo.
#
# Usage: [SFT_EPOCHS=5] [DRY_RUN=1] ./03_dpo_reference.sh [extra tools/score_reference.py flags]
# Runs one node, torchrun with GPUS_PER_NODE processes; on SLURM use 03_dpo_reference.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
score_args "$@"
torchrun_launch "$REDI_ROOT/tools/score_reference.py" "${ARGS[@]}"
