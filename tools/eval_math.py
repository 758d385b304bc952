#!/usr/bin/env python
"""Evaluate a model on math benchmarks with the REDI paper's protocol (n = 16, T = 0.6, top_p = 0.95,
32768 new tokens, pass@1 = mean over samples, SEM over per-sample-index accuracies).

    python tools/eval_math.py --model HF_DIR --benchmarks math500,aime24,amc,minerva,olympiadbench \\
        --output-dir OUT
    python tools/eval_math.py --regrade OUT --grader rllm --grader-audit
    python tools/eval_math.py --grade-jsonl generations.jsonl --response-field response --answer-field answer

All logic lives in megatron_redi.evaluation; see ``--help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_redi.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
