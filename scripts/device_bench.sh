#!/usr/bin/env bash
# The one prepared GPU run for issue 6 (a lent device: no network, no TE). Run from the repo root with
# the megatron-core wheel for the device's Python in .whl/ (carried; see docs/benchmarks/README.md).
# Writes JSON and logs under $OUT. Budget: ~7 min on an H100 for all four steps.
set -euo pipefail
OUT="${OUT:?set OUT to the folder that comes back}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$OUT/versions.txt"
# 1. throughput, MFU and memory, ours vs the transformers baseline, same weights and data
timeout 330 python3 tools/benchmark_train.py --seq-lengths 4096,8192,16384 --steps 3 --warmup 2 \
  --output "$OUT/train.json" 2>&1 | grep -v -i warn | tail -12 | tee "$OUT/train.txt" || true
# 2. the log-prob kernel alone vs full logits
timeout 120 python3 tools/benchmark_logprobs.py --device cuda --repeats 3 --output "$OUT/logprobs.json" \
  2>&1 | tail -5 | tee "$OUT/logprobs.txt" || true
# 3. where a step's time goes, at 8k
timeout 120 python3 tools/benchmark_train.py --seq-lengths 8192 --steps 1 --warmup 2 --no-baseline --profile \
  > "$OUT/profile_8k.txt" 2>&1 || true
# 4. the memory knob for longer traces: selective MLP recompute at 16k (what it costs in tokens/s)
timeout 90 python3 tools/benchmark_train.py --seq-lengths 16384 --steps 2 --warmup 1 --no-baseline \
  --recompute-modules mlp --output "$OUT/train_recompute_mlp.json" 2>&1 | tail -3 | tee "$OUT/train_recompute_mlp.txt" || true
