#!/usr/bin/env bash
# Submit a recipe's whole pipeline to SLURM as a chain of dependent jobs (afterok); logs go to
# WORK_DIR/logs/<job name>-<job id>.out.
#
# Usage: [SFT_EPOCHS=5] [TRAIN_NODES=N] [SKIP=data,convert,sft] [DRY_RUN=1] \
#          examples/submit_all.sh RECIPE [METHOD...]
#   RECIPE   qwen2.5_math_1.5b or qwen2.5_math_7b (a folder next to this script)
#   METHOD   sft redi redi_sym dpo simpo (default: sft redi); each is trained (sft: once, shared),
#            exported and evaluated
#   SKIP     stages whose output already exists (data, convert, sft)
#   TRAIN_NODES  nodes for the GPU training jobs (default: the #SBATCH line of each script)
# The final model (REDI.md headline table):   examples/submit_all.sh qwen2.5_math_1.5b sft redi
# Table 2, every method from SFT-3ep:         SFT_EPOCHS=3 examples/submit_all.sh qwen2.5_math_1.5b \
#                                                 sft redi redi_sym simpo dpo
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  exit 2
fi
recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$1"
if [[ ! -f $recipe_dir/config.sh ]]; then
  echo "error: no recipe '$1' (no $recipe_dir/config.sh)" >&2
  exit 2
fi
# shellcheck source=examples/qwen2.5_math_1.5b/config.sh
source "$recipe_dir/config.sh"
shift
methods=("$@")
((${#methods[@]})) || methods=(sft redi)
: "${SKIP:=}"
: "${TRAIN_NODES:=}"

declare -A STAGE2=([redi]=03_redi [redi_sym]=03_redi_symmetric [simpo]=03_simpo [dpo]=03_dpo)
for m in "${methods[@]}"; do
  check_method "$m"
  if [[ $m != sft && ! -f $recipe_dir/${STAGE2[$m]}.sbatch ]]; then
    die "recipe $RECIPE has no ${STAGE2[$m]}.sbatch (METHOD $m)"
  fi
done
if ! is_dry; then
  command -v sbatch >/dev/null || die "sbatch not found on PATH: run this on a SLURM login node (or DRY_RUN=1)"
  mkdir -p "$WORK_DIR/logs"
fi

skipped() {
  [[ ",$SKIP," == *",$1,"* ]]
}

FAKE_ID=1000
# submit DEPENDENCIES SCRIPT [KEY=VALUE...] -> JOB: sbatch SCRIPT after DEPENDENCIES (job ids, ':'-separated)
submit() {
  local deps=$1 script=$2 exports="ALL,REDI_ROOT=$REDI_ROOT,SFT_EPOCHS=$SFT_EPOCHS"
  shift 2
  local kv
  for kv in "$@"; do
    exports+=",$kv"
  done
  local -a cmd=(sbatch --parsable --output="$WORK_DIR/logs/%x-%j.out" --export="$exports")
  [[ -n $deps ]] && cmd+=(--dependency="afterok:$deps")
  if [[ -n $TRAIN_NODES ]] && grep -q '^#SBATCH --ntasks-per-node' "$recipe_dir/$script"; then
    cmd+=(--nodes="$TRAIN_NODES")
  fi
  cmd+=("$recipe_dir/$script")
  if is_dry; then
    launch "${cmd[@]}"
    JOB=$((++FAKE_ID))
  else
    JOB="$("${cmd[@]}")"
    JOB="${JOB%%;*}"
    note "submitted $script ${*:-} as job $JOB"
  fi
}

prep=
if ! skipped data; then
  submit "" 00_build_data.sbatch
  prep=$JOB
fi
if ! skipped convert; then
  submit "" 01_convert_hf.sbatch
  prep="${prep:+$prep:}$JOB"
fi
sft=
if ! skipped sft; then
  submit "$prep" 02_sft.sbatch
  sft=$JOB
fi
for m in "${methods[@]}"; do
  trained=$sft
  case $m in
  sft) ;;
  dpo)
    submit "$sft" 03_dpo_reference.sbatch
    submit "$JOB" 03_dpo.sbatch
    trained=$JOB
    ;;
  *)
    submit "$sft" "${STAGE2[$m]}.sbatch"
    trained=$JOB
    ;;
  esac
  submit "$trained" 04_export_hf.sbatch "METHOD=$m"
  submit "$JOB" 05_eval.sbatch "METHOD=$m"
done
