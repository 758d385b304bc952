#!/usr/bin/env bash
# The test command: sets up the environment if needed, then runs ruff and the whole suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
VENV="${REDI_VENV:-$ROOT/.venv}"
cd "$ROOT"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest -q -rs -n 2 --dist loadfile "$@"
