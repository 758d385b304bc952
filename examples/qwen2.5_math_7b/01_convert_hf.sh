#!/usr/bin/env bash
# Qwen2.5-Math-7B recipe.
# HF weights -> megatron dist checkpoint WORK_DIR/checkpoints/base, with the paper's config change:
# rope_theta 300000 and max_position_embeddings 32768 (stock: 10000 and 4096). One CPU process.
#
# Usage: [DRY_RUN=1] ./01_convert_hf.sh [extra tools/convert_checkpoint.py hf-to-mcore flags]
# Runs one process; on SLURM use 01_convert_hf.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_7b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
convert_args "$@"
python_launch "$REDI_ROOT/tools/convert_checkpoint.py" "${ARGS[@]}"
