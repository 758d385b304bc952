#!/usr/bin/env bash
# The one prepared GPU run for issue 13 (a lent device: no network, no TE, torch + transformers only).
# Run from the repo root with the megatron-core and liger-kernel wheels in .whl/ (carried; see
# docs/benchmarks/README.md). Writes JSON and logs under $OUT. The step timeouts add up to 470 s
# (< 8 min); a step that runs out leaves the others' results.
set -uo pipefail
OUT="${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python3 -c "import torch, transformers, megatron.core, liger_kernel; print('torch', torch.__version__,
'transformers', transformers.__version__, 'megatron-core', megatron.core.__version__)" 2>&1 | tee "$OUT/versions.txt"
B=(python3 tools/benchmark_train.py)
K=(--liger-kernels rms_norm swiglu)
# 0. correctness first: GPU-only kernels vs their references (Liger RMSNorm / SwiGLU, compiled norm, bf16
#    log-probs with the automatic chunk, fused vs unfused model). A failure here voids the numbers below.
timeout 70 python3 -m pytest -q -rs -p no:cacheprovider tests/gpu 2>&1 | tail -25 | tee "$OUT/tests.txt"
# 1. one pair of 4k-40k tokens: ours (Liger RMSNorm + SwiGLU, auto log-prob chunk) vs transformers and
#    transformers + Liger + fused AdamW (the paper's stack); same weights, first-step losses side by side
timeout 210 "${B[@]}" --seq-lengths 4096,8192,16384,32768,40960 --steps 2 --warmup 1 --mix-pairs 0 "${K[@]}" \
  --output "$OUT/train.json" 2>&1 | grep -v -i warn | tail -12 | tee "$OUT/train.txt"
# 2. ours without Liger (what the kernels are worth)
timeout 40 "${B[@]}" --seq-lengths 8192,16384 --steps 2 --warmup 1 --mix-pairs 0 --no-baseline \
  --output "$OUT/train_no_liger.json" 2>&1 | grep -v -i warn | tail -5 | tee "$OUT/train_no_liger.txt"
# 3. the 76 GiB target: a 40k-token pair with selective MLP recompute (peak in the JSON)
timeout 40 "${B[@]}" --seq-lengths 40960 --steps 1 --warmup 1 --mix-pairs 0 --no-baseline "${K[@]}" --recompute-modules mlp \
  --output "$OUT/train_40k_recompute_mlp.json" 2>&1 | grep -v -i warn | tail -4 | tee "$OUT/train_40k.txt"
# 4. the realistic mix: 12 pairs, traces 1k-19k (log-uniform, rejected longer 2/3), ours packed into
#    40,960-token micro-batches vs one padded pair per micro-batch; useful tokens/s
timeout 75 "${B[@]}" --seq-lengths "" --steps 1 --warmup 1 --mix-pairs 12 "${K[@]}" \
  --output "$OUT/train_mix.json" 2>&1 | grep -v -i warn | tail -6 | tee "$OUT/train_mix.txt"
# 5. where a step's time goes, at 8k
timeout 35 "${B[@]}" --seq-lengths 8192 --steps 1 --warmup 1 --mix-pairs 0 --no-baseline "${K[@]}" --profile \
  > "$OUT/profile_8k.txt" 2>&1
exit 0
