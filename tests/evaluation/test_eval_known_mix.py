"""The whole eval path (CLI -> generation -> grading -> summary) on a scripted generator whose answers
are a known mix of right, wrong, unanswered and truncated samples; every summary number is derived by
hand below, not recomputed with the package's own functions."""

import json

import pytest
from eval_checks import WORKERS, read_jsonl

from megatron_redi.evaluation import runner
from megatron_redi.evaluation.backends import Generation, derive_seed
from megatron_redi.evaluation.benchmarks import load, resolve
from megatron_redi.evaluation.cli import main

N, MAX_TOKENS, SEED = 4, 64, 0
# per problem, per sample: R right, W wrong (answered), N no answer, T truncated (no answer, hit the limit)
SCRIPT = ["RRRR", "RWNT", "WWNN", "WRWT"]
TOKENS = {"R": 10, "W": 20, "N": 30, "T": MAX_TOKENS}


class ScriptedBackend:
    def __init__(self, golds_by_seed: dict[int, tuple[int, str]]):
        self.golds_by_seed = golds_by_seed

    def describe(self) -> dict:
        return {"name": "scripted"}

    def generate(self, requests, sampling, progress=None):
        out = []
        for req in requests:
            p, gold = self.golds_by_seed[req.seed]
            row = []
            for kind in SCRIPT[p][: sampling.n]:
                text = {"R": f"so the answer is \\boxed{{{gold}}}", "W": "so the answer is \\boxed{987654321}",
                        "N": "I am not sure.", "T": "Let me keep thinking about this for a"}[kind]
                row.append(Generation(text, TOKENS[kind], "length" if kind == "T" else "stop"))
            out.append(row)
            if progress:
                progress(sampling.n)
        return out

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def summary(tiny_model, tmp_path_factory):
    problems = load(resolve("math500"), limit=len(SCRIPT)).problems
    golds = {derive_seed(SEED, "math500", p.index): (i, p.answers[0]) for i, p in enumerate(problems)}
    out = tmp_path_factory.mktemp("mix") / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(runner, "create_backend", lambda *a, **k: ScriptedBackend(golds))
    try:
        assert main(["--model", str(tiny_model), "--output-dir", str(out), "--benchmarks", "math500",
                     "--limit", str(len(SCRIPT)), "--n", str(N), "--max-tokens", str(MAX_TOKENS),
                     "--grading-workers", str(WORKERS), "--no-progress", "--backend", "hf", "--device", "cpu",
                     "--seed", str(SEED)]) == 0
    finally:
        mp.undo()
    return out, json.loads((out / "summary.json").read_text())["benchmarks"]["math500"]


def test_records_follow_the_script(summary):
    out, _ = summary
    recs = sorted(read_jsonl(out / "samples" / "math500.jsonl"), key=lambda r: (r["problem_index"], r["sample_index"]))
    kinds = [SCRIPT[r["problem_index"]][r["sample_index"]] for r in recs]
    assert [r["correct"] for r in recs] == [k == "R" for k in kinds]
    assert [r["finish_reason"] == "length" for r in recs] == [k == "T" for k in kinds]
    assert [r["extracted_answer"] in (None, "") for r in recs] == [k in "NT" for k in kinds]


def test_summary_numbers_by_hand(summary):
    _, b = summary
    # correctness matrix: [1111], [1000], [0000], [0100] -> 6 of 16
    assert b["pass@1"] == pytest.approx(6 / 16)
    # per sample index: (2/4, 2/4, 1/4, 1/4), mean 3/8; population std 1/8; SEM = std / sqrt(4) = 1/16
    assert b["per_sample_index_accuracy"] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    assert b["std_per_sample_index"] == pytest.approx(0.125)
    assert b["sem"] == pytest.approx(0.0625)
    # pass@k = mean over problems of 1 - C(n-c, k) / C(n, k), c = 4, 1, 0, 1
    assert b["pass@k"]["1"] == pytest.approx(6 / 16)
    assert b["pass@k"]["2"] == pytest.approx((1 + (1 - 3 / 6) + 0 + (1 - 3 / 6)) / 4)  # 0.5
    assert b["pass@k"]["3"] == pytest.approx((1 + (1 - 1 / 4) + 0 + (1 - 1 / 4)) / 4)  # 0.625
    assert b["pass@k"]["4"] == pytest.approx(3 / 4)
    # 5 samples without an answer (N, T, N, N, T); 2 truncated
    assert b["no_answer_rate"] == pytest.approx(5 / 16)
    assert b["truncation_rate"] == pytest.approx(2 / 16)
    # response lengths: 6 right x 10 tokens; 5 wrong x 20, 3 unanswered x 30, 2 truncated x 64
    assert b["response_tokens_correct_mean"] == pytest.approx(10)
    assert b["response_tokens_incorrect_mean"] == pytest.approx((5 * 20 + 3 * 30 + 2 * 64) / 10)
    assert b["response_tokens"]["max"] == MAX_TOKENS and b["response_tokens"]["min"] == 10
    assert (b["num_problems"], b["num_samples"], b["grading_timeouts"], b["grading_errors"]) == (4, 16, 0, 0)
