#!/usr/bin/env bash
# Qwen2.5-Math-7B recipe.
# Export METHOD's newest checkpoint (or iteration ITER) to a Hugging Face folder
# WORK_DIR/hf/<checkpoint folder name>[-iter<ITER>] with the base model's tokenizer and chat template.
# METHOD: sft redi redi_sym dpo simpo (default redi).
#
# Usage: [METHOD=redi] [ITER=N] [DRY_RUN=1] ./04_export_hf.sh [extra tools/convert_checkpoint.py mcore-to-hf flags]
# Runs one process; on SLURM use 04_export_hf.sbatch.
# Paths and parallel layouts: config.sh. The command line itself: ../common.sh.
set -euo pipefail
# shellcheck source=examples/qwen2.5_math_7b/config.sh
source "$(dirname "${BASH_SOURCE[0]}")/config.sh"
export_args "$@"
python_launch "$REDI_ROOT/tools/convert_checkpoint.py" "${ARGS[@]}"
