#!/usr/bin/env bash
# Qwen2.5-Math-1.5B recipe.
# Evaluate METHOD's exported model with the paper's protocol: MATH-500, AIME24, AMC, Minerva,
# OlympiadBench; 16 samples per problem, temperature 0.6, top_p 0.95, 32768 tokens; pass@1 and SEM.
# Resumes by chunks when rerun or requeued.
#
# Usage: [METHOD=redi] [ITER=N] [DRY_RUN=1] ./05_eval.sh [extra tools/eval_math.py flags]
# Runs one process; on SLURM use 05_eval.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
eval_args "$@"
python_launch "$REDI_ROOT/tools/eval_math.py" "${ARGS[@]}"
