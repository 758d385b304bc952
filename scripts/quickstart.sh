#!/usr/bin/env bash
# The embedded default job: Stage 1 SFT then Stage 2 REDI on CPU, 2 processes, no downloads.
# A tiny random Qwen2-shaped model, the bundled local tokenizer and the bundled synthetic sample of
# paired math traces. Stage 1 runs tensor-parallel (TP2), Stage 2 pipeline-parallel (PP2) from the
# Stage 1 checkpoint (resharded by dist_checkpointing). Prints the loss curves and writes a PNG.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
PY="${REDI_VENV:-$ROOT/.venv}/bin/python"
OUT="${1:-$ROOT/runs/quickstart}"
ASSETS="$ROOT/megatron_redi/assets"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
rm -rf "$OUT"; mkdir -p "$OUT"
cd "$ROOT"
COMMON=(--model-config "$ASSETS/tiny_qwen2" --tokenizer-model "$ASSETS/tiny_qwen2" --seq-length 1024
        --micro-batch-size 2 --seed 42 --log-interval 2)

echo "== Stage 1: SFT on positive traces (TP2)"
"$PY" -m torch.distributed.run --nproc-per-node 2 --master-port "${MASTER_PORT:-29531}" pretrain_redi.py \
  "${COMMON[@]}" --loss-type sft --data-path "$ASSETS/sample/sft.jsonl" --global-batch-size 16 \
  --train-epochs 3 --lr 2e-3 --lr-warmup-fraction 0.1 --tensor-model-parallel-size 2 \
  --save "$OUT/sft" --metrics-file "$OUT/sft.jsonl"

echo "== Stage 2: REDI (alpha 0.8) on (correct, incorrect) pairs from the Stage 1 model (PP2)"
"$PY" -m torch.distributed.run --nproc-per-node 2 --master-port "${MASTER_PORT:-29531}" pretrain_redi.py \
  "${COMMON[@]}" --loss-type redi --redi-alpha 0.8 --data-path "$ASSETS/sample/pairs.jsonl" \
  --global-batch-size 16 --train-epochs 1 --lr 2e-4 --pipeline-model-parallel-size 2 \
  --pretrained-checkpoint "$OUT/sft" --save "$OUT/redi" --metrics-file "$OUT/redi.jsonl"

"$PY" tools/plot_metrics.py "$OUT/sft.jsonl" "$OUT/redi.jsonl" --stages --output "$OUT/curves.png"
