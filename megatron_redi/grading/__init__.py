"""Answer grading shared by the evaluation tool and the dataset builder's re-verification.

Extraction of the final answer (:mod:`.extraction`), the math-verify and rllm-style graders
(:mod:`.graders`), the builder's per-problem integer verdicts (:mod:`.problem`), one SIGALRM time limit
(:mod:`.timeout`) and a process pool with hard per-item deadlines (:mod:`.pool`, workers started as
``python -m megatron_redi.grading._worker``). Imports nothing from megatron or the rest of megatron_redi.
"""
