# shellcheck shell=bash
# Qwen2.5-Math-1.5B: the paper's model (tied embeddings; 28 layers, 12 heads, 2 KV heads).
# Edit the two paths below (or export HF_MODEL / RAW_DATA), then run the stages in order; README.md.
# Sourced by every script in this folder.

: "${HF_MODEL:=/path/to/Qwen2.5-Math-1.5B}" # huggingface.co/Qwen/Qwen2.5-Math-1.5B, downloaded
: "${RAW_DATA:=/path/to/OpenR1-Math-Raw}"   # huggingface.co/datasets/open-r1/OpenR1-Math-Raw

RECIPE=qwen2.5_math_1.5b
MODEL_NAME=Qwen2.5-Math-1.5B
RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=examples/common.sh
source "$RECIPE_DIR/../common.sh"
recipe_paths

# Parallel layouts: use_layout TP PP CP RECOMPUTE (TP_SIZE / PP_SIZE / CP_SIZE / RECOMPUTE override them).
# 1.5B fits one GPU without tensor parallelism (2 KV heads allow at most TP2); what does not fit is the
# activations of one 32k-token sequence, so CP2 splits each sequence over two GPUs. On 8 GPUs: DP4.
sft_layout() { use_layout 1 1 2 0; }   # 32768-token SFT rows: 16k tokens per GPU
pair_layout() { use_layout 1 1 2 0; }  # a pair row is chosen + rejected, up to 2 x 19800 tokens
score_layout() { use_layout 1 1 1 0; } # forward only: no optimizer state, no stored activations: DP8
