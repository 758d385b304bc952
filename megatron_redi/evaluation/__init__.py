"""Math benchmark evaluation (pass@1 over n samples, the REDI paper's protocol).

Standalone: imports nothing from megatron or the rest of megatron_redi but ``megatron_redi.grading``,
and torch / transformers / vLLM only when a model is actually run. Entry point: ``tools/eval_math.py`` (``cli.main``).
"""
