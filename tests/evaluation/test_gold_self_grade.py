"""Invariant: every bundled benchmark's gold, boxed as a response, is graded correct by both graders
(a gold no response can match makes its problem impossible: MATH-500's three "\\$" golds were)."""

import re

from eval_checks import WORKERS

from megatron_redi.evaluation.benchmarks import REGISTRY, load
from megatron_redi.grading.graders import GradeRequest
from megatron_redi.grading.pool import shared_pool

_DELIMITER = re.compile(r"(?<!\\)\$")  # an unescaped $ (a math delimiter in the gold's source)


def test_every_bundled_gold_grades_correct_against_itself():
    reqs, where = [], []
    for variants in REGISTRY.values():
        for spec in variants.values():
            for p in load(spec).problems:
                golds = p.answers if p.list_mode == "all" else p.answers[:1]
                # the gold as a model would box it: without math delimiters or a sentence's final period
                answer = ", ".join(_DELIMITER.sub(" ", a).strip().rstrip(".").strip() for a in golds)
                reqs.append(GradeRequest("The answer is $\\boxed{" + answer + "}$.", p.answers, p.list_mode,
                                         ("math_verify", "rllm")))
                where.append(f"{spec.key} {p.id}: {p.answers}")
    assert len(reqs) > 3000
    results = shared_pool(WORKERS).grade(reqs, timeout_s=30)
    bad = [f"{w} -> {[g for g, v in r.verdicts.items() if not v.correct]}" for w, r in zip(where, results)
           if not all(v.correct for v in r.verdicts.values())]
    assert not bad, "\n".join(bad)
