#!/usr/bin/env bash
# Qwen2.5-Math-7B recipe.
# Data: the paper's SFT set (first correct trace per problem) and pair set (first correct vs first
# incorrect; prompt <= 800 and responses <= 19000 tokens) from OpenR1-Math-Raw -> DATA_DIR/{sft,pairs}.jsonl.
#
# Usage: [DRY_RUN=1] ./00_build_data.sh [extra tools/build_redi_data.py flags]
# Runs one process; on SLURM use 00_build_data.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_7b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
data_args "$@"
python_launch "$REDI_ROOT/tools/build_redi_data.py" "${ARGS[@]}"
