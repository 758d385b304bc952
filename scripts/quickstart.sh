#!/usr/bin/env bash
# The default demo, about 4 min on 2 CPU cores after the first run's package install; no data or weights are
# downloaded. A synthetic teacher's correct and incorrect column-arithmetic traces -> the dataset builder ->
# Stage 1 SFT -> Stage 2 REDI (alpha 0.8), 2 processes each -> HF export -> pass@1 on held-out problems before
# and after REDI, printed as a table, with the curves and pass@1 on one time axis in OUT/curves.png.
# Started again with the same OUT, it resumes.
# The full comparison (DPO, SimPO, symmetric REDI, REDI, 3 seeds, ~27 min): docs/TOY.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
PY="${REDI_VENV:-$ROOT/.venv}/bin/python"
exec "$PY" "$ROOT/tools/toy_reproduction.py" --quick --output "${1:-$ROOT/runs/quickstart}"
