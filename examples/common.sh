# shellcheck shell=bash
# Shared by every recipe under examples/: paths, the launch function (with DRY_RUN), torchrun and SLURM
# helpers, and the command line of each stage of the REDI recipe (Xu et al. 2025, arXiv 2505.24850).
#
# Sourced by examples/<recipe>/config.sh, which sets the model-specific values first. Never run it.
#
# Environment (all optional; config.sh gives the recipe's defaults):
#   HF_MODEL       Hugging Face folder of the base model (config.json, safetensors, tokenizer)
#   RAW_DATA       OpenR1-Math-Raw (jsonl / parquet / save_to_disk) for 00_build_data
#   WORK_DIR       checkpoints, exported models, metrics, eval results and logs of this recipe
#   DATA_DIR       sft.jsonl and pairs.jsonl (written by 00_build_data)
#   GPUS_PER_NODE  GPUs per node (default: SLURM_GPUS_ON_NODE, else 8)
#   NNODES         nodes for the torchrun scripts (sbatch scripts take SLURM's allocation)
#   NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node torchrun without SLURM (NNODES > 1)
#   SFT_EPOCHS     Stage 1 epochs: 5 for the final model, 3 for the paper's ablations (Table 2)
#   METHOD         which Stage 2 run 04_export_hf / 05_eval work on: sft redi redi_sym dpo simpo
#   ITER           export / evaluate this saved iteration instead of the newest one
#   TP_SIZE, PP_SIZE, CP_SIZE, RECOMPUTE, MICRO_BATCH   override the recipe's parallel layout
#   PYTHON         interpreter (default: the project's .venv/bin/python if it exists, else python)
#   DRY_RUN=1      print each command on one line starting with "DRY-RUN:" instead of running it
# Arguments given to a stage script are appended to the command it launches (argparse: last one wins),
# e.g. `02_sft.sh --train-iters 20 --exit-interval 10`.

REDI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  # the environment ./scripts/setup_env.sh made, so the recipes work right after the README's set-up
  if [[ -x "$REDI_ROOT/.venv/bin/python" ]]; then PYTHON="$REDI_ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
: "${DRY_RUN:=0}"
: "${GPUS_PER_NODE:=${SLURM_GPUS_ON_NODE:-8}}"
: "${NNODES:=1}"
: "${MICRO_BATCH:=1}"
: "${SFT_EPOCHS:=5}"
: "${METHOD:=redi}"
: "${ITER:=}"
REDI_IN_SLURM=0
REDI_BATCH=0
REDI_STOP=0
REDI_REQUEUE=0
REDI_CHILD=
CPUS_ARGS=()

# ---------------------------------------------------------------------------------------------------------
# small helpers

die() {
  echo "error: $*" >&2
  exit 1
}

note() {
  echo "[$(date '+%F %T')] $*" >&2
}

is_dry() {
  [[ $DRY_RUN == 1 ]]
}

case ${DRY_RUN,,} in
1 | true | yes) DRY_RUN=1 ;;
0 | false | no | "") DRY_RUN=0 ;;
*) die "DRY_RUN must be 1 (print the commands) or 0 (run them), got '$DRY_RUN'" ;;
esac

is_uint() {
  [[ $1 =~ ^[0-9]+$ ]]
}

# launch CMD...: run CMD, or with DRY_RUN=1 print it, shell-quoted on one line, and return 0.
launch() {
  if is_dry; then
    local line="DRY-RUN:" a
    for a in "$@"; do
      if [[ $a =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
        line+=" $a"
      else
        line+=" $(printf '%q' "$a")" # quoted so that the line can be pasted into a shell
      fi
    done
    echo "$line"
    return 0
  fi
  note "running: $*"
  "$@"
}

# require_path PATH WHAT HINT: fail with a message naming WHAT when PATH does not exist (not in dry runs).
require_path() {
  is_dry && return 0
  [[ -e $1 ]] || die "$2 not found: $1 ($3)"
}

require_hf_model() {
  is_dry && return 0
  [[ -f $HF_MODEL/config.json ]] ||
    die "HF_MODEL=$HF_MODEL is not a Hugging Face model folder (no config.json): edit HF_MODEL in $RECIPE_DIR/config.sh or export HF_MODEL=/path/to/$MODEL_NAME"
}

# has_checkpoint DIR: true when DIR holds a complete training checkpoint (what --load resumes from).
has_checkpoint() {
  local d
  for d in "$1"/iter_[0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
    [[ -f $d/redi_meta.json ]] && return 0
  done
  return 1
}

# newest_checkpoint SAVE: the name of the newest complete iter_* folder in SAVE (empty if none)
newest_checkpoint() {
  local d newest=
  for d in "$1"/iter_[0-9][0-9][0-9][0-9][0-9][0-9][0-9]; do
    [[ -f $d/redi_meta.json ]] && newest="${d##*/}"
  done
  printf '%s' "$newest"
}

# init_or_resume SAVE INIT: INIT_ARGS = --load SAVE when SAVE already holds a checkpoint (a requeued or
# rerun job continues where it stopped), else --pretrained-checkpoint INIT (weights only, fresh optimizer).
init_or_resume() {
  REDI_SAVE="$1"
  REDI_CKPT_BEFORE="$(newest_checkpoint "$1")"
  if has_checkpoint "$1"; then
    note "resuming from the newest complete checkpoint in $1"
    INIT_ARGS=(--load "$1")
  else
    require_path "$2" "initial checkpoint" "run the previous stage first"
    INIT_ARGS=(--pretrained-checkpoint "$2")
  fi
}

# ---------------------------------------------------------------------------------------------------------
# parallel layout

# use_layout TP PP CP RECOMPUTE: the recipe's layout, each value overridable by TP_SIZE / PP_SIZE / CP_SIZE /
# RECOMPUTE. Sequence parallelism goes with TP > 1; the distributed optimizer and bf16 are always on.
use_layout() {
  TP="${TP_SIZE:-$1}"
  PP="${PP_SIZE:-$2}"
  CP="${CP_SIZE:-$3}"
  local recompute="${RECOMPUTE:-$4}"
  local v
  for v in "$TP" "$PP" "$CP" "$MICRO_BATCH" "$NNODES" "$GPUS_PER_NODE"; do
    if ! [[ $v =~ ^[1-9][0-9]*$ ]]; then
      die "TP_SIZE, PP_SIZE, CP_SIZE, MICRO_BATCH, NNODES and GPUS_PER_NODE must be positive integers (got '$v')"
    fi
  done
  WORLD=$((NNODES * GPUS_PER_NODE))
  ((WORLD % (TP * PP * CP) == 0)) ||
    die "$WORLD GPUs ($NNODES nodes x $GPUS_PER_NODE) are not divisible by TP $TP x PP $PP x CP $CP"
  DP=$((WORLD / (TP * PP * CP)))
  LAYOUT_ARGS=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
    --context-parallel-size "$CP")
  ((TP > 1)) && LAYOUT_ARGS+=(--sequence-parallel)
  [[ $recompute == 1 ]] && LAYOUT_ARGS+=(--recompute-activations)
  return 0
}

# check_batch GLOBAL: the global batch must split into micro-batches over the data-parallel ranks.
check_batch() {
  (($1 % (MICRO_BATCH * DP) == 0)) ||
    die "global batch $1 is not divisible by micro-batch $MICRO_BATCH x data-parallel size $DP (= $WORLD GPUs / (TP $TP x PP $PP x CP $CP)): change MICRO_BATCH, TP_SIZE, CP_SIZE or the GPU count"
  note "layout: $WORLD GPUs = TP $TP x PP $PP x CP $CP x DP $DP; global batch $1 = micro $MICRO_BATCH x DP $DP x $(($1 / (MICRO_BATCH * DP))) accumulation steps"
}

# ---------------------------------------------------------------------------------------------------------
# launchers

# torchrun_launch SCRIPT ARGS...: one node (--standalone), or NNODES > 1 with NODE_RANK/MASTER_ADDR/MASTER_PORT.
torchrun_launch() {
  local -a rdzv
  if ((NNODES == 1)); then
    rdzv=(--standalone --nnodes 1)
  else
    [[ -n ${NODE_RANK:-} && -n ${MASTER_ADDR:-} ]] ||
      die "NNODES=$NNODES needs NODE_RANK and MASTER_ADDR (and MASTER_PORT) on every node; on SLURM use the .sbatch script"
    rdzv=(--nnodes "$NNODES" --node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR"
      --master-port "${MASTER_PORT:-29500}")
  fi
  launch "$PYTHON" -m torch.distributed.run "${rdzv[@]}" --nproc-per-node "$GPUS_PER_NODE" "$@"
}

# python_launch SCRIPT ARGS...: a one-process tool, locally.
python_launch() {
  launch "$PYTHON" "$@"
}

# slurm_init: for .sbatch scripts. Fails outside SLURM (naming the variable); sets NNODES, MASTER_ADDR,
# MASTER_PORT from the allocation; installs the signal traps that turn the time-limit warning into
# "checkpoint, then requeue" (and SIGTERM into "checkpoint, then stop").
slurm_init() {
  local me="${0##*/}"
  REDI_BATCH=1
  if [[ -z ${SLURM_JOB_ID:-} ]]; then
    if ! is_dry; then
      die "$me is a SLURM batch script but SLURM_JOB_ID is not set (not inside a SLURM job): submit it with 'sbatch $0', run the torchrun script ${me%.sbatch}.sh on one node, or set DRY_RUN=1 to print the command"
    fi
    note "DRY_RUN outside SLURM: assuming NNODES=$NNODES and MASTER_ADDR=${MASTER_ADDR:-localhost}"
    : "${MASTER_ADDR:=localhost}"
    : "${MASTER_PORT:=29500}"
    return 0
  fi
  REDI_IN_SLURM=1
  [[ -n ${SLURM_JOB_NODELIST:-} ]] || die "SLURM_JOB_ID=$SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not: run $me through sbatch"
  NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-}}"
  is_uint "$NNODES" || die "SLURM_NNODES / SLURM_JOB_NUM_NODES is not set (got '$NNODES'): run $me through sbatch"
  command -v scontrol >/dev/null || die "scontrol not found on PATH: $me needs SLURM's client commands"
  # the first host of the allocation (no `| head -n1`: under pipefail its SIGPIPE to scontrol is fatal)
  local hosts
  hosts="$(scontrol show hostnames "$SLURM_JOB_NODELIST")" ||
    die "scontrol show hostnames '$SLURM_JOB_NODELIST' failed"
  MASTER_ADDR="${hosts%%$'\n'*}"
  [[ -n $MASTER_ADDR ]] || die "scontrol show hostnames '$SLURM_JOB_NODELIST' printed no host name"
  if is_uint "$SLURM_JOB_ID"; then
    : "${MASTER_PORT:=$((20000 + SLURM_JOB_ID % 20000))}"
  else
    : "${MASTER_PORT:=29500}"
  fi
  export MASTER_ADDR MASTER_PORT
  # srun no longer inherits sbatch's --cpus-per-task (Slurm >= 22.05): pass it on
  CPUS_ARGS=()
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && CPUS_ARGS=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  is_dry || mkdir -p "$WORK_DIR/logs"
  note "SLURM job $SLURM_JOB_ID (${SLURM_JOB_NAME:-?}, restart ${SLURM_RESTART_COUNT:-0}): $NNODES node(s) $SLURM_JOB_NODELIST, master $MASTER_ADDR:$MASTER_PORT"
  # #SBATCH --signal=B:USR1@120 sends SIGUSR1 to this shell only, 120 s before the time limit. srun forwards
  # SIGUSR1 to its tasks (a SIGTERM it would turn into SIGKILL), and the trainer treats SIGUSR1 like SIGTERM:
  # finish the step, save, exit 0. Then requeue: the rerun resumes. A SIGTERM (scancel, or a preemption
  # without PreemptParameters=send_user_signal) also asks for a checkpoint but does not requeue: a cancelled
  # job stays cancelled, and SLURM requeues a preempted --requeue job itself.
  trap '_slurm_signal USR1' USR1
  trap '_slurm_signal TERM' TERM
}

_slurm_signal() {
  note "received SIG$1: asking the job step to save a checkpoint and stop"
  REDI_STOP=1
  [[ $1 == USR1 ]] && REDI_REQUEUE=1
  if [[ -n $REDI_CHILD ]]; then
    kill -USR1 "$REDI_CHILD" 2>/dev/null || true
  fi
}

# _slurm_run SRUN_OPTIONS... -- COMMAND...: srun in the background (so the traps run at once), wait for it,
# requeue the job if a signal stopped it.
_slurm_run() {
  local -a opts=()
  while [[ $1 != -- ]]; do
    opts+=("$1")
    shift
  done
  shift
  local -a cmd=(srun "${opts[@]}" "$@")
  if is_dry; then
    launch "${cmd[@]}"
    return 0
  fi
  ((REDI_IN_SLURM)) || die "internal: slurm_init was not called"
  if ((REDI_STOP)); then
    _stopped 0
  fi
  note "running: ${cmd[*]}"
  "${cmd[@]}" &
  REDI_CHILD=$!
  while kill -0 "$REDI_CHILD" 2>/dev/null; do
    wait "$REDI_CHILD" || true # a trapped signal interrupts wait: wait again
  done
  local rc=0
  wait "$REDI_CHILD" || rc=$?
  REDI_CHILD=
  if ((REDI_STOP)); then
    _stopped "$rc"
  fi
  ((rc == 0)) || die "job step failed with exit code $rc"
}

# A signal stopped the step. Whether to requeue follows from the checkpoint on disk, not from the step's exit
# code (torchrun exits 1 after its workers saved and exited 0 on SIGTERM): requeue only when a checkpoint
# newer than the one this job started from was written; otherwise stop with an error so no job loops.
_stopped() {
  if [[ -n ${REDI_SAVE:-} && "$(newest_checkpoint "$REDI_SAVE")" == "${REDI_CKPT_BEFORE:-}" ]]; then
    die "stopped by a signal (step exit code $1) but no new checkpoint appeared in $REDI_SAVE: not requeueing; see the step's log"
  fi
  if ((REDI_REQUEUE)); then
    note "stopped at the time-limit warning (step exit code $1): requeueing job $SLURM_JOB_ID; it resumes from the newest checkpoint"
    scontrol requeue "$SLURM_JOB_ID" ||
      note "scontrol requeue failed: submit this script again to resume from the newest checkpoint"
  else
    note "stopped by SIGTERM (step exit code $1): not requeueing; rerun or resubmit to resume from the newest checkpoint"
  fi
  exit 0
}

# slurm_launch_ranks SCRIPT ARGS...: one task per GPU on every node of the allocation. srun is the launcher
# (no torchrun in between: torchrun would SIGKILL its workers 30 s after forwarding a signal, too soon to
# save a checkpoint); examples/slurm_task.sh maps SLURM's task ids to RANK / LOCAL_RANK / WORLD_SIZE.
slurm_launch_ranks() {
  _slurm_run --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks-per-node="$GPUS_PER_NODE" "${CPUS_ARGS[@]}" \
    --export="ALL,MASTER_ADDR=$MASTER_ADDR,MASTER_PORT=$MASTER_PORT" \
    -- bash "$REDI_ROOT/examples/slurm_task.sh" "$PYTHON" "$@"
}

# slurm_launch_one SCRIPT ARGS...: a one-process tool on the first node (it uses that node's GPUs, if any).
slurm_launch_one() {
  _slurm_run --nodes=1 --ntasks=1 "${CPUS_ARGS[@]}" -- "$PYTHON" "$@"
}

# ---------------------------------------------------------------------------------------------------------
# the recipe: paths and the command line of each stage (REDI.md: "Recipe (Qwen2.5-Math-1.5B base)")

ROPE_THETA=300000
MAX_POSITION_EMBEDDINGS=32768
SFT_LR=5e-5
SFT_GLOBAL_BATCH=128
SFT_SEQ_LENGTH=32768
PAIR_GLOBAL_BATCH=32
PAIR_EPOCHS=1
PAIR_SEQ_LENGTH=19800
PAIR_MAX_PROMPT=800
METHODS=(sft redi redi_sym dpo simpo)
EVAL_BENCHMARKS="math500,aime24,amc,minerva,olympiadbench"

recipe_paths() {
  : "${WORK_DIR:=$REDI_ROOT/runs/$RECIPE}"
  : "${DATA_DIR:=$REDI_ROOT/runs/data}"
  CKPT_DIR="$WORK_DIR/checkpoints"
  BASE_CKPT="$CKPT_DIR/base"                   # hf-to-mcore output (rope/position overrides applied)
  MODEL_CONFIG="$BASE_CKPT/hf_config.json"     # the HF config with those overrides, kept by the converter
  SFT_CKPT="$CKPT_DIR/sft-${SFT_EPOCHS}ep"
  REF_PAIRS="$WORK_DIR/data/pairs_ref-sft${SFT_EPOCHS}ep.jsonl" # pairs + SFT reference log-probs (DPO)
}

# method_ckpt METHOD: the training --save folder of a Stage 1 or Stage 2 run
method_ckpt() {
  if [[ $1 == sft ]]; then
    echo "$SFT_CKPT"
  else
    echo "$CKPT_DIR/$1-from-sft${SFT_EPOCHS}ep"
  fi
}

check_method() {
  local m
  for m in "${METHODS[@]}"; do
    [[ $1 == "$m" ]] && return 0
  done
  die "METHOD=$1 is not one of: ${METHODS[*]}"
}

# Everything both stages share: the model, the paper's optimizer, schedule and precision, checkpoints, logs.
common_train_args() { # common_train_args RUN_NAME SAVE_DIR SAVE_INTERVAL
  TRAIN_ARGS=(
    --model-config "$MODEL_CONFIG" --tokenizer-model "$HF_MODEL"
    --rope-theta "$ROPE_THETA" --max-position-embeddings "$MAX_POSITION_EMBEDDINGS"
    --micro-batch-size "$MICRO_BATCH"
    --lr-warmup-fraction 0.1 --lr-decay-style linear --min-lr 0
    --weight-decay 1e-4 --adam-beta1 0.9 --adam-beta2 0.999 --adam-eps 1e-8 --clip-grad 1.0
    --seed 42 --bf16 --use-distributed-optimizer "${LAYOUT_ARGS[@]}"
    "${INIT_ARGS[@]}" --save "$2" --save-interval "$3"
    --log-interval 1 --metrics-file "$WORK_DIR/metrics/$1.jsonl" --tensorboard-dir "$WORK_DIR/tensorboard/$1"
  )
  ((REDI_BATCH)) && TRAIN_ARGS+=(--no-progress) # no progress bars in log files
  return 0
}

# Stage 1: SFT on the positive traces. -> ARGS (pretrain_redi.py's argv)
sft_args() {
  sft_layout
  check_batch "$SFT_GLOBAL_BATCH"
  require_hf_model
  require_path "$DATA_DIR/sft.jsonl" "SFT data" "build it with 00_build_data"
  init_or_resume "$SFT_CKPT" "$BASE_CKPT"
  common_train_args "sft-${SFT_EPOCHS}ep" "$SFT_CKPT" "${SFT_SAVE_INTERVAL:-100}"
  ARGS=(--loss-type sft --data-path "$DATA_DIR/sft.jsonl" --seq-length "$SFT_SEQ_LENGTH"
    --global-batch-size "$SFT_GLOBAL_BATCH" --train-epochs "$SFT_EPOCHS" --lr "$SFT_LR"
    "${TRAIN_ARGS[@]}" --keep-last "${SFT_KEEP_LAST:-2}" "$@")
}

# Stage 2 from the Stage 1 checkpoint: pair_args METHOD [extra args] -> ARGS
pair_args() {
  local method="$1"
  shift
  local -a objective
  local data="$DATA_DIR/pairs.jsonl"
  case $method in
  redi) objective=(--loss-type redi --redi-alpha 0.8 --lr 1e-6) ;;
  redi_sym) objective=(--loss-type redi --redi-alpha 1.0 --lr 2e-7) ;;
  simpo) objective=(--loss-type simpo --simpo-beta 2.0 --simpo-gamma 1.0 --lr 5e-7) ;;
  dpo)
    objective=(--loss-type dpo --dpo-beta 0.001 --lr 2e-7)
    data="$REF_PAIRS"
    ;;
  *) die "no Stage 2 objective for METHOD=$method (one of: redi redi_sym dpo simpo)" ;;
  esac
  pair_layout
  check_batch "$PAIR_GLOBAL_BATCH"
  require_hf_model
  if [[ $method == dpo ]]; then
    require_path "$data" "DPO pairs with reference log-probs" "score them with 03_dpo_reference"
  else
    require_path "$data" "pair data" "build it with 00_build_data"
  fi
  local save
  save="$(method_ckpt "$method")"
  init_or_resume "$save" "$SFT_CKPT"
  common_train_args "$method-from-sft${SFT_EPOCHS}ep" "$save" "${PAIR_SAVE_INTERVAL:-200}"
  ARGS=("${objective[@]}" --data-path "$data" --seq-length "$PAIR_SEQ_LENGTH"
    --max-prompt-length "$PAIR_MAX_PROMPT" --global-batch-size "$PAIR_GLOBAL_BATCH"
    --train-epochs "$PAIR_EPOCHS" "${TRAIN_ARGS[@]}" "$@")
  [[ -n ${PAIR_KEEP_LAST:-} ]] && ARGS+=(--keep-last "$PAIR_KEEP_LAST")
  return 0
}

# DPO's frozen reference: the SFT model's summed log-probs of every pair, tokenised and truncated exactly
# as Stage 2 will see them. -> ARGS (tools/score_reference.py's argv)
score_args() {
  if [[ -f $REF_PAIRS ]] && ! is_dry; then
    done_already "$REF_PAIRS exists: pairs already scored with $SFT_CKPT (delete it to score again)"
  fi
  score_layout
  require_hf_model
  require_path "$DATA_DIR/pairs.jsonl" "pair data" "build it with 00_build_data"
  require_path "$SFT_CKPT" "SFT checkpoint" "run 02_sft first"
  ARGS=(--load "$SFT_CKPT" --model-config "$MODEL_CONFIG" --tokenizer-model "$HF_MODEL"
    --data-path "$DATA_DIR/pairs.jsonl" --output "$REF_PAIRS"
    --rope-theta "$ROPE_THETA" --max-position-embeddings "$MAX_POSITION_EMBEDDINGS"
    --seq-length "$PAIR_SEQ_LENGTH" --max-prompt-length "$PAIR_MAX_PROMPT" --bf16
    --micro-batch-size "$MICRO_BATCH" "${LAYOUT_ARGS[@]}" "$@")
}

# done_already MESSAGE: the stage's output exists (a rerun or a requeued job): say so and stop, successfully.
done_already() {
  note "$1"
  exit 0
}

# 00: the paper's SFT and pair sets from OpenR1-Math-Raw. -> ARGS
data_args() {
  if [[ -f $DATA_DIR/report.json ]] && ! is_dry; then
    done_already "$DATA_DIR/report.json exists: data already built (delete $DATA_DIR to rebuild)"
  fi
  require_path "$RAW_DATA" "RAW_DATA (OpenR1-Math-Raw)" "edit RAW_DATA in $RECIPE_DIR/config.sh or export it"
  require_hf_model
  ARGS=(--input "$RAW_DATA" --output-dir "$DATA_DIR" --tokenizer-model "$HF_MODEL" "$@")
}

# 01: HF weights -> megatron dist checkpoint, with the paper's rope_theta / max_position_embeddings.
convert_args() {
  if [[ -e $BASE_CKPT ]] && ! is_dry; then
    done_already "$BASE_CKPT exists: already converted (delete it to convert again)"
  fi
  require_hf_model
  ARGS=(hf-to-mcore --hf-dir "$HF_MODEL" --output "$BASE_CKPT"
    --rope-theta "$ROPE_THETA" --max-position-embeddings "$MAX_POSITION_EMBEDDINGS" "$@")
}

# export_dir METHOD: its HF folder, named like its checkpoint folder (plus -iterN with ITER)
export_dir() {
  local name
  name="$(method_ckpt "$1")"
  echo "$WORK_DIR/hf/${name##*/}${ITER:+-iter$ITER}"
}

# 04: METHOD's newest checkpoint (or ITER) -> HF folder, tokenizer and chat template from HF_MODEL.
export_args() {
  check_method "$METHOD"
  local load out
  load="$(method_ckpt "$METHOD")"
  if [[ -n $ITER ]]; then
    is_uint "$ITER" || die "ITER must be an iteration number (got '$ITER')"
    load="$load/$(printf 'iter_%07d' "$((10#$ITER))")"
  fi
  out="$(export_dir "$METHOD")"
  if [[ -e $out ]] && ! is_dry; then
    done_already "$out exists: already exported (delete it to export again)"
  fi
  require_path "$load" "checkpoint of METHOD=$METHOD" "train it first"
  ARGS=(mcore-to-hf --load "$load" --output "$out" --model-config "$MODEL_CONFIG" --tokenizer-model "$HF_MODEL"
    --rope-theta "$ROPE_THETA" --max-position-embeddings "$MAX_POSITION_EMBEDDINGS" "$@")
}

# 05: the paper's protocol (REDI.md "Evaluation protocol"): 5 benchmarks, n=16, T=0.6, top_p=0.95, 32768 tokens.
eval_args() {
  check_method "$METHOD"
  local model
  model="$(export_dir "$METHOD")"
  require_path "$model" "exported model of METHOD=$METHOD" "run 04_export_hf first"
  ARGS=(--model "$model" --benchmarks "$EVAL_BENCHMARKS"
    --output-dir "$WORK_DIR/eval/${model##*/}" --n 16 --temperature 0.6 --top-p 0.95 --max-tokens 32768
    --grader rllm --grader-audit --tensor-parallel-size "${EVAL_TP:-1}" "$@")
}
