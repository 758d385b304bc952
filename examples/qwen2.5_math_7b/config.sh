# shellcheck shell=bash
# Qwen2.5-Math-7B (untied input/output embeddings; 28 layers, 28 heads, 4 KV heads, hidden 3584).
# Same recipe as the 1.5B model; only the model and the parallel layouts change. Edit the paths below (or
# export HF_MODEL / RAW_DATA). Sourced by every script in this folder.

: "${HF_MODEL:=/path/to/Qwen2.5-Math-7B}" # huggingface.co/Qwen/Qwen2.5-Math-7B, downloaded
: "${RAW_DATA:=/path/to/OpenR1-Math-Raw}" # huggingface.co/datasets/open-r1/OpenR1-Math-Raw

RECIPE=qwen2.5_math_7b
MODEL_NAME=Qwen2.5-Math-7B
RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=examples/common.sh
source "$RECIPE_DIR/../common.sh"
recipe_paths

# Parallel layouts by GPU count: use_layout TP PP CP RECOMPUTE (TP_SIZE / PP_SIZE / CP_SIZE / RECOMPUTE
# override them; other GPU counts need them). 4 KV heads allow TP 1, 2 or 4; TP stays inside a node.
#  8 GPUs (1 node):  TP2 x CP2 x DP2 with sequence parallelism and full activation recompute: bf16 weights
#                    + fp32 grads + distributed Adam state are ~45 GB per GPU at TP2/DP2, leaving too
#                    little for a 16k-token slice's activations without recompute.
# 16 GPUs (2 nodes): TP4 x CP2 x DP2: a model replica is one node (TP4 x CP2 over NVLink), only the
#                    data-parallel gradient reduction crosses nodes; ~23 GB of states, no recompute.
#                    Alternative on slow inter-node links with long rows: TP4 PP2 CP1 (PP_SIZE=2 CP_SIZE=1).
_layout_7b() {
  case $((NNODES * GPUS_PER_NODE)) in
  8) use_layout 2 1 2 1 ;;
  16) use_layout 4 1 2 0 ;;
  *)
    [[ -n ${TP_SIZE:-} && -n ${PP_SIZE:-} && -n ${CP_SIZE:-} ]] ||
      die "no 7B layout for $((NNODES * GPUS_PER_NODE)) GPUs (the recipe has 8 and 16): set TP_SIZE, PP_SIZE and CP_SIZE"
    use_layout "$TP_SIZE" "$PP_SIZE" "$CP_SIZE" "${RECOMPUTE:-1}"
    ;;
  esac
}
sft_layout() { _layout_7b; }
pair_layout() { _layout_7b; }
score_layout() { _layout_7b; }
